"""``GrpcBackend``: the grpc_mesh parts put together.

Until the memory part lands, memory is this node's own private log: nodes do not yet share memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..contracts import Quarantined
from .membership import GrpcMembership
from .tasks import GrpcTasks


class GrpcBackend(GrpcTasks, GrpcMembership):
    """The whole ``grpc_mesh`` medium."""

    # -- memory: this node's private log for now ------------------------------------------------------
    async def publish_memory(self, origin: str, entries: Sequence[tuple[str, str, bytes]],
                             broadcast: bool = True) -> Any:
        return await self.store.publish_memory(origin, entries, broadcast)

    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        return await self.store.read_memory(after, limit)

    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        await self.store.ack_memory(node_id, cursor)

    async def memory_acks(self) -> dict[str, Any]:
        return await self.store.memory_acks()

    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        return self.store.cursor_reached(cursor, target)

    async def put_digests(self, node_id: str, digests: dict[int, str]) -> None:
        await self.store.put_digests(node_id, digests)

    async def peer_digests(self) -> dict[str, dict[int, str]]:
        return await self.store.peer_digests()

    async def memory_bucket(self, bucket: int) -> list[bytes]:
        return await self.store.memory_bucket(bucket)

    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        return await self.store.memory_for_keys(memory_type, keys)

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        return await self.store.memory_for_key(memory_type, key)

    async def memory_versions(self, memory_type: str | None, key: str) -> list[bytes]:
        return await self.store.memory_versions(memory_type, key)

    async def memory_horizon(self) -> Any:
        return await self.store.memory_horizon()

    async def compact_memory(self, applied_everywhere: Any) -> int:
        return await self.store.compact_memory(applied_everywhere)

    async def quarantined(self, limit: int = 100) -> list[Quarantined]:
        return await self.store.quarantined(limit)
