"""``GrpcBackend``: the grpc_mesh parts put together.

Until the tasks part lands, tasks are this node's own private store: a node on its own works, and
membership (SWIM) and memory (pushed over the Memory streams, see ``memory``) are shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ...model import Task, TaskStatus
from ..contracts import Assignment, Completion, Enqueued, Finished, Quarantined, Reassignment
from .membership import GrpcMembership
from .memory import PRIMARY_LEASE, GrpcMemory


class GrpcBackend(GrpcMemory, GrpcMembership):
    """The whole ``grpc_mesh`` medium."""

    blocking_results = False

    # -- tasks: this node's private store for now ----------------------------------------------------
    async def enqueue(self, assignments: Sequence[Assignment]) -> list[Enqueued]:
        return await self.store.enqueue(assignments)

    async def claim(self, node_id: str, limit: int, lease_seconds: float) -> list[Task]:
        return await self.store.claim(node_id, limit, lease_seconds)

    async def next_due(self, node_id: str) -> float | None:
        return await self.store.next_due(node_id)

    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float) -> set[str]:
        return await self.store.renew(node_id, held, lease_seconds)

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        return await self.store.complete(completions)

    async def move(self, moves: Sequence[Reassignment]) -> list[bool]:
        return await self.store.move(moves)

    async def cancel(self, task_ids: Sequence[str]) -> list[str]:
        return await self.store.cancel(task_ids)

    async def replay(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        return await self.store.replay(task_id, node_id, node_name, why)

    async def stranded(self, dead_nodes: Iterable[str], now: float) -> list[Task]:
        return await self.store.stranded(dead_nodes, now)

    async def cancel_requests(self, node_id: str) -> list[tuple[str, int]]:
        return await self.store.cancel_requests(node_id)

    async def finished_for(self, submitter_id: str, after: Any, wait: float = 0.0) -> tuple[list[Finished], Any]:
        return await self.store.finished_for(submitter_id, after, wait)

    async def prune(self, tasks_kept: int, dead_letters_kept: int, limit: int = 5000) -> int:
        return await self.store.prune(tasks_kept, dead_letters_kept, limit)

    async def task_states(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        return await self.store.task_states(task_ids)

    async def get_tasks(self, task_ids: Sequence[str], with_attempts: bool | None = None) -> list[Task]:
        return await self.store.get_tasks(task_ids, with_attempts)

    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100, *,
                         parent_id: str | None = None) -> list[Task]:
        return await self.store.list_tasks(status, limit, parent_id=parent_id)

    async def task_counts(self) -> dict[str, int]:
        return await self.store.task_counts()

    # -- memory: the memory part (``memory.GrpcMemory``) --------------------------------------------------
    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        if name == PRIMARY_LEASE:
            return self.primary_lease(holder, ttl)
        return await super().hold_lease(name, holder, ttl)

    async def quarantined(self, limit: int = 100) -> list[Quarantined]:
        return await self.store.quarantined(limit)
