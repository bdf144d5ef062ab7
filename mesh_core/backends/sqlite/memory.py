"""``sqlite_local`` memory: the append-only log of memory frames, its cursors, digests and compaction."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ...memory.digest import bucket_of
from ..contracts import MEMORY_VERSIONS_KEPT, Topic
from ..shared import CorruptRecord, MemoryEntry
from .quarantine import Removal, SqliteQuarantine
from .store import bounded, fitting

COMPACT_CHUNK = 1000  # log entries dropped per transaction (each holds the write lock some 15 ms, not the whole drop)
COMPACT_PAUSE_SECONDS = 0.002
READ_BUDGET_BYTES = 8 * 1024 * 1024  # frames one log read loads at most (past its first row)
INLINE_KEYS = 16  # a read of at most this many keys runs on the loop's thread (no hand-over to the read thread)
TEXT_OR_BYTES = (bytes, str)  # a tuple: a union type is built anew at each use, here once per row read
ACK_COLUMNS = bounded(("node_id", "seq"), whole=("node_id",))
DIGEST_COLUMNS = bounded(("node_id", "bucket", "digest"), whole=("node_id", "bucket"))


def _latest_removal(r: Sequence[Any]) -> tuple[str, str, Removal]:
    return "memory", f"{r[0]}/{r[1]} from {r[2]}", [
        ("DELETE FROM memory_latest WHERE memory_type=? AND key=? AND origin=?", (r[0], r[1], r[2]))]


def _version_removal(r: Sequence[Any]) -> tuple[str, str, Removal]:
    return "memory", f"{r[0]}/{r[1]} version {r[2]}", [
        ("DELETE FROM memory_versions WHERE memory_type=? AND key=? AND seq=?", (r[0], r[1], r[2]))]


class SqliteMemory(SqliteQuarantine):
    """The MemoryLog part of ``sqlite_local``: ``memory_log`` holds every entry, ``memory_latest`` the newest."""

    def _memory_columns(self, *columns: str, whole: Sequence[str]) -> str:
        """``columns`` of a memory table, bounded (a frame up to the frame limit); ``whole``: its key columns."""
        return bounded(columns, {"frame": self.limits.max_frame_bytes}, whole)

    @property
    def _latest_row(self) -> str:
        key = ("memory_type", "key", "origin")
        return f"SELECT {self._memory_columns(*key, 'frame', whole=key)} FROM memory_latest"

    async def _publish_batch(self, items: list[MemoryEntry]) -> list[int]:
        now = time.time()

        def append(conn: sqlite3.Connection) -> tuple[list[int], list[str]]:
            seqs = [conn.execute(
                "INSERT INTO memory_log (origin, memory_type, key, frame, created_at) VALUES (?,?,?,?,?)",
                (origin, mt, key, frame, now)).lastrowid or 0
                for origin, mt, key, frame, _ in items]
            conn.executemany(
                "INSERT INTO memory_latest (memory_type, key, origin, frame, bucket) VALUES (?,?,?,?,?)"
                " ON CONFLICT (memory_type, key, origin) DO UPDATE SET frame=excluded.frame",
                [(mt, key, origin, frame, bucket_of(mt, key)) for origin, mt, key, frame, _ in items])
            conn.executemany("INSERT INTO memory_versions (memory_type, key, seq, frame) VALUES (?,?,?,?)",
                             [(mt, key, seq, frame) for seq, (_, mt, key, frame, _) in zip(seqs, items, strict=True)])
            conn.executemany(
                "DELETE FROM memory_versions WHERE memory_type=? AND key=? AND seq < (SELECT seq FROM memory_versions"
                " WHERE memory_type=? AND key=? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                [(mt, key, mt, key, MEMORY_VERSIONS_KEPT - 1) for mt, key in {(i[1], i[2]): None for i in items}])
            # Read the peers in the same transaction so a node that joined a moment ago is woken too.
            return seqs, [r[0] for r in conn.execute(
                "SELECT node_id FROM nodes WHERE left_mesh=0 AND last_seen>?", (now - 3600,)).fetchall()]
        seqs, self._peer_ids = await self._write(append)
        if any(broadcast for *_, broadcast in items):
            self._broadcast(Topic.MEMORY)
        return seqs

    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        await self._write(lambda c: c.execute(
            "INSERT INTO memory_acks (node_id, seq) VALUES (?, ?) ON CONFLICT(node_id) DO UPDATE SET"
            " seq=max(seq, excluded.seq)", (node_id, int(cursor or 0))))

    async def memory_acks(self) -> dict[str, Any]:
        rows = await self._read(lambda c: c.execute(
            f"SELECT {ACK_COLUMNS} FROM memory_acks").fetchall())
        acks = dict(self.readable("memory ack", rows, _ack, aside=lambda r: (
            "ack", r[0], [("DELETE FROM memory_acks WHERE node_id=?", (r[0],))])))
        await self._settle_aside()
        return acks

    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        return int(cursor or 0) >= int(target or 0)

    async def put_digests(self, node_id: str, digests: dict[int, str]) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM memory_digests WHERE node_id=?", (node_id,))
            # bucket -1 marks "this node has published", so an empty replica still counts as a peer
            rows = [(node_id, -1, "")] + [(node_id, b, d) for b, d in digests.items()]
            conn.executemany("INSERT INTO memory_digests VALUES (?,?,?)", rows)
        await self._write(put)

    async def peer_digests(self) -> dict[str, dict[int, str]]:
        rows = await self._read(lambda c: c.execute(
            f"SELECT {DIGEST_COLUMNS} FROM memory_digests").fetchall())
        out: dict[str, dict[int, str]] = {}
        for node_id, bucket, digest in self.readable("digest row", rows, _digest, aside=lambda r: (
                "digest", f"{r[0]} bucket {r[1]}", [("DELETE FROM memory_digests WHERE node_id=? AND bucket=?",
                                                     (r[0], r[1]))])):
            marks = out.setdefault(node_id, {})
            if bucket >= 0:
                marks[bucket] = digest
        await self._settle_aside()
        return out

    async def memory_bucket(self, bucket: int) -> list[bytes]:
        return await self._latest_frames(f"{self._latest_row} WHERE bucket=?", (bucket,))

    async def _latest_frames(self, sql: str, params: Sequence[Any], *, inline: bool = False) -> list[bytes]:
        """The frames of ``memory_latest`` rows (``_latest_row`` …); an unreadable one is quarantined. ``inline``: a
        few keys read by their index, on the hot path of a client's write or read (see ``SqliteStore._run``)."""
        rows = await self._read(lambda c: c.execute(sql, params).fetchall(), inline=inline)
        frames = self.readable("memory row", rows, lambda r: self.frame_checked(fitting(r, "memory row")[3]),
                               aside=_latest_removal)
        await self._settle_aside()
        return frames

    async def memory_versions(self, memory_type: str | None, key: str) -> list[bytes]:
        # The types come from memory_latest (keyed by the key first) when none is given.
        types = "memory_type=?" if memory_type is not None else \
            "memory_type IN (SELECT memory_type FROM memory_latest WHERE key=?)"
        args = (key if memory_type is None else memory_type, key)
        rows = await self._read(lambda c: c.execute(
            f"SELECT {self._memory_columns('memory_type', 'key', 'seq', 'frame', whole=('memory_type', 'key', 'seq'))}"
            f" FROM memory_versions WHERE {types} AND key=? ORDER BY seq", args).fetchall())
        frames = self.readable("memory version", rows, lambda r: self.frame_checked(fitting(r, "memory version")[3]),
                               aside=_version_removal)
        await self._settle_aside()
        return frames

    async def memory_horizon(self) -> Any:
        def read(conn: sqlite3.Connection) -> int | None:
            oldest = conn.execute("SELECT min(seq) FROM memory_log").fetchone()[0]
            if oldest is not None:
                return oldest - 1 if oldest > 1 else None
            top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='memory_log'").fetchone()
            return int(top[0]) if top and top[0] else None  # everything written so far was dropped
        return await self._read(read)

    async def compact_memory(self, applied_everywhere: Any) -> int:
        """Drop the log entries before ``applied_everywhere``, COMPACT_CHUNK per transaction: one delete of the 12,000
        entries 5 s of steady writes leave held the file's write lock ~200 ms, and every writer of the mesh waited."""
        upto = int(applied_everywhere or 0)
        dropped = 0
        while True:
            n = await self._write(lambda c: c.execute(
                "DELETE FROM memory_log WHERE seq IN (SELECT seq FROM memory_log WHERE seq < ? ORDER BY seq LIMIT ?)",
                (upto, COMPACT_CHUNK)).rowcount, inline=False)  # a bulk delete: off the loop's thread
            dropped += n
            if n < COMPACT_CHUNK:
                return dropped
            await asyncio.sleep(COMPACT_PAUSE_SECONDS)  # the writers that waited for the lock get it first

    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        start = int(after or 0)
        columns = self._memory_columns("seq", "frame", "memory_type", "key", "origin", whole=("seq",))

        def read(conn: sqlite3.Connection) -> list[Any]:
            out, size = [], 0
            for row in conn.execute(f"SELECT {columns} FROM memory_log WHERE seq>? ORDER BY seq LIMIT ?",
                                    (start, limit)):
                out.append(row)
                size += len(row[1]) if isinstance(row[1], TEXT_OR_BYTES) else 0
                if size > READ_BUDGET_BYTES:  # the next read goes on from this row
                    break
            return out
        rows = await self._read(read)
        frames = self.readable("memory log row", rows, lambda r: self.frame_checked(fitting(r, "memory log row")[1]),
                               aside=lambda r: (
            "memory", f"log {r[0]} ({r[2]}/{r[3]} from {r[4]})", [("DELETE FROM memory_log WHERE seq=?", (r[0],))]))
        await self._settle_aside()
        return frames, (rows[-1][0] if rows else start)

    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        wanted = list(dict.fromkeys(keys))

        frames: list[bytes] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            frames += await self._latest_frames(f"{self._latest_row} WHERE memory_type=? AND key IN ({marks})",
                                                [memory_type, *chunk], inline=len(chunk) <= INLINE_KEYS)
        return frames

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        if memory_type is None:
            return await self._latest_frames(f"{self._latest_row} WHERE key=?", (key,), inline=True)
        return await self._latest_frames(f"{self._latest_row} WHERE key=? AND memory_type=?", (key, memory_type),
                                         inline=True)


def _ack(r: Sequence[Any]) -> tuple[str, int]:
    r = fitting(r, "memory ack")
    if not isinstance(r[1], int) or isinstance(r[1], bool):
        raise CorruptRecord(f"memory ack of {r[0]!r}: cursor {r[1]!r} is not a whole number")
    return str(r[0]), r[1]


def _digest(r: Sequence[Any]) -> tuple[str, int, str]:
    r = fitting(r, "digest")
    if not isinstance(r[1], int) or not isinstance(r[2], str):
        raise CorruptRecord(f"digest of {r[0]!r}: bucket {r[1]!r} / digest {r[2]!r} of the wrong type")
    return str(r[0]), r[1], r[2]
