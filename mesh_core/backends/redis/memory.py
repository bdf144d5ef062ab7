"""The Redis backend's memory log: one stream, per-key hashes of each origin's latest frame, bucket sets."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import BackendError
from ...memory.digest import bucket_of
from ..contracts import MEMORY_VERSIONS_KEPT, Topic
from ..shared import CorruptRecord, MemoryEntry
from .client import ALL, RedisClient, _s
from .lean import hash_reply


class RedisMemory(RedisClient):
    """The memory stream, its acknowledgements and anti-entropy digests (the MemoryLog half of ``RedisBackend``)."""

    async def _batch(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in one round trip, each error reply as its exception in its place: on the backend's own
        line when it has one, else a redis-py pipeline (whose replies have redis-py's shapes: see ``lean``)."""
        if self._line is not None:
            return await self._line.batch(commands)
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

    async def _transaction(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in MULTI … EXEC (the first error raised), on the own line or a redis-py pipeline (a cluster
        pipeline sends a PUBLISH after it: see ``MeshClusterPipeline``)."""
        if self._line is not None:
            return await self._line.transaction(commands)
        assert self._client is not None
        pipe = self._client.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())

    async def _publish_batch(self, items: list[MemoryEntry]) -> list[str]:
        # One MULTI/EXEC for the batch, with the broadcast wake-up inside it.
        assert self._client is not None
        commands: list[tuple[Any, ...]] = []
        for origin, memory_type, key, frame, _ in items:
            versions = self._key("mv:", memory_type, "\0", key)
            commands += [("XADD", self._key("memlog"), "*", "o", origin, "t", memory_type, "k", key, "f", frame),
                         ("HSET", self._key("mk:", memory_type, "\0", key), origin, frame),
                         ("RPUSH", versions, frame), ("LTRIM", versions, -MEMORY_VERSIONS_KEPT, -1),
                         ("SADD", self._key("mtypes:", key), memory_type),
                         ("SADD", self._key("bk:", str(bucket_of(memory_type, key))), f"{memory_type}\0{key}")]
        if any(broadcast for *_, broadcast in items):
            commands.append(("PUBLISH", self._key("wake:", ALL), Topic.MEMORY))
        try:
            results = await self._call(self._transaction(commands))
        except BackendError as exc:
            if "WRONGTYPE" not in str(exc) or not await self._memory_keys_set_right(items):
                raise
            return await self._publish_batch(items)  # the keys in the way are aside now: once more
        return [_s(results[i * 6]) for i in range(len(items))]

    async def _memory_keys_set_right(self, items: list[MemoryEntry]) -> bool:
        """Move aside every key a publish writes that holds the wrong type; True if there was one."""
        assert self._client is not None
        want = {self._key("memlog"): b"stream"}
        for _, memory_type, key, _, _ in items:
            want[self._key("mk:", memory_type, "\0", key)] = b"hash"
            want[self._key("mv:", memory_type, "\0", key)] = b"list"
            want[self._key("mtypes:", key)] = b"set"
            want[self._key("bk:", str(bucket_of(memory_type, key)))] = b"set"
        pipe = self._client.pipeline(transaction=False)
        for name in want:
            pipe.type(name)
        found = await self._call(pipe.execute())
        wrong = [(name, kind) for (name, expected), kind in zip(want.items(), found, strict=True)
                 if kind not in (expected, b"none", expected.decode(), "none")]
        for name, kind in wrong:
            await self._wrong_type("memory", name, f"a {_s(kind)} where a {_s(want[name])} belongs", [("delete", name)])
        await self._settle_aside()
        return bool(wrong)

    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        assert self._client is not None
        if cursor:
            await self._call(self._client.hset(self._key("acks"), node_id, cursor))

    async def memory_acks(self) -> dict[str, Any]:
        assert self._client is not None
        rows = (await self._call(self._client.hgetall(self._key("acks")))).items()
        acks_key = self._key("acks")
        acks = dict(self.readable("memory ack", rows, _ack, aside=lambda r: ("ack", r[0], [("hdel", acks_key, r[0])])))
        await self._settle_aside()
        return acks

    async def put_digests(self, node_id: str, digests: dict[int, str]) -> None:
        assert self._client is not None
        await self._call(self._client.hset(self._key("digests"), node_id, json.dumps(digests)))

    async def peer_digests(self) -> dict[str, dict[int, str]]:
        assert self._client is not None
        rows = (await self._call(self._client.hgetall(self._key("digests")))).items()
        out = dict(self.readable("digests", rows, _digests,
                                 aside=lambda r: ("digest", r[0], [("hdel", self._key("digests"), r[0])])))
        await self._settle_aside()
        return out

    async def memory_bucket(self, bucket: int) -> list[bytes]:
        assert self._client is not None
        bucket_key = self._key("bk:", str(bucket))
        pipe = self._client.pipeline(transaction=False)
        pipe.smembers(bucket_key)
        (members,) = await self._call(pipe.execute(raise_on_error=False))
        if isinstance(members, Exception):  # not a set: nothing of ours is in it
            await self._wrong_type("memory", bucket_key, f"bucket key: {members}", [("delete", bucket_key)])
            members = set()
        pairs = [_s(m).partition("\0") for m in members]
        return await self._latest_frames([(mt, key) for mt, _, key in pairs],
                                         lambda mt, key: ("srem", bucket_key, f"{mt}\0{key}"))

    def _frame_of(self, field: tuple[bytes, bytes]) -> bytes:
        return self.frame_checked(field[1])

    async def _latest_frames(self, wanted: Sequence[tuple[str, str]],
                             unlist: Callable[[str, str], tuple[Any, ...]] | None = None) -> list[bytes]:
        """Every origin's latest frame of each ``(memory_type, key)`` in one round trip. A key of the wrong
        type is moved aside (and ``unlist`` says where else it is listed), so is a frame that does not check."""
        assert self._client is not None
        if not wanted:
            return []
        replies = await self._call(self._batch([("HGETALL", self._key("mk:", mt, "\0", key)) for mt, key in wanted]))
        frames: list[bytes] = []
        for (memory_type, key), found in zip(wanted, map(hash_reply, replies), strict=True):
            name = self._key("mk:", memory_type, "\0", key)
            if isinstance(found, Exception):
                removal = [("delete", name)] + ([unlist(memory_type, key)] if unlist else [])
                await self._wrong_type("memory", name, f"{memory_type}/{key}: {found}", removal)
                continue
            frames += self.readable("memory frame", list(found.items()), self._frame_of, aside=_field_of(name))
        await self._settle_aside()
        return frames

    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        def parse(stream_id: Any) -> tuple[int, int]:
            ms, _, seq = _s(stream_id or "0-0").partition("-")
            return int(ms), int(seq or 0)
        return parse(cursor) >= parse(target)

    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        assert self._client is not None
        start = f"({after}" if after else "-"
        pipe = self._client.pipeline(transaction=False)
        pipe.xrange(self._key("memlog"), min=start, count=limit)
        (rows,) = await self._call(pipe.execute(raise_on_error=False))
        if isinstance(rows, Exception):  # not a stream: nothing of ours is in it
            await self._wrong_type("memory", self._key("memlog"), f"memory log: {rows}",
                                   [("delete", self._key("memlog"))])
            await self._settle_aside()
            return [], after
        if not rows:
            return [], after
        frames = self.readable("memory log entry", rows, lambda r: self.frame_checked(r[1].get(b"f")),
                               aside=lambda r: ("memory", f"memlog {_s(r[0])}", [("xdel", self._key("memlog"), r[0])]))
        await self._settle_aside()
        return frames, _s(rows[-1][0])

    async def compact_memory(self, applied_everywhere: Any) -> int:
        assert self._client is not None
        if not applied_everywhere:
            return 0
        return int(await self._script("COMPACT", _s(applied_everywhere)))

    async def memory_versions(self, memory_type: str | None, key: str) -> list[bytes]:
        assert self._client is not None
        names = [self._key("mv:", mt, "\0", key) for mt in await self._types_of(memory_type, key)]
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.lrange(name, 0, -1)
        frames: list[bytes] = []
        for name, found in zip(names, await self._call(pipe.execute(raise_on_error=False)), strict=True):
            if isinstance(found, Exception):  # a wrong-typed list of versions: aside, the next write starts anew
                await self._wrong_type("memory", name, f"versions of {key}: {found}", [("delete", name)])
            else:
                frames += found
        await self._settle_aside()
        return frames

    async def memory_horizon(self) -> Any:
        assert self._client is not None
        key = self._key("memlog:horizon")
        pipe = self._client.pipeline(transaction=False)
        pipe.get(key)
        (horizon,) = await self._call(pipe.execute(raise_on_error=False))
        if not horizon:
            return None
        try:
            if isinstance(horizon, Exception):
                raise CorruptRecord(f"memory horizon: {horizon}")
            return _ack((b"horizon", horizon))[1]
        except CorruptRecord as exc:
            await self._wrong_type("memory", key, str(exc), [("delete", key)])
            await self._settle_aside()
            return None

    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        assert self._client is not None
        return await self._latest_frames([(memory_type, key) for key in dict.fromkeys(keys)])

    async def _types_of(self, memory_type: str | None, key: str) -> list[str]:
        """``[memory_type]``, or every memory type the key was written with when None (a wrong-typed set of
        them is moved aside: none known)."""
        assert self._client is not None
        if memory_type:
            return [memory_type]
        types_key = self._key("mtypes:", key)
        pipe = self._client.pipeline(transaction=False)
        pipe.smembers(types_key)
        (types,) = await self._call(pipe.execute(raise_on_error=False))
        if isinstance(types, Exception):
            await self._wrong_type("memory", types_key, f"memory types of {key}: {types}", [("delete", types_key)])
            await self._settle_aside()
            return []
        return sorted(_s(t) for t in types)

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        return await self._latest_frames([(mt, key) for mt in await self._types_of(memory_type, key)])


def _field_of(name: str) -> Callable[[tuple[bytes, bytes]], tuple[str, str, Any]]:
    """Where one origin's frame in a per-key hash is, for the quarantine."""
    return lambda r: ("memory", f"{name} from {_s(r[0])}", [("hdel", name, r[0])])


def _ack(r: tuple[bytes, bytes]) -> tuple[str, str]:
    """A node's memory-log cursor as stored (a stream id), or CorruptRecord."""
    cursor = _s(r[1])
    ms, dash, seq = cursor.partition("-")
    if not (ms.isdigit() and dash and seq.isdigit()):
        raise CorruptRecord(f"memory ack of {_s(r[0])!r}: {cursor!r} is not a stream cursor")
    return _s(r[0]), cursor


def _digests(r: tuple[bytes, bytes]) -> tuple[str, dict[int, str]]:
    try:
        marks = json.loads(r[1])
        return _s(r[0]), {int(b): str(d) for b, d in marks.items()}
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise CorruptRecord(f"digests of {_s(r[0])!r}: {type(exc).__name__} {exc}") from None
