"""A node's own memory replica: one SQLite file in its state folder (or in memory for clients).

Rows are siblings of a key; a bounded per-key history keeps every value that
was replaced or lost a conflict, with who wrote it and which strategy decided.
The replica is private to one process, so calls are synchronous and short.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_text  # type: ignore[attr-defined]
from typing import Any, Protocol

from .. import codec
from ..checkpoints import Checkpointer, writes_apart
from ..errors import CodecError
from ..files import PRIVATE_FILE, prepare_sqlite_file
from ..model import MemoryItem
from .digest import BucketDigests, bucket_of

log = logging.getLogger(__name__)

SCHEMA = """
-- Keyed by the key first: a lookup by key alone needs no index of its own, one b-tree fewer written per item.
CREATE TABLE IF NOT EXISTS items (
    memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL, hlc INTEGER NOT NULL,
    value BLOB NOT NULL, vv TEXT NOT NULL, priority INTEGER NOT NULL, tombstone INTEGER NOT NULL,
    checksum INTEGER NOT NULL, PRIMARY KEY (key, memory_type, origin, hlc)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL,
    hlc INTEGER NOT NULL, value BLOB NOT NULL, vv TEXT NOT NULL, strategy TEXT, replaced_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_key ON history (memory_type, key, id);
-- The frontier: original writes no other received write dominates. What readers see
-- (items) is computed from it, so replicas agree whatever order writes arrived in.
-- A key whose frontier is its visible items (the usual case) has no rows here: its items are both.
CREATE TABLE IF NOT EXISTS sources (
    memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL, hlc INTEGER NOT NULL,
    value BLOB NOT NULL, vv TEXT NOT NULL, priority INTEGER NOT NULL, tombstone INTEGER NOT NULL,
    checksum INTEGER NOT NULL, PRIMARY KEY (memory_type, key, origin, hlc)
);
CREATE TABLE IF NOT EXISTS conflicts (
    conflict_id TEXT PRIMARY KEY, memory_type TEXT NOT NULL, key TEXT NOT NULL, strategy TEXT NOT NULL,
    reason TEXT, disagreements TEXT, opened_at REAL NOT NULL, closed_at REAL, choice TEXT
);
CREATE INDEX IF NOT EXISTS conflicts_key ON conflicts (memory_type, key, closed_at);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, memory_type TEXT NOT NULL, key TEXT NOT NULL, frame BLOB NOT NULL
);
"""


KEY_TABLES = ("items", "sources", "history", "conflicts")  # every table that holds rows of one key
KeyRows = tuple[list[MemoryItem], list[MemoryItem]]  # a key's (siblings, sources)
Mark = tuple[str, str, str, int]  # a frontier write: (memory_type, key, origin, hlc)
KEYS_PER_READ = 400  # keys one ``states`` query asks for (SQLite's bound parameters stay few)
READ_MARKS_KEPT = 50_000  # keys whose frontier marks ``states`` keeps for the next change at most
COUNT_EXACT_SECONDS = 10.0  # after changes ``count`` did not follow, its exact count is read again at most this often


def key_chunks(names: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """``(memory_type, keys)`` for a keyed read: ``names`` (``(memory_type, key)``, repeats dropped) grouped by type,
    at most ``KEYS_PER_READ`` keys a read (SQLite's bound parameters stay few)."""
    by_type: dict[str, list[str]] = {}
    for memory_type, key in dict.fromkeys(names):
        by_type.setdefault(memory_type, []).append(key)
    for memory_type, keys in by_type.items():
        for start in range(0, len(keys), KEYS_PER_READ):
            yield memory_type, keys[start:start + KEYS_PER_READ]


@dataclass(frozen=True)
class KeyChange:
    """One key's new rows: its visible ``siblings``, its frontier ``sources`` (None: unchanged) and the values
    that left it, each with the strategy that decided (``losers``, for the history). ``fresh``: it had no rows."""

    memory_type: str
    key: str
    siblings: tuple[MemoryItem, ...]
    sources: tuple[MemoryItem, ...] | None
    losers: tuple[tuple[MemoryItem, str], ...] = ()
    fresh: bool = False


class KeyUpdate(Protocol):
    """What ``replace_many`` reads of one key's change: a ``KeyChange``, or a fold (``resolve.KeyFold``) as it is."""

    @property
    def memory_type(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def siblings(self) -> tuple[MemoryItem, ...]: ...
    @property
    def sources(self) -> tuple[MemoryItem, ...] | None: ...
    @property
    def losers(self) -> tuple[tuple[MemoryItem, str], ...]: ...
    @property
    def fresh(self) -> bool: ...


@dataclass(frozen=True)
class KeyState:
    """One key's rows in every table as they were at a moment: what ``ReplicaStore.restore`` puts back."""

    memory_type: str
    key: str
    rows: dict[str, list[tuple[Any, ...]]]


def vv_text(vv: dict[str, int]) -> str:
    """A version vector as the replica stores it: ``json.dumps(vv, sort_keys=True)``, built directly for the
    usual vector of text ids and whole numbers (one per item applied, thousands a second)."""
    parts = []
    for node_id in sorted(vv):
        count = vv[node_id]
        if type(node_id) is not str or type(count) is not int:
            return json.dumps(vv, sort_keys=True)
        parts.append(f"{_json_text(node_id)}: {count}")
    return "{" + ", ".join(parts) + "}"


def item_to_wire(item: MemoryItem) -> dict[str, Any]:
    return {"t": item.memory_type, "k": item.key, "v": item.value, "vv": item.vv, "h": item.hlc,
            "o": item.origin, "p": item.priority, "d": item.tombstone}


def item_from_wire(data: Any) -> MemoryItem:
    """Build an item from a decoded frame; a wrong shape raises CodecError."""
    try:
        vv = data["vv"]
        if not isinstance(vv, dict):
            raise CodecError("memory item has a malformed version vector")
        past_64_bits = False
        for node_id, count in vv.items():  # one pass: a catch-up reads thousands of items a second
            # a count is a whole number, not a bool (which a vector comparison refuses: the batch would fail)
            if type(node_id) is not str or type(count) is not int or count < 0:
                raise CodecError("memory item has a malformed version vector")
            if count >= 2 ** 63:
                past_64_bits = True
        item = MemoryItem(str(data["t"]), str(data["k"]), data["v"], dict(vv), int(data["h"]), str(data["o"]),
                          int(data.get("p", 5)), bool(data.get("d", False)))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"memory item has a wrong shape: {type(exc).__name__} {exc}") from None
    if not item.key or not item.memory_type or not item.origin:
        raise CodecError("memory item lacks a key, type or origin")
    if past_64_bits or not 0 <= item.hlc < 2 ** 63:
        raise CodecError("memory item has a stamp or version past what a replica stores (64-bit)")
    return item


class ReplicaStore:
    def __init__(self, path: str | None, history_size: int = 20) -> None:
        self.path = path or ":memory:"
        if path:
            prepare_sqlite_file(path, PRIVATE_FILE)  # 0600 before SQLite opens it; its -wal and -shm follow
        self.history_size = history_size
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # The replica is written on the event loop: its WAL checkpoints (and their fsyncs) run on their own thread.
        self._checkpoints: Checkpointer | None = None
        if path:
            writes_apart(self._db)
            self._checkpoints = Checkpointer(self.path)
        self._count: int | None = None  # distinct keys, as ``count`` last knew them (None: to be read)
        self._count_stale = False  # changed since in ways it did not follow: read again at the next chance
        self._counted_at = 0.0  # monotonic time of the last exact count
        self._outbox_empty: bool | None = None  # None: not looked yet
        # The frontier's anti-entropy digests, kept as writes change it; None: to be computed from the whole
        # frontier (not yet since open, or a rolled-back change left the running sums wrong)
        self._digests: BucketDigests | None = None
        # the frontier marks ``states`` read of each key since the last change (what the change then replaces)
        self._read_marks: dict[tuple[str, str], tuple[list[Mark], list[Mark]]] = {}
        self.not_upgraded = self._upgrade()  # why the file stayed as an earlier release made it, if it did

    def _upgrade(self) -> str | None:
        """Bring a replica an earlier release made up to date, in one transaction: ``items`` keyed by the key first,
        without the key index it needed before. When the file refuses (a full disk: the rebuild needs room for a
        second copy of the items), it stays as it was, which works with one b-tree more to write per item: returns
        why."""
        db = self._db
        row = db.execute("SELECT sql FROM sqlite_master WHERE name='items'").fetchone()
        started = time.monotonic()
        try:
            if row is None or "PRIMARY KEY (key," in row[0]:
                db.execute("DROP INDEX IF EXISTS items_key")  # made again by an earlier release that opened it since
                return None
            with self.batch():
                db.execute("ALTER TABLE items RENAME TO items_old")
                db.execute("DROP INDEX IF EXISTS items_key")
                db.execute(next(s for s in SCHEMA.split(";") if "EXISTS items (" in s))
                db.execute("INSERT OR REPLACE INTO items SELECT memory_type, key, origin, hlc, value, vv, priority,"
                           " tombstone, checksum FROM items_old")
                db.execute("DROP TABLE items_old")
        except sqlite3.Error as exc:
            return f"its items could not be keyed by the key first ({exc}); it works as it is, a little slower to write"
        # once per replica: about 0.5 s per 200,000 items here
        log.info("memory replica: items keyed by the key first, once for this release (%.1f s)",
                 time.monotonic() - started)
        return None

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
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

    def state(self, memory_type: str, key: str) -> tuple[list[MemoryItem], list[MemoryItem]]:
        """(siblings, sources) of one key in one read: what applying a remote write needs."""
        return self.states([(memory_type, key)]).get((memory_type, key), ([], []))

    def max_hlc(self) -> int:
        """The newest HLC stamp this replica holds (a restarted clock never goes below it)."""
        row = self._db.execute("SELECT max(m) FROM (SELECT max(hlc) AS m FROM items UNION ALL"
                               " SELECT max(hlc) FROM sources UNION ALL SELECT max(hlc) FROM history)").fetchone()
        return int(row[0] or 0)

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

    def frontier_marks(self) -> list[Mark]:
        """``(memory_type, key, origin, hlc)`` of every frontier write (sources, else the visible items)."""
        # UNION ALL: the two parts never share a key, and UNION would sort the whole replica to find no duplicate
        return self._db.execute(
            "SELECT memory_type, key, origin, hlc FROM sources UNION ALL "
            "SELECT memory_type, key, origin, hlc FROM items i WHERE NOT EXISTS ("
            " SELECT 1 FROM sources s WHERE s.memory_type=i.memory_type AND s.key=i.key)").fetchall()

    def digests(self) -> dict[int, str]:
        """The anti-entropy digests of the frontier (``digest.digests(self.frontier_marks())``), as kept by every
        change since they were first computed: no read of the replica."""
        return self._followed_digests().as_dict()

    def held_lately(self, bucket: int, digest: str | None) -> bool:
        """Whether a peer's ``digest`` of ``bucket`` is one this frontier had now or lately (``BucketDigests.had``):
        then the peer holds nothing there that this replica lacks."""
        return self._followed_digests().had(bucket, digest)

    def _followed_digests(self) -> BucketDigests:
        """The digests every change keeps from here on, computed from the frontier when first asked for."""
        if self._digests is None:
            self._digests = BucketDigests()
            self._digests.add(self.frontier_marks())
        return self._digests

    def _frontiers(self, names: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[list[Mark], list[Mark]]]:
        """``(sources, items)`` marks of each of ``names`` (keys with no rows left out); its frontier is the first
        when it has any, else the second (as ``frontier_marks``)."""
        out: dict[tuple[str, str], tuple[list[Mark], list[Mark]]] = {}
        for memory_type, chunk in key_chunks(names):
            marks = ",".join("?" * len(chunk))
            for table, mt, key, origin, hlc in self._db.execute(
                    f"SELECT 0, memory_type, key, origin, hlc FROM sources WHERE memory_type=? AND key IN ({marks})"
                    f" UNION ALL SELECT 1, memory_type, key, origin, hlc FROM items WHERE memory_type=? AND key IN"
                    f" ({marks})", (memory_type, *chunk, memory_type, *chunk)):
                out.setdefault((mt, key), ([], []))[table].append((mt, key, origin, hlc))
        return out

    def _follow(self, changes: Sequence[KeyUpdate]) -> int | None:
        """Move the kept digests from the changed keys' frontiers as stored now (as ``states`` just read them, else
        read here) to the ones ``changes`` make. Returns how many keys the changes add (or take away) when it
        followed them, else None."""
        digests, read = self._digests, self._read_marks
        self._read_marks = {}  # out of date once the change is made
        if digests is None:
            return None
        names = [(c.memory_type, c.key) for c in changes]
        if len(set(names)) < len(names):  # a key changed twice in one call: not followed, recomputed when asked
            self._digests = None
            return None
        before = self._frontiers([n for c, n in zip(changes, names, strict=True) if not c.fresh and n not in read])
        gone: list[Mark] = []
        came: list[Mark] = []
        keys = 0
        for change, name in zip(changes, names, strict=True):
            old_sources, old_items = ([], []) if change.fresh else read.get(name) or before.get(name, ([], []))
            keys += bool(change.siblings) - bool(old_items)
            if change.sources is None and old_sources:  # its sources, its frontier, stay
                continue
            gone += old_sources or old_items
            # new sources are stored as such, or (equal to the siblings) as the items: the same marks either way
            came += [(s.memory_type, s.key, s.origin, s.hlc) for s in change.sources or change.siblings]
        digests.replace(gone, came)
        return keys

    def own_sources(self, origin: str) -> list[MemoryItem]:
        """``origin``'s writes in the frontier (sources, else the visible items, as ``frontier_marks``)."""
        rows = self._db.execute(
            "SELECT memory_type, key, origin, hlc, value, vv, priority, tombstone, checksum FROM sources"
            " WHERE origin=? UNION ALL "
            "SELECT memory_type, key, origin, hlc, value, vv, priority, tombstone, checksum FROM items i"
            " WHERE origin=? AND NOT EXISTS (SELECT 1 FROM sources s WHERE s.memory_type=i.memory_type"
            " AND s.key=i.key)", (origin, origin)).fetchall()
        return self._rows_to_items(rows)

    def keys(self, pattern: str = "*") -> Iterator[tuple[str, str, int]]:
        like = pattern.replace("%", r"\%").replace("_", r"\_").replace("*", "%").replace("?", "_")
        yield from self._db.execute(
            "SELECT memory_type, key, count(*) FROM items WHERE key LIKE ? ESCAPE '\\'"
            " GROUP BY memory_type, key ORDER BY key", (like,))

    def count(self) -> int:
        """Distinct keys held (the heartbeat asks every second). Changes add and remove the keys they make and empty
        as they go (``replace_many``); after changes it could not follow, the exact count is read again at most every
        ``COUNT_EXACT_SECONDS``. It used to be read again at the first ask after every write: a scan of the whole
        replica under steady writes, every second, on the loop (7 ms at 35,000 keys, 190 ms at 1,000,000)."""
        if self._count is None or (self._count_stale and time.monotonic() - self._counted_at >= COUNT_EXACT_SECONDS):
            self._count = self._db.execute(
                "SELECT count(*) FROM (SELECT DISTINCT memory_type, key FROM items)").fetchone()[0]
            self._count_stale, self._counted_at = False, time.monotonic()
        return self._count

    def history(self, memory_type: str, key: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, origin, hlc, value, vv, strategy, replaced_at FROM history"
            " WHERE memory_type=? AND key=? ORDER BY id DESC", (memory_type, key)).fetchall()
        return [{"version": r[0], "origin": r[1], "hlc": r[2], "value": codec.unpack(r[3]), "vv": json.loads(r[4]),
                 "strategy": r[5], "replaced_at": r[6]} for r in rows]

    # -- writes -----------------------------------------------------------------
    def states(self, names: Iterable[tuple[str, str]]) -> dict[tuple[str, str], KeyRows]:
        """``(siblings, sources)`` of many keys (``(memory_type, key)``) in a few reads; keys with no rows left out."""
        out: dict[tuple[str, str], KeyRows] = {}
        read = self._read_marks if self._digests is not None else None  # kept for the change that follows
        if read is not None and len(read) > READ_MARKS_KEPT:
            read.clear()
        for memory_type, chunk in key_chunks(names):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT 0, memory_type, key, origin, hlc, value, vv, priority, tombstone, checksum FROM items"
                f" WHERE memory_type=? AND key IN ({marks}) UNION ALL"
                " SELECT 1, memory_type, key, origin, hlc, value, vv, priority, tombstone, checksum FROM sources"
                f" WHERE memory_type=? AND key IN ({marks}) ORDER BY 1, 5, 4",
                (memory_type, *chunk, memory_type, *chunk)).fetchall()
            if read is not None:  # every row, a corrupted one too: the frontier's marks hold it
                for key in chunk:
                    read[(memory_type, key)] = ([], [])
                for row in rows:
                    read[(row[1], row[2])][1 - row[0]].append((row[1], row[2], row[3], row[4]))
            for row in rows:
                for item in self._rows_to_items([row[1:]]):
                    out.setdefault((item.memory_type, item.key), ([], []))[row[0]].append(item)
        return out

    def replace_siblings(self, memory_type: str, key: str, siblings: tuple[MemoryItem, ...],
                         losers: tuple[MemoryItem, ...], strategy: str,
                         sources: tuple[MemoryItem, ...] | None = None, *, fresh: bool = False) -> None:
        """Make ``siblings`` the key's visible state (and ``sources`` its frontier), file ``losers``, atomically.

        ``fresh``: the caller has just read that the key has no rows here (nothing to delete)."""
        self.replace_many([KeyChange(memory_type, key, siblings, sources,
                                     tuple((loser, strategy) for loser in losers), fresh)])

    def replace_many(self, changes: Sequence[KeyUpdate]) -> None:
        """``replace_siblings`` for many keys at once, atomically: one statement per table for the batch."""
        if not changes:
            return
        db = self._db
        packed: dict[int, tuple[Any, ...]] = {}  # one encoding per item, shared by both tables

        def row(s: MemoryItem) -> tuple[Any, ...]:
            found = packed.get(id(s))
            if found is None:
                value = codec.pack(s.value)
                found = packed[id(s)] = (s.memory_type, s.key, s.origin, s.hlc, value, vv_text(s.vv), s.priority,
                                         int(s.tombstone), zlib.crc32(value))
            return found

        now = time.time()
        with self._savepoint():
            keys = self._follow(changes)
            old = [(c.memory_type, c.key) for c in changes if not c.fresh]
            old_sources = [(c.memory_type, c.key) for c in changes if not c.fresh and c.sources is not None]
            if old:
                db.executemany("DELETE FROM items WHERE memory_type=? AND key=?", old)
            if old_sources:
                db.executemany("DELETE FROM sources WHERE memory_type=? AND key=?", old_sources)
            db.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?)",
                           [row(s) for c in changes for s in c.siblings])
            # a key whose frontier is what readers see (the usual case) keeps no sources rows: its items are both
            db.executemany("INSERT OR REPLACE INTO sources VALUES (?,?,?,?,?,?,?,?,?)",
                           [row(s) for c in changes if c.sources and c.sources != c.siblings for s in c.sources])
            filed = [(loser.memory_type, loser.key, loser.origin, loser.hlc, codec.pack(loser.value),
                      vv_text(loser.vv), strategy, now)
                     for c in changes for loser, strategy in c.losers]
            if filed:
                db.executemany("INSERT INTO history (memory_type, key, origin, hlc, value, vv, strategy, replaced_at)"
                               " VALUES (?,?,?,?,?,?,?,?)", filed)
                # the newest history_size rows stay: the rest is at or below the id just past them (none: NULL)
                db.executemany("DELETE FROM history WHERE memory_type=? AND key=? AND id <= ("
                               " SELECT id FROM history WHERE memory_type=? AND key=? ORDER BY id DESC"
                               " LIMIT 1 OFFSET ?)",
                               [(c.memory_type, c.key, c.memory_type, c.key, self.history_size)
                                for c in changes if c.losers])
        if self._count is not None:
            if keys is not None:  # the keys that had rows were read to follow the digests: the count follows too
                self._count += keys
            else:  # a fresh key with rows now is one more; any other change may move it
                self._count += sum(1 for c in changes if c.fresh and c.siblings)
                self._count_stale = self._count_stale or any(not c.fresh or not c.siblings for c in changes)

    def key_state(self, memory_type: str, key: str) -> KeyState:
        """The key's rows as they are now (siblings, sources, history, conflicts), to undo a change with."""
        return self.key_states([(memory_type, key)])[0]

    def key_states(self, names: Sequence[tuple[str, str]]) -> list[KeyState]:
        """``key_state`` of each of ``names`` (``(memory_type, key)``), in one read per table and chunk of keys."""
        rows: dict[tuple[str, str], dict[str, list[tuple[Any, ...]]]] = {
            name: {table: [] for table in KEY_TABLES} for name in names}
        for table in KEY_TABLES:
            for memory_type, chunk in key_chunks(names):
                cursor = self._db.execute(f"SELECT * FROM {table} WHERE memory_type=? AND key IN"
                                          f" ({','.join('?' * len(chunk))})", (memory_type, *chunk))
                columns = [c[0] for c in cursor.description]
                at_type, at_key = columns.index("memory_type"), columns.index("key")
                for row in cursor:
                    rows[(row[at_type], row[at_key])][table].append(row)
        return [KeyState(memory_type, key, rows[(memory_type, key)]) for memory_type, key in names]

    def restore(self, state: KeyState) -> list[str]:
        """Put the key's rows back exactly as ``state`` holds them, atomically; returns the ids of the conflicts
        open now that are not open in ``state`` (they were opened since, and are gone)."""
        db = self._db
        self._count = None
        open_now = {r[0] for r in db.execute("SELECT conflict_id FROM conflicts WHERE memory_type=? AND key=?"
                                             " AND closed_at IS NULL", (state.memory_type, state.key))}
        self._read_marks = {}
        with self._savepoint():
            if self._digests is not None:
                old_sources, old_items = self._frontiers([(state.memory_type, state.key)]).get(
                    (state.memory_type, state.key), ([], []))
                self._digests.replace(old_sources or old_items,
                                      [(r[0], r[1], r[2], r[3]) for r in state.rows["sources"] or state.rows["items"]])
                self._digests.forget(bucket_of(state.memory_type, state.key))
            for table in KEY_TABLES:
                db.execute(f"DELETE FROM {table} WHERE memory_type=? AND key=?", (state.memory_type, state.key))
                for row in state.rows[table]:
                    db.execute(f"INSERT INTO {table} VALUES ({','.join('?' * len(row))})", row)
        closed_at = 7  # the column of a conflicts row
        return sorted(open_now - {r[0] for r in state.rows["conflicts"] if r[closed_at] is None})

    def _savepoint(self) -> contextlib.AbstractContextManager[None]:
        """All of a change or none of it; works alone or inside a batch() transaction."""
        return self._all_or_nothing("SAVEPOINT change", "RELEASE change", "ROLLBACK TO change", "RELEASE change")

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Apply many writes in one transaction (one commit instead of one per item)."""
        return self._all_or_nothing("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")

    @contextlib.contextmanager
    def _all_or_nothing(self, begin: str, commit: str, *undo: str) -> Iterator[None]:
        self._db.execute(begin)
        try:
            yield
            self._db.execute(commit)
        except BaseException:
            # they followed changes now undone: computed afresh when asked
            self._digests, self._read_marks, self._count = None, {}, None
            # SQLite rolls back by itself after some errors (a full disk mid-statement or at the commit), and keeps
            # the transaction open after others (a refused COMMIT can): left open, the next write's BEGIN failed, and
            # the next COMMIT that worked would have stored the refused change with its own
            if self._db.in_transaction:
                for statement in undo:
                    self._db.execute(statement)
            raise

    # -- conflicts: open until a person (or a write that saw every sibling) settles them --------
    def open_conflict(self, conflict_id: str, memory_type: str, key: str, strategy: str, reason: str,
                      disagreements: tuple[str, ...]) -> bool:
        """Record an open conflict; False when this very conflict is already open."""
        if self._db.execute("SELECT 1 FROM conflicts WHERE conflict_id=? AND closed_at IS NULL",
                            (conflict_id,)).fetchone():
            return False
        self.settle_conflicts([(conflict_id, memory_type, key, strategy, reason, disagreements)], [])
        return True

    def open_conflicts(self, names: Iterable[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        """The ids of the open conflicts of many keys (``(memory_type, key)``); keys with none left out."""
        out: dict[tuple[str, str], set[str]] = {}
        if not self._db.execute("SELECT 1 FROM conflicts WHERE closed_at IS NULL LIMIT 1").fetchone():
            return out  # the usual replica: no conflict open anywhere
        wanted = set(names)
        if not wanted:
            return out
        keys = sorted({key for _, key in wanted})
        for start in range(0, len(keys), KEYS_PER_READ):
            chunk = keys[start:start + KEYS_PER_READ]
            for conflict_id, memory_type, key in self._db.execute(
                    "SELECT conflict_id, memory_type, key FROM conflicts WHERE closed_at IS NULL AND key IN"
                    f" ({','.join('?' * len(chunk))})", chunk):
                if (memory_type, key) in wanted:
                    out.setdefault((memory_type, key), set()).add(conflict_id)
        return out

    def settle_conflicts(self, opened: Sequence[tuple[str, str, str, str, str, tuple[str, ...]]],
                         closed: Sequence[tuple[str, str]]) -> None:
        """Record conflicts opened (``(id, memory_type, key, strategy, reason, disagreements)``), then close
        ``(id, choice)``, in one go (``open_conflict`` opens one; see ``close_conflicts_of``)."""
        now = time.time()
        if opened:
            self._db.executemany(
                "INSERT OR REPLACE INTO conflicts (conflict_id, memory_type, key, strategy, reason, disagreements,"
                " opened_at) VALUES (?,?,?,?,?,?,?)",
                [(cid, mt, key, strategy, reason, json.dumps(list(disagreements)), now)
                 for cid, mt, key, strategy, reason, disagreements in opened])
        if closed:
            self._db.executemany("UPDATE conflicts SET closed_at=?, choice=? WHERE conflict_id=?",
                                 [(now, choice, cid) for cid, choice in closed])

    def close_conflicts_of(self, names: Sequence[tuple[str, str]], choice: str) -> list[tuple[str, str]]:
        """Close every open conflict of ``names`` (``(memory_type, key)``); returns ``(conflict id, key)`` of each
        closed, key by key in the order of ``names``."""
        found: dict[tuple[str, str], list[str]] = {}
        for memory_type, chunk in key_chunks(names):
            for conflict_id, key in self._db.execute(
                    "SELECT conflict_id, key FROM conflicts WHERE memory_type=? AND closed_at IS NULL AND key IN"
                    f" ({','.join('?' * len(chunk))})", (memory_type, *chunk)):
                found.setdefault((memory_type, key), []).append(conflict_id)
        if not found:
            return []
        closed = [(conflict_id, key) for memory_type, key in dict.fromkeys(names)
                  for conflict_id in found.get((memory_type, key), [])]
        now = time.time()
        self._db.executemany("UPDATE conflicts SET closed_at=?, choice=? WHERE conflict_id=?",
                             [(now, choice, conflict_id) for conflict_id, _ in closed])
        return closed

    def conflicts(self, *, include_closed: bool = False) -> list[dict[str, Any]]:
        where = "" if include_closed else " WHERE closed_at IS NULL"
        rows = self._db.execute("SELECT conflict_id, memory_type, key, strategy, reason, disagreements, opened_at,"
                                f" closed_at, choice FROM conflicts{where} ORDER BY opened_at").fetchall()
        return [{"conflict_id": r[0], "memory_type": r[1], "key": r[2], "strategy": r[3], "reason": r[4],
                 "disagreements": json.loads(r[5] or "[]"), "opened_at": r[6], "closed_at": r[7], "choice": r[8]}
                for r in rows]

    # -- outbox: local writes not yet delivered to the mesh (backend away) ---------
    def queue_outgoing(self, memory_type: str, key: str, frame: bytes) -> None:
        self._db.execute("INSERT INTO outbox (memory_type, key, frame) VALUES (?,?,?)", (memory_type, key, frame))
        self._outbox_empty = False

    def has_outgoing(self) -> bool:
        """Cheap check before every write: known empty until something is queued."""
        if self._outbox_empty is None or not self._outbox_empty:
            self._outbox_empty = not self.outgoing(1)
        return not self._outbox_empty

    def outgoing(self, limit: int = 500) -> list[tuple[int, str, str, bytes]]:
        return self._db.execute("SELECT id, memory_type, key, frame FROM outbox ORDER BY id LIMIT ?",
                                (limit,)).fetchall()

    def delivered(self, up_to_id: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE id <= ?", (up_to_id,))
        self._outbox_empty = None

    def get_meta(self, k: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def set_meta(self, k: str, v: str) -> None:
        self._db.execute("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (k, v))
