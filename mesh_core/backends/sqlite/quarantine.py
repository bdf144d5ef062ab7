"""``sqlite_local`` quarantine: rows that cannot be read are moved to the ``quarantine`` table with their reason.

A reader that finds such a row queues it (``SharedStoreBackend.set_aside``) with the statements that remove
the original; the row is stored aside and removed in one write, inside the reader's own transaction when it
writes anyway (a claim), otherwise in one write after the read.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import BackendError
from ..contracts import Quarantined
from ..shared import QUARANTINE_KEPT, Aside, raw_bytes
from .store import SqliteStore

log = logging.getLogger("mesh.sqlite")
R = TypeVar("R")

# Where a quarantined row is: the statements (with their parameters) that remove it.
Removal = list[tuple[str, tuple[Any, ...]]]


def task_removal(task_id: Any) -> Removal:
    return [("DELETE FROM tasks WHERE task_id=?", (task_id,)), ("DELETE FROM attempts WHERE task_id=?", (task_id,))]


class SqliteQuarantine(SqliteStore):
    """Moving unreadable rows aside, and reading them back."""

    def _store_aside(self, conn: sqlite3.Connection, taken: list[Aside]) -> list[Quarantined]:
        """Inside a write transaction: remove each queued record and store it aside; returns those moved (a
        record another process moved first is not stored, counted or logged again)."""
        moved = []
        for q, removal in taken:
            gone = [conn.execute(sql, params).rowcount for sql, params in removal]
            if gone and gone[0]:
                conn.execute("INSERT INTO quarantine (kind, key, raw, reason, at) VALUES (?,?,?,?,?)",
                             (q.kind, q.key, q.raw, q.reason, q.at))
                moved.append(q)
        if moved:
            conn.execute("DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?", (QUARANTINE_KEPT,))
        return moved

    async def _settle_aside(self) -> None:
        """Move aside, in one write, what the reads since the last call found unreadable; count it."""
        taken = self.take_aside()
        if not taken:
            return
        try:
            moved = await self._write(lambda c: self._store_aside(c, taken))
        except BackendError as exc:  # the read itself stands; the next read finds the rows again
            log.warning("could not move %d unreadable rows aside: %s", len(taken), exc)
            return
        self.counted(moved)

    async def _read_settled(self, fn: Callable[[sqlite3.Connection], R], *, inline: bool = False) -> R:
        """A read (decoding its rows on the read thread, or here when ``inline``), then the rows it found unreadable
        moved aside."""
        found = await self._read(fn, inline=inline)
        await self._settle_aside()
        return found

    async def quarantined(self, limit: int = 100) -> list[Quarantined]:
        rows = await self._read(lambda c: c.execute(
            "SELECT kind, key, reason, at, raw FROM quarantine ORDER BY id DESC LIMIT ?", (limit,)).fetchall())
        return [Quarantined(str(r[0]), str(r[1]), str(r[2]), float(r[3]), raw_bytes(r[4] or b"")) for r in rows]
