"""A node's own memory replica: one SQLite file in its state folder (or in memory for clients).

Rows are siblings of a key; a bounded per-key history keeps every value that
was replaced or lost a conflict, with who wrote it and which strategy decided.
The replica is private to one process, so calls are synchronous and short.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterator
from typing import Any

from .. import codec
from ..errors import CodecError
from ..model import MemoryItem

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL, hlc INTEGER NOT NULL,
    value BLOB NOT NULL, vv TEXT NOT NULL, priority INTEGER NOT NULL, tombstone INTEGER NOT NULL,
    checksum INTEGER NOT NULL, PRIMARY KEY (memory_type, key, origin, hlc)
);
CREATE INDEX IF NOT EXISTS items_key ON items (key);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL,
    hlc INTEGER NOT NULL, value BLOB NOT NULL, vv TEXT NOT NULL, strategy TEXT, replaced_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_key ON history (memory_type, key, id);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, memory_type TEXT NOT NULL, key TEXT NOT NULL, frame BLOB NOT NULL
);
"""


def item_to_wire(item: MemoryItem) -> dict[str, Any]:
    return {"t": item.memory_type, "k": item.key, "v": item.value, "vv": item.vv, "h": item.hlc,
            "o": item.origin, "p": item.priority, "d": item.tombstone}


def item_from_wire(data: Any) -> MemoryItem:
    """Build an item from a decoded frame; a wrong shape raises CodecError."""
    try:
        vv = data["vv"]
        if not isinstance(vv, dict) or not all(isinstance(k, str) and isinstance(v, int) and v >= 0
                                                for k, v in vv.items()):
            raise CodecError("memory item has a malformed version vector")
        item = MemoryItem(memory_type=str(data["t"]), key=str(data["k"]), value=data["v"], vv=dict(vv),
                          hlc=int(data["h"]), origin=str(data["o"]), priority=int(data.get("p", 5)),
                          tombstone=bool(data.get("d", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"memory item has a wrong shape: {type(exc).__name__} {exc}") from None
    if not item.key or not item.memory_type or not item.origin:
        raise CodecError("memory item lacks a key, type or origin")
    return item


class ReplicaStore:
    def __init__(self, path: str | None, history_size: int = 20) -> None:
        self.path = path or ":memory:"
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.history_size = history_size
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- reads ------------------------------------------------------------------
    def _rows_to_items(self, rows: list[tuple[Any, ...]]) -> list[MemoryItem]:
        out = []
        for mt, key, origin, hlc, value, vv, priority, tombstone, checksum in rows:
            if zlib.crc32(value) != checksum:
                continue  # corrupted at rest: skipped here, repaired by anti-entropy
            out.append(MemoryItem(mt, key, codec.unpack(value), json.loads(vv), hlc, origin, priority,
                                  bool(tombstone)))
        return out

    def siblings(self, memory_type: str, key: str) -> list[MemoryItem]:
        rows = self._db.execute(
            "SELECT memory_type, key, origin, hlc, value, vv, priority, tombstone, checksum FROM items"
            " WHERE memory_type=? AND key=? ORDER BY hlc, origin", (memory_type, key)).fetchall()
        return self._rows_to_items(rows)

    def find(self, key: str, memory_type: str | None = None) -> list[MemoryItem]:
        """Siblings of ``key``; with no type, those of the most recently written type."""
        if memory_type is not None:
            return self.siblings(memory_type, key)
        rows = self._db.execute(
            "SELECT memory_type, key, origin, hlc, value, vv, priority, tombstone, checksum FROM items"
            " WHERE key=? ORDER BY hlc, origin", (key,)).fetchall()
        items = self._rows_to_items(rows)
        if not items:
            return []
        newest_type = max(items, key=lambda i: i.hlc).memory_type
        return [i for i in items if i.memory_type == newest_type]

    def keys(self, pattern: str = "*") -> Iterator[tuple[str, str, int]]:
        like = pattern.replace("%", r"\%").replace("_", r"\_").replace("*", "%").replace("?", "_")
        yield from self._db.execute(
            "SELECT memory_type, key, count(*) FROM items WHERE key LIKE ? ESCAPE '\\'"
            " GROUP BY memory_type, key ORDER BY key", (like,))

    def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM (SELECT DISTINCT memory_type, key FROM items)").fetchone()[0]

    def history(self, memory_type: str, key: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, origin, hlc, value, vv, strategy, replaced_at FROM history"
            " WHERE memory_type=? AND key=? ORDER BY id DESC", (memory_type, key)).fetchall()
        return [{"version": r[0], "origin": r[1], "hlc": r[2], "value": codec.unpack(r[3]), "vv": json.loads(r[4]),
                 "strategy": r[5], "replaced_at": r[6]} for r in rows]

    # -- writes -----------------------------------------------------------------
    def replace_siblings(self, memory_type: str, key: str, siblings: tuple[MemoryItem, ...],
                         losers: tuple[MemoryItem, ...], strategy: str) -> None:
        """Make ``siblings`` the key's state and file ``losers`` in its history, atomically."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM items WHERE memory_type=? AND key=?", (memory_type, key))
            for s in siblings:
                value = codec.pack(s.value)
                db.execute("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)",
                           (s.memory_type, s.key, s.origin, s.hlc, value, json.dumps(s.vv, sort_keys=True),
                            s.priority, int(s.tombstone), zlib.crc32(value)))
            now = time.time()
            for loser in losers:
                db.execute("INSERT INTO history (memory_type, key, origin, hlc, value, vv, strategy, replaced_at)"
                           " VALUES (?,?,?,?,?,?,?,?)",
                           (loser.memory_type, loser.key, loser.origin, loser.hlc, codec.pack(loser.value),
                            json.dumps(loser.vv, sort_keys=True), strategy, now))
            if losers:
                db.execute("DELETE FROM history WHERE memory_type=? AND key=? AND id NOT IN ("
                           " SELECT id FROM history WHERE memory_type=? AND key=? ORDER BY id DESC LIMIT ?)",
                           (memory_type, key, memory_type, key, self.history_size))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- outbox: local writes not yet delivered to the mesh (backend away) ---------
    def queue_outgoing(self, memory_type: str, key: str, frame: bytes) -> None:
        self._db.execute("INSERT INTO outbox (memory_type, key, frame) VALUES (?,?,?)", (memory_type, key, frame))

    def outgoing(self, limit: int = 500) -> list[tuple[int, str, str, bytes]]:
        return self._db.execute("SELECT id, memory_type, key, frame FROM outbox ORDER BY id LIMIT ?",
                                (limit,)).fetchall()

    def delivered(self, up_to_id: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE id <= ?", (up_to_id,))

    def get_meta(self, k: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def set_meta(self, k: str, v: str) -> None:
        self._db.execute("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (k, v))
