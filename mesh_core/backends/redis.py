"""``redis_distributed``: machines on a network join one mesh through a Redis server.

Layout under one prefix ``mesh:{cluster}:`` (the braces are a Cluster hash tag):
node records, Redis-clock heartbeat times and leave marks in hashes; each task
a hash; per-node inboxes as sorted sets scored by priority then arrival (one
ZRANGE gives strict priority with FIFO inside it), a delayed set for retry
backoff, a held set and a lease sorted set for running work; a mesh-wide
pending set; per-status sorted sets for listing and counting; a result feed
stream per submitter; the memory log as a stream with a per-key hash of each
origin's latest frame for catch-up. Every task transition is one Lua script
that checks the fencing token (task, attempt, holder), so a stale actor can
never record a result. Wake-ups go over pub/sub; the periodic polls remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from .. import codec
from ..config import RedisConfig
from ..errors import BackendError, BackendUnavailable, ConfigError
from ..memory.digest import bucket_of
from ..model import Attempt, NodeInfo, NodeRole, NodeType, Task, TaskStatus
from ..security import without_password
from . import redis_scripts as lua
from .contracts import Assignment, Completion, Finished, MeshSnapshot, Reassignment, Topic
from .shared import CORRUPT, CorruptRecord, MemoryEntry, SharedStoreBackend, attempts_from_rows

log = logging.getLogger("mesh.redis")
GHOST_SECONDS = 3600.0
INDEXED_STATES = {"pending", "failed", "dead_letter", "cancelled"}  # as INDEXED in the scripts
LIST_SCAN = 100_000  # newest tasks looked through when listing succeeded ones
ALL = "all"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBackend(SharedStoreBackend):
    name = "redis_distributed"
    blocking_results = True

    def __init__(self, cfg: RedisConfig, *, limits: codec.CodecLimits = codec.DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.cfg = cfg
        self.prefix = f"mesh:{{{cfg.cluster}}}:"
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._local: NodeInfo | None = None
        self._scripts: dict[str, Any] = {}
        self.reconnects = 0
        self._closing = False

    # -- plumbing ----------------------------------------------------------------
    def _where(self) -> str:
        # Shown in status and error lines: never with its password.
        return without_password(self.cfg.url) if self.cfg.url else f"redis://{self.cfg.host}:{self.cfg.port}/{self.cfg.db}"

    def _connect(self) -> aioredis.Redis:
        # A blocking pool makes a burst of concurrent calls wait for a connection instead of failing
        # with "Too many connections" (redis-py's default pool refuses past its limit).
        common: dict[str, Any] = {"socket_timeout": self.cfg.socket_timeout_seconds,
                                  "socket_connect_timeout": self.cfg.socket_timeout_seconds,
                                  "health_check_interval": 15, "username": self.cfg.username,
                                  "password": self.cfg.password, "max_connections": 64,
                                  "timeout": self.cfg.socket_timeout_seconds}
        if self.cfg.url:
            pool = aioredis.BlockingConnectionPool.from_url(self.cfg.url, **common)
        else:
            pool = aioredis.BlockingConnectionPool(host=self.cfg.host, port=self.cfg.port, db=self.cfg.db, **common)
        return aioredis.Redis(connection_pool=pool)

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except AuthenticationError as exc:
            raise ConfigError(f"config: Redis at {self._where()} refused the credentials: {exc}",
                              hint="check redis.username and redis.password") from None
        except ResponseError as exc:
            if "NOPERM" in str(exc) or "NOAUTH" in str(exc):
                raise ConfigError(f"config: Redis at {self._where()} denied access: {exc}",
                                  hint=f"the ACL user needs ~{self.prefix}* and &{self.prefix}*") from None
            raise BackendError(f"Redis error: {exc}") from None
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"Redis at {self._where()} is unreachable: {exc}") from None

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._call(self._scripts[name](args=[self.prefix, *args]))

    def _key(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    # -- lifecycle -----------------------------------------------------------------
    async def open(self, local: NodeInfo) -> None:
        self._local = local
        self._client = self._connect()
        await self._call(self._client.ping())
        for name in ("HEARTBEAT", "LEAVE", "SNAPSHOT", "ENQUEUE", "CLAIM", "RENEW", "COMPLETE", "REASSIGN",
                     "STRANDED", "CANCEL", "REPLAY", "HOLD_LEASE", "LIST", "PRUNE",
                     "COMPACT"):
            self._scripts[name] = self._client.register_script(getattr(lua, name))
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            # redis-py can swallow a cancel mid-read; the loop also checks the flag every half second.
            await asyncio.wait({self._listener}, timeout=1.5)
            self._listener = None
        if self._client is not None:
            await _close_quickly(self._client)
            self._client = None

    async def _listen(self) -> None:
        """Subscribe to this node's wake channel and the broadcast one; reconnect with backoff."""
        assert self._local is not None and self._client is not None
        channels = [self._key("wake:", self._local.node_id), self._key("wake:", ALL)]
        delay = 0.1
        while not self._closing:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                delay = 0.1
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if message and message.get("type") == "message":
                        self._deliver(_s(message["data"]))
            except asyncio.CancelledError:
                await _close_quickly(pubsub)
                raise
            except (RedisError, OSError):
                self.reconnects += 1
            await _close_quickly(pubsub)
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            for topic in Topic:
                self._deliver(topic)  # anything may have happened while we were away

    async def _wake(self, node_ids: Iterable[str | None], topic: str) -> None:
        assert self._client is not None
        own = self._local.node_id if self._local else None
        targets = {n for n in node_ids if n}
        if not targets:
            return
        pipe = self._client.pipeline(transaction=False)
        for node_id in targets:
            if node_id == own:
                self._deliver(topic)
            else:
                pipe.publish(self._key("wake:", node_id), topic)
        with contextlib.suppress(BackendError):
            await self._call(pipe.execute())

    async def _broadcast(self, topic: str) -> None:
        assert self._client is not None
        with contextlib.suppress(BackendError):
            await self._call(self._client.publish(self._key("wake:", ALL), topic))

    # -- membership --------------------------------------------------------------------
    async def heartbeat(self, node: NodeInfo) -> None:
        record = codec.pack({
            "name": node.name, "type": node.node_type.value, "role": node.role.value, "host": node.host,
            "port": node.port, "pid": node.pid, "inc": node.incarnation, "caps": sorted(node.capabilities),
            "types": sorted(node.task_types), "cap": node.capacity, "running": node.running, "queued": node.queued,
            "metrics": json.loads(json.dumps(node.metrics, default=str)), "started": node.started_at,
            "sig": node.signature})
        changed = await self._script("HEARTBEAT", node.node_id, node.incarnation, record)
        if changed:
            await self._broadcast(Topic.MEMBERS)

    async def leave(self, node: NodeInfo) -> None:
        await self._script("LEAVE", node.node_id, node.incarnation)
        await self._broadcast(Topic.MEMBERS)

    async def snapshot(self) -> MeshSnapshot:
        raw = await self._script("SNAPSHOT", GHOST_SECONDS)
        now = float(_s(raw[0]))
        records = {_s(raw[1][i]): raw[1][i + 1] for i in range(0, len(raw[1]), 2)}
        seen = {_s(raw[2][i]): float(_s(raw[2][i + 1])) for i in range(0, len(raw[2]), 2)}
        left = {_s(raw[3][i]): int(_s(raw[3][i + 1])) for i in range(0, len(raw[3]), 2)}
        depths = {_s(raw[4][i]): int(raw[4][i + 1]) for i in range(0, len(raw[4]), 2)}
        nodes = []
        for node_id, blob in records.items():
            if node_id not in seen:
                continue
            try:
                r = codec.unpack(blob)
                node_type = NodeType(r["type"]) if r["type"] in NodeType._value2member_map_ else NodeType.GENERAL
                nodes.append(NodeInfo(
                    node_id=node_id, name=r["name"], node_type=node_type, role=NodeRole(r["role"]), host=r["host"],
                    port=r["port"], pid=r["pid"], incarnation=r["inc"], capabilities=frozenset(r["caps"]),
                    task_types=frozenset(r["types"]), capacity=r["cap"], running=r["running"], queued=r["queued"],
                    metrics=r["metrics"] or {}, started_at=r["started"], last_seen=seen[node_id],
                    left=node_id in left and left[node_id] >= r["inc"], signature=r.get("sig") or ""))
            except (KeyError, TypeError, ValueError, codec.CodecError) as exc:
                self.refuse(f"node record {node_id}", exc)
        return MeshSnapshot(nodes, now, depths)

    # -- tasks ----------------------------------------------------------------------------
    async def _enqueue_batch(self, assignments: list[Assignment]) -> list[bool]:
        args: list[Any] = []
        for a in assignments:
            t = a.task
            spec = codec.pack({"type": t.task_type, "payload": t.encoded_payload(self.limits),
                               "max_retries": t.max_retries, "timeout": t.timeout_s,
                               "preferred": [p.value for p in t.preferred_node_types],
                               "required": sorted(t.required_capabilities), "context": t.context})
            args.append(_lua_pack([t.task_id, a.node_id or "", a.node_name or "", str(a.capacity),
                                    str(int(t.priority)), repr(float(t.not_before)), a.why, spec,
                                    t.submitter_id or "", repr(float(t.submitted_at)),
                                    t.context.get("parent_id") or "", t.signature]))
        return [bool(x) for x in await self._script("ENQUEUE", *args)]  # the script wakes the targets

    async def claim(self, node_id: str, limit: int, lease_seconds: float) -> list[Task]:
        raw = await self._script("CLAIM", node_id, limit, lease_seconds)
        return self.readable("task hash", ((_s(raw[i]), _pairs(raw[i + 1])) for i in range(0, len(raw), 2)),
                             lambda r: self._task(*r))

    async def next_due(self, node_id: str) -> float | None:
        assert self._client is not None
        head = await self._call(self._client.zrange(self._key("delayed:", node_id), 0, 0, withscores=True))
        return float(head[0][1]) if head else None

    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float) -> set[str]:
        if not held:
            return set()
        args: list[Any] = [node_id, lease_seconds]
        for task_id, attempt in held:
            args += [task_id, attempt]
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
                     m.not_before, int(m.bump_attempt), m.error or "", int(m.count_failure), m.final_status.value]
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
        rows = await self._call(pipe.execute())
        return [(task_id, int(r[1])) for task_id, r in zip(ids, rows, strict=True)
                if r[0] == b"1" and r[2] == b"running"]

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
        answer = await self._call(self._client.xread({feed: after}, count=10_000, block=block))
        rows = answer[0][1] if answer else []
        if not rows:
            return [], after
        return self.readable("result feed entry", (fields for _, fields in rows), self._finished), _s(rows[-1][0])

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
        rows = await self._call(pipe.execute())
        return [TaskStatus(_s(st)) if st else None for st in rows]

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
        rows = await self._call(pipe.execute())
        step = 2 if attempts else 1
        out = []
        for n, task_id in enumerate(ids):
            fields = rows[n * step]
            if not fields or b"status" not in fields:
                continue
            try:
                task = self._task(task_id, fields)
            except CorruptRecord as exc:
                self.refuse("task hash", exc)
                continue
            if attempts:
                task.attempts = _attempts(rows[n * step + 1], task)
            out.append(task)
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
            "error": g(b"error"), "signature": g(b"sig")})
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
        return {_s(k): int(v) for k, v in counts.items() if int(v) > 0}

    # -- memory ---------------------------------------------------------------------------
    async def wake(self, node_ids: Iterable[str], topic: str) -> None:
        await self._wake(node_ids, topic)

    async def _publish_batch(self, items: list[MemoryEntry]) -> list[str]:
        # One MULTI/EXEC for the batch, with the broadcast wake-up inside it.
        assert self._client is not None
        pipe = self._client.pipeline(transaction=True)
        for origin, memory_type, key, frame, _ in items:
            pipe.xadd(self._key("memlog"), {"o": origin, "t": memory_type, "k": key, "f": frame})
            pipe.hset(self._key("mk:", memory_type, "\0", key), origin, frame)
            pipe.sadd(self._key("mtypes:", key), memory_type)
            pipe.sadd(self._key("bk:", str(bucket_of(memory_type, key))), f"{memory_type}\0{key}")
        if any(broadcast for *_, broadcast in items):
            pipe.publish(self._key("wake:", ALL), Topic.MEMORY)
        results = await self._call(pipe.execute())
        return [_s(results[i * 4]) for i in range(len(items))]

    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        assert self._client is not None
        if cursor:
            await self._call(self._client.hset(self._key("acks"), node_id, cursor))

    async def memory_acks(self) -> dict[str, Any]:
        assert self._client is not None
        return {_s(k): _s(v) for k, v in (await self._call(self._client.hgetall(self._key("acks")))).items()}

    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        return _s(await self._script("HOLD_LEASE", name, holder, max(1, int(ttl * 1000))))

    async def put_digests(self, node_id: str, digests: dict[int, str]) -> None:
        assert self._client is not None
        await self._call(self._client.hset(self._key("digests"), node_id, json.dumps(digests)))

    async def peer_digests(self) -> dict[str, dict[int, str]]:
        assert self._client is not None
        out: dict[str, dict[int, str]] = {}
        for node_id, blob in (await self._call(self._client.hgetall(self._key("digests")))).items():
            try:
                out[_s(node_id)] = {int(b): str(d) for b, d in json.loads(blob).items()}
            except (ValueError, TypeError, AttributeError) as exc:
                self.refuse(f"digests of {_s(node_id)}", exc)
        return out

    async def memory_bucket(self, bucket: int) -> list[bytes]:
        assert self._client is not None
        members = await self._call(self._client.smembers(self._key("bk:", str(bucket))))
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            memory_type, _, key = _s(member).partition("\0")
            pipe.hvals(self._key("mk:", memory_type, "\0", key))
        frames: list[bytes] = []
        for values in await self._call(pipe.execute()):
            frames += values
        return frames

    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        def parse(stream_id: Any) -> tuple[int, int]:
            ms, _, seq = _s(stream_id or "0-0").partition("-")
            return int(ms), int(seq or 0)
        return parse(cursor) >= parse(target)

    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        assert self._client is not None
        start = f"({after}" if after else "-"
        rows = await self._call(self._client.xrange(self._key("memlog"), min=start, count=limit))
        if not rows:
            return [], after
        # An entry without a frame (garbage written by someone else) becomes an empty frame the codec refuses.
        return [fields.get(b"f", b"") for _, fields in rows], _s(rows[-1][0])

    async def compact_memory(self, applied_everywhere: Any) -> int:
        assert self._client is not None
        if not applied_everywhere:
            return 0
        return int(await self._script("COMPACT", _s(applied_everywhere)))

    async def memory_horizon(self) -> Any:
        assert self._client is not None
        horizon = await self._call(self._client.get(self._key("memlog:horizon")))
        return _s(horizon) if horizon else None

    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        assert self._client is not None
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in wanted:
            pipe.hvals(self._key("mk:", memory_type, "\0", key))
        frames: list[bytes] = []
        for values in await self._call(pipe.execute()):
            frames += values
        return frames

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        assert self._client is not None
        types = [memory_type] if memory_type else sorted(
            _s(t) for t in await self._call(self._client.smembers(self._key("mtypes:", key))))
        frames: list[bytes] = []
        for mt in types:
            frames += list((await self._call(self._client.hgetall(self._key("mk:", mt, "\0", key)))).values())
        return frames

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self._where(), "prefix": self.prefix, "reconnects": self.reconnects}


async def _close_quickly(thing: Any) -> None:
    """Close a client or pub/sub without waiting out a socket timeout on a half-read connection."""
    try:
        async with asyncio.timeout(0.5):
            await thing.aclose()
    except (TimeoutError, Exception):
        pool = getattr(thing, "connection_pool", None)
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=True)


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
    out = {a.attempt: a for a in attempts_from_rows(r for r in rows if len(r) == 6)}
    if task.started_at and task.attempt not in out:
        final = task.status.is_final
        out[task.attempt] = Attempt(task.attempt, task.node_id or "", task.node_name or "", task.started_at,
                                    task.finished_at if final else None,
                                    task.error if final and task.status is not TaskStatus.SUCCEEDED else None)
    return [out[k] for k in sorted(out)]


__all__ = ["RedisBackend"]
