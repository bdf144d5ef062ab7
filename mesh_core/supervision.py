"""Loop supervision (pure): when a failed loop restarts, and what its health record says.

The asyncio part lives in ``node/context.py``; this module holds no I/O and no clock of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


class LoopState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # it failed and waits for its backoff before it runs again
    DEAD = "dead"  # it failed ``dead_after`` times in a row without staying up; still retried at the cap
    STOPPED = "stopped"  # cancelled on purpose (the node is closing, or a test stopped it): not a fault


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff with jitter for restarting a failed loop."""

    base_s: float = 0.1
    cap_s: float = 5.0
    # A loop that ran this long before failing counts as recovered: its next restart starts from ``base_s``.
    settle_s: float = 10.0
    dead_after: int = 5

    def failures_in_row(self, previous: int, ran_for_s: float) -> int:
        """Consecutive failures counting this one (reset when the loop had run ``settle_s``)."""
        return 1 if ran_for_s >= self.settle_s else previous + 1

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds before restart number ``failures`` in a row: uniform in [c/2, c], c = min(cap, base·2^(n-1)).

        Half the ceiling is kept so a loop that fails at once can never spin; the other half spreads restarts.
        """
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, failures - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)

    def state_after(self, failures: int) -> LoopState:
        """How a loop that just failed ``failures`` times in a row is shown while it waits."""
        return LoopState.DEAD if failures >= self.dead_after else LoopState.RESTARTING


def one_line(exc: BaseException | None, limit: int = 200) -> str:
    """An error as one short line: ``ValueError: bad value`` (``returned`` when a loop just ended)."""
    if exc is None:
        return "the loop returned"
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class LoopHealth:
    """One supervised loop as ``mesh.loops()`` reports it."""

    name: str
    since: float  # wall-clock time of the last state change
    state: LoopState = LoopState.RUNNING
    restarts: int = 0
    failures_in_row: int = 0
    last_error: str = ""
    _last_traceback_of: str = field(default="", repr=False)

    @property
    def down(self) -> bool:
        """True while the loop is not doing its work because it failed (the node is degraded)."""
        return self.state in (LoopState.RESTARTING, LoopState.DEAD)

    def failed(self, error: str, failures: int, state: LoopState, now: float) -> bool:
        """Record a failure; True when this error differs from the last one (log its traceback once)."""
        new = error != self._last_traceback_of
        self._last_traceback_of = error
        self.restarts += 1
        self.failures_in_row = failures
        self.last_error = error
        self._move(state, now)
        return new

    def running(self, now: float) -> None:
        self._move(LoopState.RUNNING, now)

    def stopped(self, now: float) -> None:
        self._move(LoopState.STOPPED, now)

    def _move(self, state: LoopState, now: float) -> None:
        if state is not self.state:
            self.state, self.since = state, now

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state.value, "restarts": self.restarts,
                "last_error": self.last_error, "since": self.since}
