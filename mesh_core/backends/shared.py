"""What every shared-store medium (SQLite, Redis) has in common, written once.

- ``Coalescer``: concurrent calls of one kind run as one batch;
- ``SharedStoreBackend``: the four coalesced hot paths (enqueue, complete, task states, memory publish) built
  from each medium's batch methods, the checks of move targets against ``mesh_core.tasks.TASK_MOVES``, and
  the edge where stored records become typed values;
- the corrupt-value convention: a stored value that fails to decode reads as ``{"__corrupt__": reason}``
  and is counted (``corrupt_values``); a record whose identity or state fails to decode, or has a field out
  of range, is quarantined: moved aside with its reason (each medium stores it and removes the original,
  so no loop reads it again), counted as ``quarantined_<kind>`` and logged once. Neither ever crashes a reader.

A medium only turns its storage format into a plain field mapping (``TASK_FIELDS``, ``FINISHED_FIELDS``);
``task_from_fields`` and ``finished_from_fields`` validate and type it, the same way for every medium.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .. import codec
from ..coalesce import Coalescer
from ..model import Attempt, NodeInfo, NodeRole, NodeType, Task, TaskPriority, TaskProgress, TaskStatus
from ..tasks import Move, check_target, move_of
from . import contracts
from .started import StartedTasks

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("mesh.backend")

CORRUPT = "__corrupt__"
# What a medium hands to ``task_from_fields``: the Task's own field names, raw stored values.
TASK_FIELDS = (
    "task_id", "task_type", "payload", "priority", "status", "node_id", "node_name", "attempt", "failures",
    "max_retries", "timeout_s", "preferred", "required", "context", "submitter_id", "why", "submitted_at",
    "started_at", "finished_at", "lease_expires", "not_before", "result", "error", "signature",
    "progress", "progress_message",
)
FINISHED_FIELDS = ("task_id", "status", "attempt", "node_id", "node_name", "finished_at", "result", "error")
NODE_FIELDS = ("node_id", "name", "node_type", "role", "host", "port", "pid", "incarnation", "capabilities",
               "task_types", "capacity", "running", "queued", "metrics", "started_at", "last_seen", "left",
               "signature")
MAX_STORED_INT = 2 ** 53  # counters, ports, attempts: anything larger is garbage, not a count
MAX_NAME_BYTES = 1024  # ids, names, hosts, types, signatures, capabilities: anything longer is garbage, not a name
MAX_LIST_BYTES = 64 * 1024  # a stored list of names (capabilities, task types) as JSON text
MAX_TEXT_CHARS = 16 * 1024  # an error or a routing reason is read cut to this: a medium may hold any size
QUARANTINE_KEPT = 10_000  # records kept aside per medium (the oldest go first)
# What a quarantined record keeps of its raw value and its reason: a medium may hold values of any size.
QUARANTINE_RAW_BYTES = 4096
REASON_CHARS = 300
DECODE_ERRORS = (KeyError, TypeError, ValueError, OverflowError, AttributeError, RecursionError)
_NODE_TYPES = {t.value: t for t in NodeType}
STATUSES: dict[Any, TaskStatus] = {**{s.value: s for s in TaskStatus},
                                            **{s.value.encode(): s for s in TaskStatus}}


class CorruptRecord(ValueError):
    """A stored record whose identity or state cannot be read, or has a field out of range; the reader
    quarantines it (or skips and counts it) and goes on."""


# Where a medium finds a record again to move it aside (a row id, a key …); what it is depends on the medium.
Aside = tuple[contracts.Quarantined, Any]


# One memory entry on its way to the log: origin, memory type, key, frame, whether to wake every node.
MemoryEntry = tuple[str, str, str, bytes, bool]


class SharedStoreBackend(contracts.Backend):
    """A medium every node reads and writes (SQLite file, Redis server): the parts they share."""

    # A lone submitter's enqueue runs in its own task (``Coalescer`` ``inline``), where the medium gains by it:
    # Redis (idle p50 -12 %, one-by-one submits +10 %/s). Not on every coalescer: it cost 3-12 % of tasks/s at 256
    # and 1,024 waiters; not on SQLite's enqueue: a burst split in two sends more wake-up datagrams than a node's
    # socket holds (tests/backends/test_started_at_enqueue.py).
    INLINE_ENQUEUE = False

    def __init__(self, limits: codec.CodecLimits) -> None:
        super().__init__()
        self.limits = limits
        self.corrupt_values = 0
        self.refused_records = 0
        self._aside: list[Aside] = []
        self._aside_lock = threading.Lock()  # SQLite decodes on its own threads
        self._enqueue = Coalescer(self._enqueue_batch, inline=self.INLINE_ENQUEUE)
        self._complete = Coalescer(self._complete_batch)
        self._states = Coalescer(self._states_batch)
        self._publish = Coalescer(self._publish_batch)
        self._started = StartedTasks()  # tasks the medium started for this node at enqueue, come in wake-ups
        self._started_handler: contracts.StartedHandler | None = None  # the worker's (``on_started``)

    # -- tasks started at enqueue (``StartedTasks``) -----------------------------------------
    def _deliver(self, topic: str) -> None:
        if topic == contracts.Topic.TASKS:
            self._started.inbox_news = True  # the inbox may hold work: the next claim reads the medium
        super()._deliver(topic)

    def on_started(self, handler: contracts.StartedHandler) -> None:
        self._started_handler = handler

    def take_started(self) -> list[Task]:
        return self._started.take_fresh()

    def _started_arrived(self, tasks: Sequence[tuple[Task, float | None]]) -> None:
        """Tasks started for this node at enqueue, come in a wake-up, each with its age on the medium's clock:
        taken by the worker at once when it has room (``on_started``), else by the claim loop, woken for them (the
        inbox has no news)."""
        self._started.arrived(tasks)
        if self._started_handler is None or not self._started_handler():
            super()._deliver(contracts.Topic.TASKS)

    # -- the coalesced hot paths: each medium writes one batch method per kind -------------
    @abc.abstractmethod
    async def _enqueue_batch(self, items: list[contracts.Assignment]) -> list[contracts.Enqueued]: ...

    @abc.abstractmethod
    async def _complete_batch(self, items: list[contracts.Completion]) -> list[bool]: ...

    @abc.abstractmethod
    async def _states_batch(self, ids: list[str]) -> list[TaskStatus | None]: ...

    @abc.abstractmethod
    async def _publish_batch(self, items: list[MemoryEntry]) -> list[Any]:
        """Append the entries in one write; one cursor per entry. Wakes every node if any entry asks."""

    @abc.abstractmethod
    async def _move_batch(self, moves: Sequence[contracts.Reassignment]) -> list[bool]: ...

    async def enqueue(self, assignments: Sequence[contracts.Assignment]) -> list[contracts.Enqueued]:
        # Concurrent callers share one write; its targets are woken once per batch.
        return await self._enqueue(assignments)

    async def complete(self, completions: Sequence[contracts.Completion]) -> list[bool]:
        for c in completions:
            check_target(Move.COMPLETE, c.status)
        return await self._complete(completions)

    async def move(self, moves: Sequence[contracts.Reassignment]) -> list[bool]:
        for m in moves:
            kind = move_of(m.node_id, m.final_status)
            if kind is not Move.REROUTE:
                check_target(kind, m.final_status)
        return await self._move_batch(moves) if moves else []

    async def task_states(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        ids = list(task_ids)
        states = await self._states(ids)
        return {i: s for i, s in zip(ids, states, strict=True) if s is not None}

    async def publish_memory(self, origin: str, entries: Sequence[tuple[str, str, bytes]],
                             broadcast: bool = True) -> Any:
        cursors = await self._publish([(origin, mt, key, frame, broadcast) for mt, key, frame in entries])
        return cursors[-1] if cursors else None

    # -- the edge: stored values into typed ones ---------------------------------------------
    def stored_value(self, frame: bytes | None) -> Any:
        """A stored codec frame decoded; ``{"__corrupt__": reason}`` (counted) when it does not decode."""
        if not frame:
            return None
        try:
            return codec.decode(frame, self.limits)
        except (codec.CodecError, ValueError, TypeError) as exc:
            return self._corrupt(exc)

    def _unpacked(self, blob: Any) -> Any:
        try:
            return codec.unpack(blob)
        except (codec.CodecError, ValueError, TypeError) as exc:
            return self._corrupt(exc)

    def _corrupt(self, exc: Exception) -> dict[str, str]:
        self.corrupt_values += 1
        return {CORRUPT: shortened(str(exc)) or type(exc).__name__}

    def refuse(self, what: str, exc: Exception) -> None:
        """Count and log a stored record that was skipped because it cannot be read."""
        self.refused_records += 1
        log.warning("%s refused: %s", what, shortened(str(exc)))

    # -- quarantine ----------------------------------------------------------------------------
    def set_aside(self, kind: str, key: Any, raw: Any, reason: str, where: Any) -> None:
        """Queue a record that cannot be read to be moved aside; ``where`` tells the medium how to find it.

        The medium stores it and removes the original (``take_aside``), then counts it (``counted``).
        """
        with self._aside_lock:
            self._aside.append((contracts.Quarantined(kind, shortened(_key_text(key)), shortened(reason), time.time(),
                                                      raw_bytes(raw)), where))

    def take_aside(self) -> list[Aside]:
        """The records queued to be moved aside since the last call."""
        with self._aside_lock:
            taken, self._aside = self._aside, []
        return taken

    def counted(self, records: Iterable[contracts.Quarantined]) -> None:
        """Count and log records that were just moved aside (each is moved, so logged, once)."""
        for q in records:
            self.counted_kind(q.kind, f"{q.key}: {q.reason}")

    def counted_kind(self, kind: str, detail: str) -> None:
        self.refused_records += 1
        self.found_problem(f"quarantined_{kind}", f"moved aside: {detail}")

    def task_from_fields(self, f: Mapping[str, Any]) -> Task:
        """One stored task (``TASK_FIELDS`` → raw values) as a Task; raises CorruptRecord if its state is unreadable.

        Values may be text or bytes (Redis), numbers or None (SQLite). ``payload`` and ``result`` are codec
        frames, ``context`` a dict or a packed one, ``preferred`` and ``required`` lists or JSON text.
        """
        try:
            context = f["context"]
            if isinstance(context, bytes | bytearray):
                context = self._unpacked(context)
            if context is not None and not isinstance(context, dict):
                raise TypeError(f"context is a {type(context).__name__}, not a map")
            task_id = _text_or_none(f["task_id"])
            if not task_id:
                raise ValueError("no task id")
            frame, corrupt = f["payload"], self.corrupt_values
            payload = self.stored_value(frame)
            return Task(
                task_id=task_id, task_type=_text(f["task_type"]), payload=payload,
                # the frame it was read from, checked and decoded: storing or copying the task again reuses it
                payload_frame=frame if type(frame) is bytes and frame and self.corrupt_values == corrupt else None,
                priority=TaskPriority(_int(f["priority"])), status=STATUSES[f["status"]],
                node_id=_text_or_none(f["node_id"]), node_name=_text_or_none(f["node_name"]),
                attempt=_int(f["attempt"] or 1, 1), failures=_int(f["failures"] or 0),
                max_retries=_int(f["max_retries"] or 0), timeout_s=_float_or_none(f["timeout_s"]),
                preferred_node_types=tuple(_NODE_TYPES[p] for p in _names(f["preferred"]) if p in _NODE_TYPES),
                required_capabilities=frozenset(_names(f["required"])), context=context or {},
                submitter_id=_text_or_none(f["submitter_id"]), why=_free_text(f["why"]) or "",
                submitted_at=_float_or_none(f["submitted_at"]) or 0.0, started_at=_float_or_none(f["started_at"]),
                finished_at=_float_or_none(f["finished_at"]), lease_expires=_float_or_none(f["lease_expires"]),
                not_before=_float_or_none(f["not_before"]) or 0.0, result=self.stored_value(f["result"]),
                error=_free_text(f["error"]), signature=_text_or_none(f["signature"]) or "",
                **self._progress_fields(task_id, f.get("progress"), f.get("progress_message")))
        except DECODE_ERRORS as exc:
            raise CorruptRecord(f"task {f.get('task_id')!r}: {type(exc).__name__} {exc}") from None

    def _progress_fields(self, task_id: str, fraction: Any, message: Any) -> dict[str, Any]:
        """A stored progress report as Task fields; one that fails ``TaskProgress.checked`` is counted
        (``corrupt_values``) and read as none: progress is a hint, never a reason to set a task aside."""
        if fraction is None or fraction == "" or fraction == b"":
            return {}
        try:
            if isinstance(message, bytes):
                message = message.decode()
            progress = TaskProgress.checked(_float_or_none(fraction), message)
        except (*DECODE_ERRORS, UnicodeDecodeError) as exc:
            self.corrupt_values += 1
            log.warning("task %s: stored progress ignored: %s", task_id, shortened(str(exc)))
            return {}
        return {"progress": progress.fraction, "progress_message": progress.message or None}

    def finished_from_fields(self, f: Mapping[str, Any], complete: bool = True) -> contracts.Finished:
        """One result-feed entry (``FINISHED_FIELDS`` → raw values); raises CorruptRecord if it cannot be read.

        ``complete`` False: the feed did not carry the result, the waiter reads the task.
        """
        try:
            return contracts.Finished(_text(f["task_id"]), STATUSES[f["status"]], _int(f["attempt"], 1),
                            _text_or_none(f["node_id"]), _text_or_none(f["node_name"]),
                            _float_or_none(f["finished_at"]), self.stored_value(f["result"]) if complete else None,
                            _free_text(f["error"]), complete)
        except DECODE_ERRORS as exc:
            raise CorruptRecord(f"result feed entry: {type(exc).__name__} {exc}") from None

    def node_from_fields(self, f: Mapping[str, Any]) -> NodeInfo:
        """See ``node_from_fields`` (module level: the gRPC medium, which stores nothing, reads records too)."""
        return node_from_fields(f)

    def readable(self, what: str, records: Iterable[T], decode: Callable[[T], R],
                 aside: Callable[[T], tuple[str, Any, Any]] | None = None) -> list[R]:
        """Each record decoded; one that cannot be read is skipped and, with ``aside`` (record → kind, key,
        where the medium finds it), queued to be quarantined, otherwise counted (the reader goes on)."""
        out = []
        for record in records:
            try:
                out.append(decode(record))
            except CorruptRecord as exc:
                if aside is None:
                    self.refuse(what, exc)
                else:
                    kind, key, where = aside(record)
                    self.set_aside(kind, key, record, str(exc), where)
        return out

    def frame_checked(self, frame: Any) -> bytes:
        """A stored memory frame whose type, header and checksum are right; raises CorruptRecord otherwise."""
        try:
            codec.verify(frame, self.limits)
        except codec.CodecError as exc:
            raise CorruptRecord(f"memory frame: {exc}") from None
        return bytes(frame)

    def started_counts(self) -> dict[str, int]:
        """What became of the tasks the medium started for this node at enqueue (``StartedTasks``)."""
        return self._started.describe()

    def describe(self) -> dict[str, Any]:
        quarantined = {k: v for k, v in self.counters.items() if k.startswith("quarantined_")}
        return {"backend": self.name, "corrupt_values": self.corrupt_values, "refused_records": self.refused_records,
                **quarantined}


def node_from_fields(f: Mapping[str, Any]) -> NodeInfo:
    """One stored node record (``NODE_FIELDS`` → raw values) as a NodeInfo; raises CorruptRecord if a field
    is unreadable or out of range. An unknown node type reads as general (a newer release's type)."""
    try:
        node_id = _text_or_none(f["node_id"])
        if not node_id:
            raise ValueError("no node id")
        metrics = f["metrics"]
        if isinstance(metrics, str | bytes):
            metrics = json.loads(metrics) if metrics else {}
        if metrics is not None and not isinstance(metrics, dict):
            raise TypeError(f"metrics is a {type(metrics).__name__}, not a map")
        last_seen = _float_or_none(f["last_seen"])
        if last_seen is None:
            raise ValueError("no last_seen")
        return NodeInfo(
            node_id=node_id, name=_text(f["name"]),
            node_type=_NODE_TYPES.get(_text(f["node_type"]), NodeType.GENERAL), role=NodeRole(_text(f["role"])),
            host=_text_or_none(f["host"]) or "", port=_int(f["port"] or 0), pid=_int(f["pid"] or 0),
            incarnation=_int(f["incarnation"]), capabilities=frozenset(_names(f["capabilities"])),
            task_types=frozenset(_names(f["task_types"])), capacity=_int(f["capacity"]),
            running=_int(f["running"] or 0), queued=_int(f["queued"] or 0), metrics=metrics or {},
            started_at=_float_or_none(f["started_at"]) or 0.0, last_seen=last_seen, left=bool(_int(f["left"] or 0)),
            signature=_text_or_none(f["signature"]) or "", heartbeat_seq=_int(f.get("heartbeat_seq") or 0))
    except DECODE_ERRORS as exc:
        raise CorruptRecord(f"node {f.get('node_id')!r}: {type(exc).__name__} {exc}") from None


# Membership that follows changes (see ``contracts.MembershipMedium.snapshot``).
# A record whose only change is its load gauges bumps the mesh's membership version at most this often (the
# depths routing reads are news at once).
GAUGE_SECONDS = 30.0
# A reader re-reads every record this often anyway (records written behind the mesh's back are found).
FULL_READ_SECONDS = 60.0
# Metrics that change without being news: every reader sees them at most ``GAUGE_SECONDS`` late.
GAUGE_METRICS = frozenset({"cpu_percent", "memory_mb", "counters", "tasks_done", "tasks_failed", "error_rate",
                           "avg_response_ms", "affinity", "memory_items"})


LOAD_BANDS = 10  # a node's load is news when it moves to another tenth of its capacity (or from idle to busy)


def load_band(node: NodeInfo) -> int:
    """Which band of ``LOAD_BANDS`` the node's load is in; -1 when it holds nothing."""
    held = node.running + node.queued
    return -1 if held <= 0 else min(LOAD_BANDS, int(node.load * LOAD_BANDS))


def news_of(node: NodeInfo) -> str:
    """A digest of what in ``node``'s record is news to every reader: all but its stamp and its load gauges
    (running, queued, ``GAUGE_METRICS``), of which only the load's band is news: an idle mesh reads nothing,
    and a cockpit sees a node get busy or free up at the next read, not ``GAUGE_SECONDS`` later."""
    metrics = {k: v for k, v in node.metrics.items() if k not in GAUGE_METRICS}
    text = json.dumps([node.name, node.node_type.value, node.role.value, node.host, node.port, node.pid,
                       node.incarnation, sorted(node.capabilities), sorted(node.task_types), node.capacity,
                       node.started_at, node.left, node.signature, metrics, load_band(node)],
                      sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class FollowedNodes:
    """A reader's copy of the node records, kept up to date by following the medium's membership version.

    ``records``: each node's record as last read (its stamp is filled in per snapshot by ``nodes``); ``raw``: the
    stored form it was decoded from (an unchanged one is not decoded again); ``left``: leave marks (the
    incarnation that left); ``depths``: tasks held per node as its last heartbeat counted them.
    """

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.version = 0
        self.records: dict[str, NodeInfo] = {}
        self.raw: dict[str, Any] = {}
        self.left: dict[str, int] = {}
        self.depths: dict[str, int] = {}
        self.full_at = -math.inf
        self.recount = False  # the medium holds another number of records than this copy: read everything

    def due_full(self) -> bool:
        return self.epoch is None or self.recount or time.monotonic() - self.full_at >= FULL_READ_SECONDS

    def reset(self, epoch: str, version: int) -> None:
        self.epoch, self.version, self.recount, self.full_at = epoch, version, False, time.monotonic()
        self.records.clear()
        self.raw.clear()
        self.left.clear()
        self.depths.clear()

    def drop(self, node_id: str) -> None:
        for table in (self.records, self.raw, self.left, self.depths):
            table.pop(node_id, None)

    def nodes(self, now: float, stamps: Mapping[str, tuple[float, int]]) -> list[NodeInfo]:
        """Every record with its stamp: ``stamps`` (node id → last seen, heartbeat sequence) where read, else
        ``now`` (a heartbeat fresher than the window: not read) and the sequence last read; leave marks applied."""
        out = []
        for node_id, record in self.records.items():
            node = object.__new__(NodeInfo)  # a shallow copy, without copy.copy's generic path: once per node per read
            node.__dict__.update(record.__dict__)
            if node_id in stamps:
                node.last_seen, node.heartbeat_seq = stamps[node_id]
            else:
                node.last_seen = now
            mark = self.left.get(node_id)
            node.left = record.left or (mark is not None and mark >= record.incarnation)
            out.append(node)
        return out


def attempts_from_rows(rows: Iterable[Sequence[Any]]) -> list[Attempt]:
    """Attempts from ``(attempt, node_id, node_name, started_at, finished_at, error)`` rows (text or bytes);
    a row that cannot be read is left out (the task itself still reads)."""
    out = []
    for r in rows:
        try:
            out.append(Attempt(attempt=_int(r[0], 1), node_id=_text(r[1] or ""), node_name=_text(r[2] or ""),
                               started_at=_float_or_none(r[3]) or None, finished_at=_float_or_none(r[4]) or None,
                               error=_text_or_none(r[5])))
        except DECODE_ERRORS + (IndexError,):
            log.debug("attempt record left out: %r", r)
    return out


def with_current_attempt(recorded: Iterable[Attempt], task: Task) -> list[Attempt]:
    """The attempts on record plus the task's current one, which the task's own fields hold: a medium records an
    attempt apart only when it ends other than by success, or the task moves on from it. A record of the current
    attempt that lacks its end (made by an earlier release) takes it from the task."""
    out = {a.attempt: a for a in recorded}
    if task.started_at:
        final = task.status.is_final
        end = task.finished_at if final else None
        error = task.error if final and task.status is not TaskStatus.SUCCEEDED else None
        had = out.get(task.attempt)
        if had is None:
            out[task.attempt] = Attempt(task.attempt, task.node_id or "", task.node_name or "", task.started_at, end,
                                        error)
        elif had.finished_at is None and end is not None:
            out[task.attempt] = Attempt(had.attempt, had.node_id, had.node_name, had.started_at, end,
                                        had.error or error)
    return [out[k] for k in sorted(out)]


def runs_of_bytes(things: Sequence[T], size: Callable[[T], int], limit: int) -> list[list[T]]:
    """``things`` in order, in runs of about ``limit`` bytes (``size`` each; a run holds at least one)."""
    runs: list[list[T]] = []
    total = 0
    for thing in things:
        if not runs or total + size(thing) > limit:
            runs.append([])
            total = 0
        runs[-1].append(thing)
        total += size(thing)
    return runs


def shortened(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was: a reason or key read from a medium
    may carry a value of any size."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def raw_bytes(record: Any, limit: int = QUARANTINE_RAW_BYTES) -> bytes:
    """A stored record as bytes for the quarantine, at most ``limit`` of them: itself if it is bytes, else its
    msgpack (its repr if even that fails), each field cut to ``limit``, so what was stored can be looked at later
    and a huge field costs no more than a small one."""
    if isinstance(record, bytes | bytearray | memoryview):
        return bytes(record[:limit])
    if isinstance(record, Mapping | tuple | list):
        record = _fields_cut(record, limit)
    if isinstance(record, Mapping):
        record = dict(record)
    elif isinstance(record, tuple):
        record = list(record)
    try:
        return codec.pack(record)[:limit]
    except codec.CodecError:
        return repr(record).encode(errors="replace")[:limit]


def _fields_cut(record: Any, limit: int) -> Any:
    def cut(value: Any) -> Any:
        return value[:limit] if isinstance(value, str | bytes | bytearray) else value
    if isinstance(record, Mapping):
        return {cut(k): cut(v) for k, v in record.items()}
    return [cut(v) for v in record]


def _shown(value: Any) -> str:
    """A stored value's repr for a message, cut short (it may be of any size)."""
    return shortened(repr(value[:80]) if isinstance(value, str | bytes) else repr(value), 100)


def _key_text(key: Any) -> str:
    return key.decode(errors="replace") if isinstance(key, bytes) else str(key)


def _int(value: Any, low: int = 0) -> int:
    """A stored whole number in ``[low, MAX_STORED_INT]``; ValueError/TypeError otherwise (a bool is no number)."""
    kind = type(value)
    if not (kind is int or (kind is bytes and 0 < len(value) <= 20)):  # what SQLite and Redis store needs no check
        if isinstance(value, bool) or value is None:
            raise TypeError(f"{_shown(value)} is not a whole number")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{_shown(value)} is not a whole number")
        if isinstance(value, str | bytes) and len(value) > 40:  # no number is this long; int() would echo it whole
            raise ValueError(f"{_shown(value)} is not a whole number")
    number = int(value)
    if not low <= number <= MAX_STORED_INT:
        raise ValueError(f"{number} is out of range")
    return number


def _text(value: Any) -> str:
    """A stored id, name or type as text; ValueError when it is longer than any name (``MAX_NAME_BYTES``)."""
    if type(value) is bytes and len(value) <= MAX_NAME_BYTES:
        return value.decode(errors="replace")
    if isinstance(value, str | bytes) and len(value) > MAX_NAME_BYTES:
        raise ValueError(f"a name of {len(value)} characters (over {MAX_NAME_BYTES})")
    if type(value) is str:
        return value
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _text_or_none(value: Any) -> str | None:
    if type(value) is str and len(value) <= MAX_NAME_BYTES:
        return value or None
    return None if value is None or value == b"" else _text(value)


def _free_text(value: Any) -> str | None:
    """A stored error or reason as text, cut to ``MAX_TEXT_CHARS`` (a long one is still a readable record)."""
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, bytes):
        return value[:MAX_TEXT_CHARS].decode(errors="replace")
    return str(value)[:MAX_TEXT_CHARS]


def _float_or_none(value: Any) -> float | None:
    kind = type(value)
    if not (kind is float or (kind is bytes and 0 < len(value) <= 40)):  # what SQLite and Redis store needs no check
        if value is None or value == "" or value == b"":
            return None
        if isinstance(value, bool):
            raise TypeError(f"{_shown(value)} is not a number")
        if isinstance(value, str | bytes) and len(value) > 40:  # no number is this long; float() would echo it whole
            raise ValueError(f"{_shown(value)} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{_shown(value)} is not a finite number")
    return number


def _names(value: Any) -> list[str]:
    if not value or value == "[]" or value == b"[]":  # the common case, without a JSON parse
        return []
    if isinstance(value, str | bytes):
        if len(value) > MAX_LIST_BYTES:
            raise ValueError(f"a list of names of {len(value)} bytes (over {MAX_LIST_BYTES})")
        value = json.loads(value)
    if not isinstance(value, list | tuple):
        raise TypeError(f"a list of names, not a {type(value).__name__}")
    return [_text(v) for v in value]
