"""``sqlite_local`` tasks started at enqueue, the node's side (see ``backends.started``): what this node's claims say
it can take, the wake-ups that bring the tasks started for it, and (grpc_mesh's own file) the tasks an enqueue starts
on this very node. The statements and the parts that do no I/O are in ``started``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ... import codec
from ...model import Task
from ..shared import TASK_FIELDS
from ..started import GRANT_FRESH
from .clock import machine_clock
from .quarantine import SqliteQuarantine, task_removal


class SqliteStarting(SqliteQuarantine):
    """Started at enqueue: a task for another node with a free slot and nothing queued is started by the enqueue
    itself (running, its lease granted, its attempt on record) and its row is that node's wake-up, so the worker
    runs it without a claim. The node's last claim said what it can take (``grants``: slots, lease, good for
    GRANT_FRESH s); a wake-up lost on the way, or too late to run (``StartedTasks``), is made good by a later claim
    (``granted``, after ``unanswered_after`` the lease), or ends the task cancelled if its cancel was asked meanwhile.
    With ``start_own`` (grpc_mesh) the same holds for a task routed to this very node, handed over in memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Off for a store that is one node's own (grpc_mesh): its owner hands work to workers itself.
        self.start_at_enqueue = True
        # grpc_mesh (a node's own file): a task an enqueue routes to this very node is started by that enqueue too,
        # within the slots this node's worker had free at its last claim (``own_slots``), and handed to the worker
        # in memory: no claim, no second write, no wait for the claim loop's next pass
        self.start_own = False
        self._own_free: tuple[int, float, float] | None = None  # slots, lease, good until (machine clock)
        self._slots_said: tuple[int, float, float] | None = None  # slots, lease, when to say them again
        self._lost_checked = 0.0  # when started tasks left unanswered were last looked for (machine clock)

    def _say_slots(self, conn: sqlite3.Connection, node_id: str, free: int, lease_seconds: float,
                   clock: float) -> None:
        """Tell enqueuers what this node can take (``grants``), its inbox being empty: the slots still free plus
        those running. Written when that changed or half its time is up, not on every claim."""
        running = conn.execute("SELECT count(*) FROM tasks WHERE node_id=? AND status='running'",
                               (node_id,)).fetchone()[0]
        said = (free + running, lease_seconds)
        if self._slots_said is not None and self._slots_said[:2] == said and clock < self._slots_said[2]:
            return
        conn.execute("INSERT OR REPLACE INTO grants (node_id, slots, lease, fresh_until) VALUES (?,?,?,?)",
                     (node_id, *said, clock + GRANT_FRESH))
        self._slots_said = (*said, clock + GRANT_FRESH / 2)

    def own_slots(self, free: int, lease_seconds: float) -> None:
        """What this node's worker can take now, as its claim just found (``start_own``): an enqueue may start that
        many tasks here, with this lease, for GRANT_FRESH seconds (until the next claim says again)."""
        self._own_free = (free, lease_seconds, machine_clock() + GRANT_FRESH)

    def _own_room(self, targets: Sequence[str], queued: dict[str, int], clock: float) -> dict[str, list[float]]:
        """{this node: [free slots, lease, 0]} when an enqueue to ``targets`` may start tasks routed here
        (``start_own``): its worker said so at its last claim, within GRANT_FRESH, and nothing waits for it in its
        inbox (those go first); else nothing."""
        said, own = self._own_free, self._local.node_id if self._local else None
        if not self.start_own or said is None or own is None or own not in targets or queued.get(own):
            return {}
        slots, lease, fresh = said
        return {own: [slots, lease, 0]} if slots > 0 and lease > 0 and fresh > clock else {}

    def _own_started(self, rows: Sequence[Sequence[Any]]) -> None:
        """Tasks an enqueue started on this node: handed to its worker here (no wake-up to send), their slots
        taken from what its last claim left free."""
        if self._own_free is not None:
            slots, lease, fresh = self._own_free
            self._own_free = (slots - len(rows), lease, fresh)
        self._started_arrived([(t, 0.0) for t in self._tasks(rows)])

    def _started_here(self, packed: bytes) -> None:
        """Rows of tasks an enqueue started for this node, in its wake-up."""
        try:
            granted_at, rows = codec.unpack(packed)
            if not isinstance(granted_at, float) or not isinstance(rows, list) or not all(
                    isinstance(r, list) and len(r) == len(TASK_FIELDS) for r in rows):
                raise ValueError("not a time and task rows")
        except (codec.CodecError, ValueError, TypeError) as exc:
            self.refuse("started-task wake-up", exc)  # their leases were granted all the same: a claim hands them on
            return
        age = machine_clock() - granted_at
        self._started_arrived([(t, age) for t in self._tasks(rows)])

    def _tasks(self, rows: Iterable[Sequence[Any]]) -> list[Task]:
        """Task rows (``TASK_FIELDS``) as Tasks; an unreadable row is queued for the quarantine (``_settle_aside``).

        Lease and retry times come in the reader's wall-clock frame (its now plus the time left on the machine
        clock), as ``MeshSnapshot.clock`` is: whatever the reader's wall clock says, the time left is right."""
        tasks = self.readable("task row", rows,
                              lambda r: self.task_from_fields(dict(zip(TASK_FIELDS, r, strict=True))),
                              aside=lambda r: ("task", r[0], task_removal(r[0])))
        shift = time.time() - machine_clock()
        for t in tasks:
            if t.lease_expires is not None:
                t.lease_expires += shift
            if t.not_before > 0:
                t.not_before += shift
        return tasks
