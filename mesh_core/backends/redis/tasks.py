"""The Redis backend's task transport: every fenced transition is one script (see ``scripts``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack

from ... import codec
from ...model import Attempt, Task, TaskProgress, TaskStatus
from ..contracts import Assignment, Completion, Enqueued, Finished, Reassignment, Topic
from ..shared import CORRUPT, STATUSES, CorruptRecord, attempts_from_rows, with_current_attempt
from .client import RedisClient, _s
from .lean import stream_reply

INDEXED_STATES = {"pending", "failed", "dead_letter", "cancelled"}  # as INDEXED in the scripts
LIST_SCAN = 100_000  # newest tasks looked through when listing succeeded ones


class RedisTasks(RedisClient):
    """Task hashes, inboxes, leases and result feeds (the TaskTransport half of ``RedisBackend``)."""

    blocking_results = True

    async def _enqueue_batch(self, assignments: list[Assignment]) -> list[Enqueued]:
        args: list[Any] = []
        for a in assignments:
            t = a.task
            spec = codec.pack({"type": t.task_type, "payload": t.encoded_payload(self.limits),
                               "max_retries": t.max_retries, "timeout": t.timeout_s,
                               "preferred": [p.value for p in t.preferred_node_types],
                               "required": sorted(t.required_capabilities), "context": t.context})
            args.append(_lua_pack([t.task_id, a.node_id or "", a.node_name or "", str(a.capacity),
                                    str(int(t.priority)), repr(float(a.delay)), a.why, spec,
                                    t.submitter_id or "", repr(float(t.submitted_at)),
                                    t.context.get("parent_id") or "", t.signature]))
        caller = self._local.node_id if self._local else ""
        return [Enqueued(x) for x in await self._script("ENQUEUE", caller, *args)]  # the script wakes the targets

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # node → (seconds until its earliest held-back task is due, monotonic time of the claim that said so)
        self._due: dict[str, tuple[float, float] | None] = {}
        self._server_time: tuple[float, float] | None = None  # Redis TIME at the last claim, monotonic time then

    def _started_here(self, packed: bytes) -> None:
        try:
            flat = msgpack.unpackb(packed, raw=True)
            if not isinstance(flat, list) or len(flat) % 2 or not all(
                    isinstance(flat[i], bytes) and isinstance(flat[i + 1], list) and not len(flat[i + 1]) % 2
                    and all(isinstance(v, bytes) for v in flat[i + 1]) for i in range(0, len(flat), 2)):
                raise ValueError("not a list of task ids and their fields")
        except (ValueError, msgpack.UnpackException) as exc:
            # Their leases were granted all the same: the next claim hands them on (CLAIM, after GRANT_LOST).
            self.refuse("started-task wake-up", exc)
            return
        tasks = self.readable("task hash", ((_s(flat[i]), _pairs(flat[i + 1])) for i in range(0, len(flat), 2)),
                              lambda r: self._task(*r), aside=lambda r: ("task", r[0], ("task", r[0])))
        clock = self._server_time
        now = clock[0] + time.monotonic() - clock[1] if clock else None  # this server's clock, as of now
        self._started_arrived([(t, now - t.started_at if now is not None and t.started_at else None) for t in tasks])

    async def claim(self, node_id: str, limit: int, lease_seconds: float) -> list[Task]:
        self._started.lease = lease_seconds
        tasks, room = self._started.take(limit)
        if room:
            answered = self._started.answers()
            raw = await self._script("CLAIM", node_id, room, lease_seconds, *(t for t, _ in answered))
            self._started.told(answered)
            self._due[node_id] = (float(_s(raw[0])), time.monotonic()) if raw[0] else None
            self._server_time = (float(_s(raw[2])), time.monotonic())
            again = {_s(raw[i]) for i in range(3, min(len(raw), 3 + 2 * int(raw[1])), 2)}  # they come first
            tasks += self._started.handed_on(self.readable(
                "task hash", ((_s(raw[i]), _pairs(raw[i + 1])) for i in range(3, len(raw), 2)),
                lambda r: self._task(*r), aside=lambda r: ("task", r[0], ("task", r[0]))), again)
        await self._settle_aside()
        return tasks

    async def next_due(self, node_id: str) -> float | None:
        # The claim script says when the next held-back task is due: no round trip of its own. A retry placed
        # here later wakes this node, whose next claim brings the new answer.
        due = self._due.get(node_id)
        return None if due is None else max(0.0, due[0] - (time.monotonic() - due[1]))

    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float,
                    progress: Mapping[str, TaskProgress] | None = None) -> set[str]:
        if not held:
            return set()
        reports = progress or {}
        args: list[Any] = [node_id, lease_seconds]
        for task_id, attempt in held:
            report = reports.get(task_id)
            args += [task_id, attempt, repr(report.fraction) if report else "", report.message if report else ""]
        return {_s(i) for i in await self._script("RENEW", *args)}

    async def _complete_batch(self, completions: list[Completion]) -> list[bool]:
        args: list[Any] = []
        for c in completions:
            args.append(_lua_pack([c.task_id, str(c.attempt), c.node_id, c.status.value, c.result_frame or b"",
                                    c.error or ""]))
        raw = await self._script("COMPLETE", *args)  # the script wakes each submitter
        return [x is not None and x is not False for x in raw]

    async def _move_batch(self, moves: Sequence[Reassignment]) -> list[bool]:
        args: list[Any] = []
        for m in moves:
            args += [m.task_id, m.expected_attempt, m.expected_node or "", m.node_id or "", m.node_name or "", m.why,
                     m.delay, int(m.bump_attempt), m.error or "", int(m.count_failure), m.final_status.value]
        raw = await self._script("REASSIGN", *args)
        await self._wake((_s(r[2]) for r in raw if r[0]), Topic.TASKS)
        await self._wake((_s(r[1]) for r in raw if r[0]), Topic.RESULTS)
        return [bool(r[0]) for r in raw]

    async def stranded(self, dead_nodes: Iterable[str], now: float) -> list[Task]:
        raw = await self._script("STRANDED", now, *sorted(set(dead_nodes)))
        ids = [_s(i) for i in raw[1]]
        return await self.get_tasks(ids, with_attempts=False) if ids else []

    async def cancel(self, task_ids: Sequence[str]) -> list[str]:
        raw = await self._script("CANCEL", *task_ids)
        await self._wake((_s(r[1]) for r in raw), Topic.CANCEL)
        await self._wake((_s(r[2]) for r in raw), Topic.RESULTS)
        return [_s(r[0]) for r in raw]

    async def cancel_requests(self, node_id: str) -> list[tuple[str, int]]:
        assert self._client is not None
        ids = [_s(i) for i in await self._call(self._client.smembers(self._key("held:", node_id)))]
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self._key("t:", task_id), "cancel", "attempt", "status")
        rows = await self._call(pipe.execute(raise_on_error=False))
        return [(task_id, int(r[1])) for task_id, r in zip(ids, rows, strict=True)
                if isinstance(r, list) and r[0] == b"1" and r[2] == b"running" and (r[1] or b"").isdigit()]

    async def replay(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        ok = bool(await self._script("REPLAY", task_id, node_id or "", node_name or "", why))
        if ok and node_id:
            await self._wake([node_id], Topic.TASKS)
        return ok

    async def finished_for(self, submitter_id: str, after: Any, wait: float = 0.0) -> tuple[list[Finished], Any]:
        assert self._client is not None
        feed = self._key("fin:", submitter_id)
        if after is None:
            last = await self._call(self._client.xrevrange(feed, count=1))
            return [], (_s(last[0][0]) if last else "0-0")
        block = int(wait * 1000) if wait > 0 else None
        reads = self._reads
        if reads is not None:
            ask = (b"XREAD", b"COUNT", 10_000, *((b"BLOCK", block) if block is not None else ()), b"STREAMS", feed,
                   after)
            answer = stream_reply(await self._call(reads.call(*ask, blocks=wait)))
        else:
            answer = await self._call(self._client.xread({feed: after}, count=10_000, block=block))
        rows = answer[0][1] if answer else []
        if not rows:
            return [], after
        found = self.readable("result feed entry", rows, lambda r: self._finished(r[1]),
                              aside=lambda r: ("task", _s(r[1].get(b"id", b"?")), [("xdel", feed, r[0])]))
        await self._settle_aside()
        return found, _s(rows[-1][0])

    def _finished(self, f: dict[bytes, bytes]) -> Finished:
        g = f.get
        return self.finished_from_fields(
            {"task_id": g(b"id"), "status": g(b"st"), "attempt": g(b"att"), "node_id": g(b"node"),
             "node_name": g(b"nn"), "finished_at": g(b"fin"), "result": g(b"res"), "error": g(b"err")},
            complete=g(b"full") == b"1")

    async def prune(self, tasks_kept: int, dead_letters_kept: int, limit: int = 5000) -> int:
        return int(await self._script("PRUNE", tasks_kept, dead_letters_kept, limit))

    async def _states_batch(self, ids: list[str]) -> list[TaskStatus | None]:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self._key("t:", task_id), "status")
        rows = await self._call(pipe.execute(raise_on_error=False))
        return [STATUSES.get(st) if isinstance(st, bytes) else None for st in rows]  # unreadable reads as missing

    async def get_tasks(self, task_ids: Sequence[str], with_attempts: bool | None = None) -> list[Task]:
        assert self._client is not None
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return []
        attempts = len(ids) <= 50 if with_attempts is None else with_attempts
        pipe = self._client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self._key("t:", task_id))
            if attempts:
                pipe.hgetall(self._key("a:", task_id))
        rows = await self._call(pipe.execute(raise_on_error=False))
        step = 2 if attempts else 1
        out = []
        for n, task_id in enumerate(ids):
            fields = rows[n * step]
            try:
                if isinstance(fields, Exception):  # a key of the wrong type where the task's hash belongs
                    raise CorruptRecord(f"task {task_id!r}: {fields}")
                if not fields or b"status" not in fields:
                    continue
                task = self._task(task_id, fields)
            except CorruptRecord as exc:
                self.set_aside("task", task_id, b"", str(exc), ("task", task_id))
                continue
            if attempts:
                past = rows[n * step + 1]
                task.attempts = _attempts(past if isinstance(past, dict) else {}, task)
            out.append(task)
        await self._settle_aside()
        return out

    def _task(self, task_id: str, raw: dict[bytes, bytes]) -> Task:
        # The spec holds what never changes after submission; a corrupt one still shows the task (type "?"),
        # so its worker fails it and it ends in dead letter instead of circling.
        spec = self._unpacked(raw.get(b"spec"))
        if not isinstance(spec, dict):
            spec = self._corrupt(TypeError("task spec is not a map"))
        g = raw.get
        task = self.task_from_fields({
            "task_id": task_id, "task_type": spec.get("type", "?"), "payload": spec.get("payload"),
            "priority": g(b"prio") or 1, "status": g(b"status"), "node_id": g(b"node"), "node_name": g(b"node_name"),
            "attempt": g(b"attempt"), "failures": g(b"failures"), "max_retries": spec.get("max_retries", 0),
            "timeout_s": spec.get("timeout"), "preferred": spec.get("preferred"), "required": spec.get("required"),
            "context": spec.get("context"), "submitter_id": g(b"submitter"), "why": g(b"why"),
            "submitted_at": g(b"submitted"), "started_at": g(b"started"), "finished_at": g(b"finished"),
            "lease_expires": g(b"lease"), "not_before": g(b"not_before"), "result": g(b"result"),
            "error": g(b"error"), "signature": g(b"sig"), "progress": g(b"progress"),
            "progress_message": g(b"progress_msg")})
        if CORRUPT in spec:
            task.payload = spec
        return task

    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100, *,
                         parent_id: str | None = None) -> list[Task]:
        assert self._client is not None
        if parent_id is not None:
            ids = sorted(_s(i) for i in await self._call(self._client.smembers(self._key("ch:", parent_id))))
            tasks = await self.get_tasks(ids, with_attempts=False)
            return sorted(tasks, key=lambda t: t.submitted_at)[:limit]
        if status is None:
            ids = [_s(i) for i in await self._call(self._client.lrange(self._key("tasks"), 0, limit - 1))]
            return await self.get_tasks(ids, with_attempts=False)
        if status.value in INDEXED_STATES:
            index = self._key("st:", status.value)
            ids = [_s(i) for i in await self._call(self._client.zrevrange(index, 0, limit - 1))]
            return await self.get_tasks(ids, with_attempts=False)
        # assigned and running come from the inboxes and the lease set, succeeded from the newest tasks
        ids = [_s(i) for i in await self._script("LIST", status.value, limit, LIST_SCAN)]
        tasks = await self.get_tasks(ids, with_attempts=False)
        return sorted(tasks, key=lambda t: -t.submitted_at)[:limit]

    async def task_counts(self) -> dict[str, int]:
        assert self._client is not None
        counts = await self._call(self._client.hgetall(self._key("counts")))
        return {_s(k): int(v) for k, v in counts.items() if v.lstrip(b"-").isdigit() and int(v) > 0}


def _lua_pack(values: list[Any]) -> bytes:
    """One script argument per record; Redis's Lua cmsgpack reads strings, not msgpack's bin type."""
    return msgpack.packb(values, use_bin_type=False)


def _pairs(flat: list[Any]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _attempts(raw: dict[bytes, bytes], task: Task) -> list[Attempt]:
    """Recorded attempts (those that ended other than by success) plus the task's current one."""
    rows = []
    for attempt, blob in raw.items():
        try:
            rows.append((int(attempt), *codec.unpack(blob)))
        except (codec.CodecError, ValueError, TypeError):
            continue  # an unreadable record of a past attempt: the task itself still reads
    return with_current_attempt(attempts_from_rows(r for r in rows if len(r) == 6), task)
