"""Task lifecycle (pure): the allowed task moves, retries with backoff, dead letters, re-routing of stranded work.

The manager asks these functions what to do and hands the answer to the
backend as fenced operations; nothing here performs I/O. ``TASK_MOVES`` is the
one statement of which move may start from which status: the SQLite backend
builds its ``status IN (...)`` checks from it and the Redis backend's Lua
scripts read it as a generated table, so the two media cannot disagree.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .model import Task, TaskStatus

_S = TaskStatus


class Move(enum.StrEnum):
    """Every kind of fenced task move a backend applies."""

    CLAIM = "claim"  # a worker starts an assigned task
    COMPLETE = "complete"  # the holder records how its attempt ended
    REROUTE = "reroute"  # to a node (re-route, retry with backoff, or routing a pending task)
    REQUEUE = "requeue"  # back to the mesh-wide pending list (no node can take it now)
    FINAL = "final"  # ends in dead_letter or failed (retries spent or refused)
    CANCEL_QUEUED = "cancel_queued"  # a cancel of a task that has not started ends it at once
    CANCEL_REQUEST = "cancel_request"  # a cancel of a running task asks its holder to stop
    CANCELLED = "cancelled"  # a move of a task whose cancel was asked ends it cancelled instead
    REPLAY = "replay"  # a finished, unsuccessful task goes round again


@dataclass(frozen=True)
class MoveRule:
    """The statuses a move may start from and those it may lead to."""

    sources: frozenset[TaskStatus]
    targets: frozenset[TaskStatus]

    def allows(self, source: TaskStatus) -> bool:
        return source in self.sources


def further_along(a: Task, b: Task) -> Task:
    """Of two records of one task (the answers of two nodes), the one further along: a task only moves forward,
    to a later attempt and, within one, to a final status; a copy a node kept from before is never newer."""
    return b if (b.attempt, b.status.is_final) > (a.attempt, a.status.is_final) else a


def _rule(sources: Collection[TaskStatus], targets: Collection[TaskStatus]) -> MoveRule:
    return MoveRule(frozenset(sources), frozenset(targets))


# Decisions worth a line each:
# - FINAL only from assigned or running: a pending task has no attempt that could have failed; it leaves the
#   pending list by routing or by cancel, never to dead letter.
# - REQUEUE only from assigned or running: the manager sends back to pending only work a node held.
# - CANCELLED starts from running only, as CANCEL_REQUEST is the only way a task gets its cancel mark; it counts
#   no failure (the task ends because someone asked, not because it failed).
TASK_MOVES: Mapping[Move, MoveRule] = {
    Move.CLAIM: _rule({_S.ASSIGNED}, {_S.RUNNING}),
    Move.COMPLETE: _rule({_S.RUNNING}, {_S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
    Move.REROUTE: _rule({_S.PENDING, _S.ASSIGNED, _S.RUNNING}, {_S.ASSIGNED}),
    Move.REQUEUE: _rule({_S.ASSIGNED, _S.RUNNING}, {_S.PENDING}),
    Move.FINAL: _rule({_S.ASSIGNED, _S.RUNNING}, {_S.DEAD_LETTER, _S.FAILED}),
    Move.CANCEL_QUEUED: _rule({_S.PENDING, _S.ASSIGNED}, {_S.CANCELLED}),
    Move.CANCEL_REQUEST: _rule({_S.RUNNING}, {_S.RUNNING}),
    Move.CANCELLED: _rule({_S.RUNNING}, {_S.CANCELLED}),
    Move.REPLAY: _rule({_S.DEAD_LETTER, _S.FAILED, _S.CANCELLED}, {_S.ASSIGNED, _S.PENDING}),
}


def move_of(node_id: str | None, final_status: TaskStatus) -> Move:
    """Which move a fenced reassignment is (before any cancel mark is considered)."""
    if node_id:
        return Move.REROUTE
    return Move.REQUEUE if final_status is TaskStatus.PENDING else Move.FINAL


def check_target(move: Move, target: TaskStatus) -> None:
    """Raise ValueError when ``move`` can never lead to ``target`` (a caller's mistake, not a stale state)."""
    if target not in TASK_MOVES[move].targets:
        allowed = ", ".join(sorted(TASK_MOVES[move].targets))
        raise ValueError(f"a {move.value} move leads to {allowed}, not {target.value}")


def sql_sources(move: Move) -> str:
    """The move's source statuses as an SQL list: ``'assigned','running'``."""
    return ",".join(f"'{s.value}'" for s in sorted(TASK_MOVES[move].sources))


def lua_moves(*moves: Move) -> str:
    """A Lua table literal ``FROM`` (move → set of source statuses) for a Redis script that applies ``moves``.

    Only the moves the script applies: the table is built on every call of the script (the hot ones run per task).
    """
    rows = ", ".join(f"{m.value}={{{', '.join(f'{s.value}=true' for s in sorted(TASK_MOVES[m].sources))}}}"
                     for m in moves)
    return f"local FROM = {{{rows}}}\n"


@dataclass(frozen=True)
class RetryPolicy:
    enabled: bool = True
    max_retries: int = 3
    base_seconds: float = 0.2
    max_seconds: float = 30.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base·2^(n-1))]."""
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** max(0, failures - 1)))
        return (rng or random).uniform(0, ceiling) if ceiling > 0 else 0.0


@dataclass(frozen=True)
class Retry:
    delay: float  # seconds from now, on the medium's clock
    failures: int


@dataclass(frozen=True)
class DeadLetter:
    failures: int
    reason: str


def after_failure(task: Task, policy: RetryPolicy, rng: random.Random | None = None) -> Retry | DeadLetter:
    """What happens to ``task`` whose current attempt just failed."""
    failures = task.failures + 1
    allowed = task.max_retries if task.max_retries >= 0 else policy.max_retries
    if not policy.enabled:
        return DeadLetter(failures, "retries are disabled")
    if failures > allowed:
        return DeadLetter(failures, f"failed {failures} time(s), over max_task_retries={allowed}")
    return Retry(policy.delay(failures, rng), failures)


@dataclass(frozen=True)
class Stranded:
    """A task whose holder is gone or whose lease lapsed; ``started`` means bump the fencing token."""

    task: Task
    reason: str
    started: bool


def classify_stranded(tasks: Collection[Task], node_status: Mapping[str, str], now: float) -> list[Stranded]:
    """Which of ``tasks`` must move now, and why. ``node_status`` maps node id → judged status."""
    out = []
    for task in tasks:
        if task.status not in (TaskStatus.ASSIGNED, TaskStatus.RUNNING):
            continue
        status = node_status.get(task.node_id or "", "dead")
        started = task.status is TaskStatus.RUNNING
        if status in ("dead", "left"):
            out.append(Stranded(task, f"node {status}", started))
        elif started and task.lease_expires is not None and task.lease_expires < now:
            out.append(Stranded(task, "lease lapsed", True))
    return out
