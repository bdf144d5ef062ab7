"""The Redis backend's memory log: one stream, per-key hashes of each origin's latest frame, bucket sets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...memory.digest import bucket_of
from ..contracts import MEMORY_VERSIONS_KEPT, Topic
from ..shared import MemoryEntry
from .client import ALL, RedisClient, _s


class RedisMemory(RedisClient):
    """The memory stream, its acknowledgements and anti-entropy digests (the MemoryLog half of ``RedisBackend``)."""

    async def _publish_batch(self, items: list[MemoryEntry]) -> list[str]:
        # One MULTI/EXEC for the batch, with the broadcast wake-up inside it.
        assert self._client is not None
        pipe = self._client.pipeline(transaction=True)
        for origin, memory_type, key, frame, _ in items:
            pipe.xadd(self._key("memlog"), {"o": origin, "t": memory_type, "k": key, "f": frame})
            pipe.hset(self._key("mk:", memory_type, "\0", key), origin, frame)
            pipe.rpush(self._key("mv:", memory_type, "\0", key), frame)
            pipe.ltrim(self._key("mv:", memory_type, "\0", key), -MEMORY_VERSIONS_KEPT, -1)
            pipe.sadd(self._key("mtypes:", key), memory_type)
            pipe.sadd(self._key("bk:", str(bucket_of(memory_type, key))), f"{memory_type}\0{key}")
        if any(broadcast for *_, broadcast in items):
            pipe.publish(self._key("wake:", ALL), Topic.MEMORY)
        results = await self._call(pipe.execute())
        return [_s(results[i * 6]) for i in range(len(items))]

    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        assert self._client is not None
        if cursor:
            await self._call(self._client.hset(self._key("acks"), node_id, cursor))

    async def memory_acks(self) -> dict[str, Any]:
        assert self._client is not None
        return {_s(k): _s(v) for k, v in (await self._call(self._client.hgetall(self._key("acks")))).items()}

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

    async def memory_versions(self, memory_type: str | None, key: str) -> list[bytes]:
        assert self._client is not None
        frames: list[bytes] = []
        for mt in await self._types_of(memory_type, key):
            frames += await self._call(self._client.lrange(self._key("mv:", mt, "\0", key), 0, -1))
        return frames

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

    async def _types_of(self, memory_type: str | None, key: str) -> list[str]:
        """``[memory_type]``, or every memory type the key was written with when None."""
        assert self._client is not None
        return [memory_type] if memory_type else sorted(
            _s(t) for t in await self._call(self._client.smembers(self._key("mtypes:", key))))

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        assert self._client is not None
        frames: list[bytes] = []
        for mt in await self._types_of(memory_type, key):
            frames += list((await self._call(self._client.hgetall(self._key("mk:", mt, "\0", key)))).values())
        return frames
