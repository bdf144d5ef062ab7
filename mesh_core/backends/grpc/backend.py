"""``GrpcBackend``: the grpc_mesh parts put together.

Until the tasks and memory parts land, tasks and memory are this node's own private store: a node on its
own works, and membership (SWIM) is real; nodes do not yet share tasks or memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ...model import Task, TaskStatus
from ..contracts import Assignment, Completion, Enqueued, Finished, Quarantined, Reassignment
from .membership import GrpcMembership


class GrpcBackend(GrpcMembership):
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
