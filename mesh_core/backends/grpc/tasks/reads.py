"""``grpc_mesh`` tasks: reads, cancels and replays that any node answers for any task.

**Reads.** ``get_tasks``, ``task_states``, ``list_tasks`` and ``task_counts`` answer from this node's store
and ask every live peer for the rest (``GetTasks`` with ``local_only``), so any node can answer for any task.
``cancel`` and ``replay`` likewise act here when this node owns the task, else ask the live peers
(``Cancel``, ``Replay``). Task retention (``prune``) applies to this node's store and, as each owner applies
it, to the copies it holds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from .... import codec
from ....model import LIVE, Task, TaskStatus
from ....tasks import further_along
from ...shared import CorruptRecord
from .._generated import mesh_pb2 as pb
from ..core import log
from ..wire import closed_under_call
from .records import IN_CHUNK, _final_of
from .submit import TasksSubmit

READ_TIMEOUT = 3.0  # a peer asked for its tasks answers within this or is left out
READ_LIMIT = 10_000  # tasks one GetTasks lists at most
PROVISIONAL_KEPT = 60.0  # a provisional copy neither confirmed nor dropped this long (monotonic s) is dropped


class TasksReads(TasksSubmit):
    """Here first, then every live peer: ``task_states``, ``get_tasks``, ``list_tasks``, ``task_counts``,
    ``cancel`` and ``replay`` (``_gather`` asks the live workers at once); the unary calls that answer them
    (``GetTasks``, ``Cancel``, ``Replay``); retention of the store and of the copies held (``prune``)."""

    async def cancel(self, task_ids: Sequence[str]) -> list[str]:
        out = await self._cancel_owned(task_ids)
        missing = [t for t, o in zip(task_ids, out, strict=True) if o == "missing"]
        if missing:
            found = await self._ask_peers_cancel(missing)
            out = [found.get(t, o) if o == "missing" else o for t, o in zip(task_ids, out, strict=True)]
        return out

    async def replay(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        if await self.store.task_states([task_id]):
            return await self._replay_owned(task_id, node_id, node_name, why)
        request = pb.ReplayRequest(caller=self.wire.hello(), task_id=task_id, node_id=node_id or "",  # type: ignore[attr-defined]
                                   node_name=node_name or "", why=why)
        replies = await self._gather(lambda stub: stub.Replay(request, timeout=READ_TIMEOUT,
                                                              metadata=self.wire.metadata()))  # type: ignore[attr-defined]
        return any(r.replayed for r in replies)

    async def _serve_replay(self, request: pb.ReplayRequest, context: grpc.aio.ServicerContext) -> Any:
        if not await self.store.task_states([request.task_id]):
            return pb.ReplayReply(found=False)
        target = request.node_id
        if target and target != self.node_id and self.status_of(target) not in LIVE:
            self.counters["refused_calls_bad_argument"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"node {target[:40]!r} is no live member here: replay to a live worker or to none")
        ok = await self._replay_owned(request.task_id, request.node_id or None, request.node_name or None,
                                      request.why)
        return pb.ReplayReply(found=True, replayed=ok)

    async def prune(self, tasks_kept: int, dead_letters_kept: int, limit: int = 5000) -> int:
        gone = await self.store.prune(tasks_kept, dead_letters_kept, limit)
        if not self._client_role:
            await self._prune_copies(tasks_kept, dead_letters_kept, limit)
        return gone

    async def _prune_copies(self, tasks_kept: int, dead_letters_kept: int, limit: int) -> int:
        """Task retention on the copies this node holds for other owners, as each owner applies it to its own
        store: of each owner's copies, the newest ``tasks_kept`` (by revision) stay whatever their state; older
        ones of ended tasks go (their outcome was held by two nodes and told to its submitter long since);
        dead-letter copies past the newest ``dead_letters_kept`` go. Copies of unfinished tasks always stay.
        A provisional copy that its owner neither confirmed nor dropped within ``PROVISIONAL_KEPT`` goes too
        (its confirmation was lost; the owner copies the task again when it ends). Returns how many went."""
        limits = self.limits
        now = time.monotonic()
        seen = self._provisional_seen

        def prune(conn: sqlite3.Connection) -> tuple[int, dict[tuple[str, str, int], float]]:
            gone = 0
            budget = limit
            for owner in _owners(conn):
                if budget <= 0:
                    break
                edge = conn.execute("SELECT revision FROM grpc_backups WHERE owner_id=? ORDER BY revision DESC "
                                    "LIMIT 1 OFFSET ?", (owner, tasks_kept)).fetchone()
                ids: list[str] = []
                if edge is not None:
                    unknown = conn.execute("SELECT task_id, record FROM grpc_backups WHERE owner_id=? AND final=-1 "
                                           "AND revision<=? LIMIT ?", (owner, edge[0], budget)).fetchall()
                    for task_id, record in unknown:
                        conn.execute("UPDATE grpc_backups SET final=? WHERE owner_id=? AND task_id=?",
                                     (_final_of(record, limits), owner, task_id))
                    ids = [r[0] for r in conn.execute(
                        "SELECT task_id FROM grpc_backups WHERE owner_id=? AND final=1 AND revision<=? "
                        "ORDER BY revision LIMIT ?", (owner, edge[0], budget))]
                ids += [r[0] for r in conn.execute(
                    "SELECT task_id FROM grpc_backups WHERE owner_id=? AND final=2 ORDER BY revision DESC "
                    "LIMIT ? OFFSET ?", (owner, max(0, budget - len(ids)), dead_letters_kept))]
                for start in range(0, len(ids), IN_CHUNK):
                    chunk = ids[start:start + IN_CHUNK]
                    conn.execute(f"DELETE FROM grpc_backups WHERE owner_id=? AND task_id IN "
                                 f"({','.join('?' * len(chunk))})", (owner, *chunk))
                gone += len(ids)
                budget -= len(ids)
            waiting = {(o, t, int(r)): seen.get((o, t, int(r)), now) for o, t, r in conn.execute(
                "SELECT owner_id, task_id, revision FROM grpc_provisional LIMIT 100000")}
            for key, first in list(waiting.items()):
                if now - first >= PROVISIONAL_KEPT:
                    conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=?", key)
                    del waiting[key]
            return gone, waiting
        gone, self._provisional_seen = await self.store._write(prune, inline=False)  # bulk: off the loop's thread
        if gone:
            self.counters["task_copies_pruned"] += gone
            await self._count_copies()
        return gone

    async def task_states(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        states = await self.store.task_states(task_ids)
        missing = [t for t in task_ids if t not in states]
        if missing:
            for task in await self._ask_peers(pb.GetTasksRequest(task_ids=missing, local_only=True)):
                if task.status.is_final or task.task_id not in states:  # one peer's stale copy never wins
                    states[task.task_id] = task.status
        return states

    async def get_tasks(self, task_ids: Sequence[str], with_attempts: bool | None = None) -> list[Task]:
        found = {t.task_id: t for t in await self.store.get_tasks(task_ids, with_attempts)}
        missing = [t for t in dict.fromkeys(task_ids) if t not in found]
        if missing:
            attempts = len(missing) <= 50 if with_attempts is None else with_attempts
            for task in await self._ask_peers(pb.GetTasksRequest(task_ids=missing, local_only=True,
                                                                 with_attempts=attempts)):
                known = found.get(task.task_id)
                found[task.task_id] = task if known is None else further_along(known, task)
        return [found[t] for t in task_ids if t in found]

    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100, *,
                         parent_id: str | None = None) -> list[Task]:
        mine = await self.store.list_tasks(status, limit, parent_id=parent_id)
        theirs = await self._ask_peers(pb.GetTasksRequest(status=status.value if status else "", limit=limit,
                                                          parent_id=parent_id or "", local_only=True))
        merged: dict[str, Task] = {}
        for t in theirs:
            known = merged.get(t.task_id)
            merged[t.task_id] = t if known is None else further_along(known, t)
        merged.update({t.task_id: t for t in mine})
        tasks = list(merged.values())
        if parent_id is not None:
            tasks.sort(key=lambda t: t.submitted_at)
        else:
            tasks.sort(key=lambda t: t.submitted_at, reverse=True)
        return tasks[:limit]

    async def task_counts(self) -> dict[str, int]:
        counts = dict(await self.store.task_counts())
        for reply in await self._gather(lambda stub: stub.GetTasks(
                pb.GetTasksRequest(caller=self.wire.hello(), counts=True, local_only=True),  # type: ignore[attr-defined]
                timeout=READ_TIMEOUT, metadata=self.wire.metadata())):  # type: ignore[attr-defined]
            for status, n in reply.counts.items():
                counts[status] = counts.get(status, 0) + int(n)
        return counts

    async def _gather(self, call: Any) -> list[Any]:
        peers = [p for p in self.live_peers(workers_only=True) if self.address_of(p.node_id)]
        if not peers:
            return []

        async def one(address: str) -> Any:
            try:
                return await call(self.wire.stub(address))  # type: ignore[attr-defined]
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                log.debug("grpc read from %s failed: %s", address, exc)
                return None
            except asyncio.CancelledError:
                if not closed_under_call():
                    raise
                return None  # the peer was declared dead mid-call: its channel closed
        replies = await asyncio.gather(*(one(self.address_of(p.node_id) or "") for p in peers))
        return [r for r in replies if r is not None]

    async def _ask_peers(self, request: pb.GetTasksRequest) -> list[Task]:
        request.caller.CopyFrom(self.wire.hello())  # type: ignore[attr-defined]
        replies = await self._gather(lambda stub: stub.GetTasks(request, timeout=READ_TIMEOUT,
                                                                metadata=self.wire.metadata()))  # type: ignore[attr-defined]
        out = []
        for reply in replies:
            for frame in reply.tasks:
                try:
                    out.append(self._task_of(frame))
                except (codec.CodecError, CorruptRecord, ValueError) as exc:
                    self.found_problem("refused_records", f"a task read from a peer: {exc}")
        return out

    async def _ask_peers_cancel(self, task_ids: Sequence[str]) -> dict[str, str]:
        request = pb.CancelRequest(caller=self.wire.hello(), task_ids=task_ids, local_only=True)  # type: ignore[attr-defined]
        out: dict[str, str] = {}
        for reply in await self._gather(lambda stub: stub.Cancel(request, timeout=READ_TIMEOUT,
                                                                 metadata=self.wire.metadata())):  # type: ignore[attr-defined]
            for task_id, outcome in reply.outcomes.items():
                if outcome != "missing":
                    out[task_id] = outcome
        return out

    async def _serve_get_tasks(self, request: pb.GetTasksRequest, context: grpc.aio.ServicerContext) -> Any:
        store = self.store
        if request.counts:
            counts = await store.task_counts() if request.local_only else await self.task_counts()
            return pb.GetTasksReply(counts={k: int(v) for k, v in counts.items()})
        try:
            status = TaskStatus(request.status) if request.status else None
        except ValueError:
            self.counters["refused_calls_bad_argument"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown task status {request.status[:40]!r} "
                                f"(one of {', '.join(s.value for s in TaskStatus)})")
        if request.task_ids:
            ids = list(request.task_ids)
            tasks = (await store.get_tasks(ids, request.with_attempts) if request.local_only
                     else await self.get_tasks(ids, request.with_attempts))
        else:
            limit = min(request.limit or 100, READ_LIMIT)
            tasks = (await store.list_tasks(status, limit, parent_id=request.parent_id or None) if request.local_only
                     else await self.list_tasks(status, limit, parent_id=request.parent_id or None))
        return pb.GetTasksReply(tasks=[self._task_frame(t) for t in tasks])

    async def _serve_cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> Any:
        ids = list(request.task_ids)
        out = await self._cancel_owned(ids) if request.local_only else await self.cancel(ids)
        return pb.CancelReply(outcomes=dict(zip(ids, out, strict=True)))


def _owners(conn: sqlite3.Connection) -> Iterator[str]:
    """The owners whose copies ``grpc_backups`` holds, one index seek each (``DISTINCT`` would read every copy's
    index entry: retention runs every few seconds over tables of 100,000 copies and more)."""
    row = conn.execute("SELECT min(owner_id) FROM grpc_backups").fetchone()
    while row is not None and row[0] is not None:
        yield row[0]
        row = conn.execute("SELECT min(owner_id) FROM grpc_backups WHERE owner_id > ?", (row[0],)).fetchone()
