"""``sqlite_local`` results in wake-ups: a worker that records outcomes sends each submitter its new result-feed
entries after the commit, and the submitter takes them without reading the feed (``backends.feed`` has the rule
that says when they stand for that read). At idle this takes one read transaction off every round trip."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ... import codec
from ..contracts import Completion, Finished, Topic
from ..feed import FeedFromWakeups
from ..shared import FINISHED_FIELDS, runs_of_bytes
from .quarantine import task_removal
from .started import DATAGRAM_BYTES
from .starting import SqliteStarting
from .store import FINISHED

# Inside the write transaction that recorded an outcome: the submitter's newest feed entries, that one and the one
# before it (the feed is written only inside write transactions, so nothing of that submitter lies between them)
FEED_PLACE_SQL = "SELECT seq FROM finished WHERE submitter_id=? ORDER BY seq DESC LIMIT 2"
RESULT_IN_WAKEUP_BYTES = 16 * 1024  # a larger result is left out of the wake-up: its waiter reads the task
ENTRY_FIELDS = len(FINISHED_FIELDS) + 3  # prev, seq, the feed's fields, complete


class SqliteFinishing(SqliteStarting):
    """The feed entries a write made, sent to their submitters (``_feed_place``, ``_send_feed``); those that came
    here, taken by ``finished_for`` instead of a read when they chain from its cursor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._feed = FeedFromWakeups()

    def _deliver(self, topic: str) -> None:
        if topic == Topic.RESULTS:
            self._feed.news = True  # a bare wake-up: some feed entry did not come with it
        super()._deliver(topic)

    def _feeds_in_wakeups(self, submitter_id: str) -> bool:
        """Whether ``submitter_id``'s feed entries go in wake-ups: on a file the mesh shares, anyone's; on one node's
        own file (grpc_mesh), only that node's (the others hear of their tasks over the wire)."""
        return self.start_at_enqueue or (self._local is not None and submitter_id == self._local.node_id)

    def _feed_place(self, conn: sqlite3.Connection, submitter_id: str) -> tuple[int, int]:
        """Inside the write that just made ``submitter_id``'s newest feed entry: (prev, seq) of it."""
        seqs = conn.execute(FEED_PLACE_SQL, (submitter_id,)).fetchall()
        return (seqs[1][0] if len(seqs) > 1 else 0), seqs[0][0]

    @staticmethod
    def feed_entry(prev: int, seq: int, c: Completion, node_name: str | None, finished_at: float) -> list[Any]:
        """A recorded completion as its submitter's feed entry in a wake-up (``FINISHED_FIELDS`` between its place
        and whether the result is in it)."""
        frame = c.result_frame
        whole = frame is None or len(frame) <= RESULT_IN_WAKEUP_BYTES
        return [prev, seq, c.task_id, c.status.value, c.attempt, c.node_id, node_name, finished_at,
                frame if whole else None, c.error, whole]

    def _send_feed(self, entries: dict[str, list[list[Any]]]) -> set[str]:
        """Send each submitter its entries (this node's own: taken here); returns the submitters that could not be
        sent them (to wake bare)."""
        own = self._local.node_id if self._local else None
        unsent = set()
        for submitter_id, rows in entries.items():
            if submitter_id == own:
                self._results_arrived(self._entries(rows))
                continue
            for part in runs_of_bytes(rows, lambda row: len(row[8] or b"") + 512, DATAGRAM_BYTES):
                unsent |= self._send_part(submitter_id, part)
        return unsent

    def _send_part(self, submitter_id: str, rows: list[list[Any]]) -> set[str]:
        # "r" after the mark: a node of an older release takes the datagram for a bare wake-up, and reads the feed
        sent = self._send_records(submitter_id, FINISHED + b"r" + codec.pack(rows))
        return set() if sent else {submitter_id}

    def _finished_here(self, body: bytes) -> None:
        """Feed entries for this node, in a wake-up; a wake-up that cannot be read is counted, and the feed read."""
        try:
            rows = codec.unpack(body[1:])
            if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == ENTRY_FIELDS for r in rows):
                raise ValueError("not result-feed entries")
            entries = self._entries(rows)
        except (codec.CodecError, ValueError, TypeError) as exc:
            self.refuse("result wake-up", exc)
            self._deliver(Topic.RESULTS)
            return
        self._results_arrived(entries)

    def _entries(self, rows: Sequence[list[Any]]) -> list[tuple[int, int, Finished]]:
        out = []
        for row in rows:
            prev, seq = row[0], row[1]
            if type(prev) is not int or type(seq) is not int or type(row[-1]) is not bool:
                raise ValueError("a result-feed entry's place is not two whole numbers")
            out.append((prev, seq, self.finished_from_fields(dict(zip(FINISHED_FIELDS, row[2:-1], strict=True)),
                                                             complete=row[-1])))
        return out

    def _results_arrived(self, entries: list[tuple[int, int, Finished]]) -> None:
        self._feed.arrived(entries)
        super()._deliver(Topic.RESULTS)  # the results loop takes them: no news of the feed

    async def finished_for(self, submitter_id: str, after: int | None,
                           wait: float = 0.0) -> tuple[list[Finished], int]:
        feed = self._feed if self._local is not None and submitter_id == self._local.node_id else None
        came: list[Finished] = []
        if feed is not None and after is not None:
            came, after, whole = feed.take(after)
            if whole and came:
                return came, after
        if feed is not None and after is not None:
            feed.news = False  # before the read: a wake-up during it is news for the next one
            feed.reads += 1

        def read(conn: sqlite3.Connection) -> tuple[list[Finished], int]:
            if after is None:
                top = conn.execute("SELECT coalesce(max(seq), 0) FROM finished").fetchone()[0]
                return [], top
            rows = conn.execute(
                "SELECT f.seq, t.task_id, t.status, t.attempt, t.node_id, t.node_name, t.finished_at, t.result,"
                " t.error FROM finished f JOIN tasks t ON t.task_id = f.task_id"
                " WHERE f.submitter_id=? AND f.seq>? ORDER BY f.seq", (submitter_id, after)).fetchall()
            out = self.readable("result feed entry", rows,
                                lambda r: self.finished_from_fields(dict(zip(FINISHED_FIELDS, r[1:], strict=True))),
                                aside=lambda r: ("task", r[1], task_removal(r[1])))
            return out, (rows[-1][0] if rows else after)
        found, cursor = await self._read_settled(read, inline=True)  # what a waiting submitter reads next: a hot path
        if feed is not None:
            feed.read_through(cursor)
        return came + found, cursor

    def feed_counts(self) -> dict[str, int]:
        return {"results_in_wakeups": self._feed.taken, "results_left_to_reads": self._feed.left,
                "result_feed_reads": self._feed.reads}
