"""``grpc_mesh`` tasks: every task has an owner, which keeps it in its own store and answers for it.

The parts are mixins stacked over ``GrpcCore`` in the order listed (each a subclass of the one before), so each
calls only the parts before it: every method it calls is visible to it (mypy), and the imports are acyclic.
Each module's docstring tells how its part works:

- ``records``: the shared limits and records (pure: ``task_fields``, ``_Ended``, ``_Offer``, ``_envelope`` …);
- ``base`` (``TasksBase``): this node's task state, made in one ``__init__``; the Tasks stream's send side
  (``_send_to``, ``_post``, ``_expect``, ``_resolve``, ``_wait_all``); task frames;
- ``backup`` (``TasksCopies``): copies of an owner's tasks on its backup peer, and the backup's side;
- ``takeover`` (``TasksTakeover``): membership changes: takeover of a dead owner's tasks, deferred until a
  majority of the workers answers; a client handing its submissions on; copying again;
- ``owner`` (``TasksOwner``): storing, offering, starting, recording, moving, cancelling own tasks;
- ``submit`` (``TasksSubmit``): ``enqueue``; a client's hand-off to workers; the workers' side of it;
- ``reads`` (``TasksReads``): reads, cancels and replays answered for any task; retention;
- ``worker`` (``TasksWorker``): offers, ``claim``, leases, and results to a remote owner;
- ``stream`` (``TasksStream``): the Tasks stream's receive side and dispatch.

``GrpcTasks`` puts them together: opening the part (the Tasks stream, its unary calls, the copies' table),
and the load this node reports.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from ...sqlite.store import finished_trigger
from .records import BACKUPS_SQL, task_fields
from .stream import TasksStream

__all__ = ["GrpcTasks", "task_fields"]


class GrpcTasks(TasksStream):
    """TaskTransport with an owner per task."""

    blocking_results = False
    sweeps_own_tasks = True

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def _open_parts(self) -> None:
        await super()._open_parts()
        assert self.wire is not None  # type: ignore[attr-defined]
        wire = self.wire  # type: ignore[attr-defined]
        wire.on_stream("tasks", self._on_tasks)
        wire.on_unary("GetTasks", self._serve_get_tasks)
        wire.on_unary("Cancel", self._serve_cancel)
        wire.on_unary("Replay", self._serve_replay)
        def create(conn: sqlite3.Connection) -> None:
            for statement in BACKUPS_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(grpc_backups)")}
            if "final" not in columns:  # a store from before copies were pruned
                conn.execute("ALTER TABLE grpc_backups ADD COLUMN final INTEGER NOT NULL DEFAULT -1")
            conn.execute("CREATE INDEX IF NOT EXISTS grpc_backups_by_revision ON grpc_backups (owner_id, revision)")
            # retention looks for copies by their state (ended, dead letters, not known yet): without this it read
            # the state of every copy of an owner, each retention pass (``TasksReads._prune_copies``)
            conn.execute("CREATE INDEX IF NOT EXISTS grpc_backups_by_final ON grpc_backups (owner_id, final, revision)")
            # this file's result feed serves this node's own submissions only (made again at each start: the
            # node's id is the state folder's, but a file may be moved)
            conn.execute("DROP TRIGGER IF EXISTS tasks_finished")
            conn.execute(finished_trigger(self.node_id))
        await self.store._write(create)
        await self._count_copies()
        self.on_member_change(self._member_change)
        self.spawn(self._reoffer_loop(), "reoffer")
        await self._offer_unaccepted_after_restart()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["task_copies_held"] = self._copies_held  # what this node would take over if their owners died
        out.update(self.store.started_counts())  # own tasks started at enqueue (``SqliteTasks.start_own``)
        return out

    # -- load -----------------------------------------------------------------------------------------------
    def _queued_counts(self) -> dict[str, int]:
        counts = {n.node_id: n.running + n.queued for n in self.live_peers(workers_only=True)}
        counts[self.node_id] = len(self._inbox) + len(self._held) + self._own_depth
        return counts

    async def leave(self, node: Any) -> None:
        """Copy every unfinished task to the backup as it stands now, so the backup takes over the present."""
        if not self._client_role:
            with contextlib.suppress(Exception):
                await self._confirm_ownership()
        await super().leave(node)  # type: ignore[safe-super]

    async def heartbeat(self, node: Any) -> None:
        await self._refresh_own_depth()
        await super().heartbeat(node)  # type: ignore[safe-super]

    async def _refresh_own_depth(self) -> None:
        with contextlib.suppress(Exception):
            row = await self.store._read(lambda c: c.execute(
                "SELECT count(*) FROM tasks WHERE node_id=? AND status IN ('assigned','running')",
                (self.node_id,)).fetchone())
            self._own_depth = int(row[0])
