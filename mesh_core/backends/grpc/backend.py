"""``GrpcBackend``: the grpc_mesh parts put together: membership (SWIM), tasks with an owner, memory over
streams, all over ``core.GrpcCore`` (the wire, the private store, the members)."""

from __future__ import annotations

from ..contracts import Quarantined
from .membership import GrpcMembership
from .memory import PRIMARY_LEASE, GrpcMemory
from .tasks import GrpcTasks


class GrpcBackend(GrpcTasks, GrpcMemory, GrpcMembership):
    """The whole ``grpc_mesh`` medium."""

    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        if name == PRIMARY_LEASE:
            return self.primary_lease(holder, ttl)
        return await super().hold_lease(name, holder, ttl)

    async def quarantined(self, limit: int = 100) -> list[Quarantined]:
        return await self.store.quarantined(limit)
