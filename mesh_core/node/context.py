"""What one node's services share: config, identity, the medium, events, wake-ups, counters, health.

Each service (membership, tasks, memory) holds this context and the one
contract of the medium it needs; none of them reaches into another's state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from .. import codec
from ..backends.contracts import (
    TOPIC_CANCEL,
    TOPIC_MEMBERS,
    TOPIC_MEMORY,
    TOPIC_RESULTS,
    TOPIC_TASKS,
    Backend,
)
from ..config import MeshConfig
from ..errors import MeshError
from ..events import BackendStatus, Event, EventBus, Problem
from ..handlers import HandlerRegistry
from ..identity import Identity
from ..model import NodeRole
from ..nodes import NodeProfile
from ..supervision import LoopHealth, RestartPolicy, one_line
from ..waits import wait_event

log = logging.getLogger("mesh")

LoopFactory = Callable[[], Coroutine[Any, Any, None]]


# Not a medium's topic: this node's own record changed in what others route by (a loop down or back), so the
# heartbeat publishes it now rather than at its next beat.
TOPIC_RECORD = "record"


@dataclass(frozen=True)
class Timings:
    """Every period derived from ``node_timeout_seconds``, each named for what it bounds."""

    dead_after_s: float
    # A running task's lease lapses when its holder would be judged dead anyway: one re-route rule, not two.
    task_lease_s: float
    # The master_slave primary's lease: a primary that stops renewing is replaced when it would be judged dead.
    primary_lease_s: float
    # A writer waits for a primary through one failover: the old lease lapses (1×), a node takes it on its next
    # heartbeat, and the new primary is seen alive (1× more); 3× leaves a round of margin.
    primary_wait_s: float
    # A forwarded write waits for a failover (3×) and then for the write to run on the new primary, which may
    # itself retry once through another failover (3×).
    forwarded_write_wait_s: float

    @classmethod
    def of(cls, config: MeshConfig) -> Timings:
        t = config.node_timeout_seconds
        return cls(dead_after_s=t, task_lease_s=t, primary_lease_s=t, primary_wait_s=3 * t,
                   forwarded_write_wait_s=6 * t)


class NodeContext:
    """One node's shared plumbing. Services get it at construction; the manager owns its lifecycle."""

    def __init__(self, config: MeshConfig, role: NodeRole, backend: Backend | None) -> None:
        self.config = config
        self.role = role
        self.timings = Timings.of(config)
        self.events = EventBus()
        self.handlers = HandlerRegistry()
        self.counters: Counter[str] = Counter()
        self.limits = codec.CodecLimits(
            max_frame_bytes=config.max_frame_bytes,
            compress_threshold=config.memory_sync.compression_threshold_bytes,
            compression_enabled=config.memory_sync.compression_enabled)
        self.rng = random.Random()
        self.identity: Identity | None = None
        self.profile: NodeProfile | None = None
        self.started_at = 0.0
        self.enabled = False
        self.healthy = True
        self.cut_off = False  # no heartbeat reached the medium for suspect_after: degraded, claims nothing new
        self.closing = False
        self._backend: Backend | None = None
        self.backend_reason = ""
        if backend is not None:
            self.use_backend(backend, "given by the caller")
        self._wake = {t: asyncio.Event() for t in (TOPIC_TASKS, TOPIC_RESULTS, TOPIC_MEMBERS, TOPIC_MEMORY,
                                                    TOPIC_CANCEL, TOPIC_RECORD)}
        self._loops: list[asyncio.Task[None]] = []
        self._loop_health: dict[str, LoopHealth] = {}
        self.restart_policy = RestartPolicy()

    # -- identity ----------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.identity.node_id if self.identity else ""

    @property
    def name(self) -> str:
        return self.identity.name if self.identity else ""

    @property
    def is_worker(self) -> bool:
        return self.role is NodeRole.WORKER

    # -- the medium ------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise MeshError("the mesh manager is not started", hint="await mesh.start() first")
        return self._backend

    @property
    def has_backend(self) -> bool:
        return self._backend is not None

    def use_backend(self, backend: Backend, reason: str) -> None:
        """Take ``backend`` as this node's medium; its wake-ups reach this node's loops, its problems its counters."""
        self._backend, self.backend_reason = backend, reason
        backend.on_signal(self.on_signal)
        backend.report_to(self.problem)

    def backend_ok(self, ok: bool, detail: str = "") -> None:
        """Record the medium's health; a change is published once, not per call. Cut off stays degraded."""
        if ok and self.cut_off:
            return
        if ok != self.healthy:
            self.healthy = ok
            self.publish(BackendStatus(backend=self.backend.name, healthy=ok, detail=detail))

    # -- events and counters -----------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        self.events.publish(event)

    def publish_many(self, events: Sequence[Event]) -> None:
        self.events.publish_many(events)

    def problem(self, counter: str, detail: str) -> None:
        """Count a problem, log it, and tell subscribers."""
        self.counters[counter] += 1
        log.warning("%s: %s", counter, detail)
        self.publish(Problem(counter=counter, detail=detail))

    # -- wake-ups ------------------------------------------------------------------------------------
    def on_signal(self, topic: str) -> None:
        event = self._wake.get(topic)
        if event is not None:
            event.set()

    def wake(self, topic: str) -> None:
        self._wake[topic].set()

    async def wait_wake(self, topic: str, timeout: float) -> None:
        """Until a wake-up on ``topic`` or ``timeout`` seconds, whichever comes first."""
        event = self._wake[topic]
        await wait_event(event, timeout)  # not wait_for: on 3.11 it can swallow a cancel that races a wake-up
        event.clear()

    # -- loops -----------------------------------------------------------------------------------------
    @property
    def loops(self) -> list[asyncio.Task[None]]:
        """The node's long-running loops, each named after what it does (``claim``, ``memory`` …).

        Each is its supervisor's task: cancelling one stops that loop for good (a stop, not a failure).
        """
        return list(self._loops)

    @property
    def loops_ok(self) -> bool:
        """False while any loop is down after a failure (restarting or dead): the node is degraded."""
        return not any(h.down for h in self._loop_health.values())

    def loop_health(self) -> list[LoopHealth]:
        """Every supervised loop's health record, in the order they were started."""
        return list(self._loop_health.values())

    def loop_metrics(self) -> dict[str, Any]:
        """What the heartbeat adds about this node's loops: those down after a failure (restarts are counters)."""
        down = [h.name for h in self._loop_health.values() if h.down]
        return {"loops_down": down} if down else {}

    def spawn(self, *named: tuple[str, LoopFactory]) -> None:
        """Run each ``(name, factory)`` under the supervisor: a loop that fails or returns is restarted."""
        for name, factory in named:
            self._loop_health[name] = LoopHealth(name, since=time.time())
            self._loops.append(asyncio.get_running_loop().create_task(self._supervise(name, factory), name=name))

    async def _supervise(self, name: str, factory: LoopFactory) -> None:
        health = self._loop_health[name]
        policy = self.restart_policy
        failures = 0
        try:
            while True:
                started = time.monotonic()
                error: Exception | None = None
                try:
                    await factory()
                except Exception as exc:  # anything but cancellation: the loop is restarted, never lost
                    error = exc
                if self.closing:
                    return
                failures = policy.failures_in_row(failures, time.monotonic() - started)
                delay = policy.delay(failures, self.rng)
                self._loop_failed(health, error, failures, delay)
                await asyncio.sleep(delay)
                health.running(time.time())
                self.wake(TOPIC_RECORD)  # readers route to it again as soon as its record says the loop is back
                if self.loops_ok:
                    log.info("loop %s restarted; every loop is running", name)
        finally:
            health.stopped(time.time())

    def _loop_failed(self, health: LoopHealth, error: Exception | None, failures: int, delay: float) -> None:
        line = one_line(error)
        first = health.failed(line, failures, self.restart_policy.state_after(failures), time.time())
        self.counters["loop_restarts"] += 1
        self.counters[f"loop_restarts_{health.name}"] += 1
        detail = f"{health.name} loop failed ({line}); restart {health.restarts} in {delay:.2f}s"
        # The traceback once per distinct error: a loop failing the same way every few seconds logs one line each.
        log.error("%s", detail, exc_info=error if first and error is not None else None)
        self.publish(Problem(counter="loop_restarts", detail=detail))
        self.wake(TOPIC_RECORD)  # the record says at once that the loop is down

    async def stop_loops(self) -> None:
        self.closing = True
        for loop_task in self._loops:
            loop_task.cancel()
        for loop_task in self._loops:
            try:
                await loop_task
            except (asyncio.CancelledError, Exception):  # a loop's own error was reported where it happened
                pass
        self._loops.clear()
