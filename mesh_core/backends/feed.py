"""A submitter's result feed, the entries that came in wake-ups (SQLite): the rule that says when they stand for a
read of the feed, in one place, with no I/O.

A worker that records outcomes sends each submitter its new feed entries after the commit, each with its place in
that submitter's feed: its ``seq`` and the ``prev`` seq of the submitter's entry before it (0: none), read in the
same write transaction, so no entry of that submitter lies between the two. An entry is then the next one after a
cursor exactly when ``prev <= cursor < seq``, whatever other submitters' entries are numbered, and a run of them
that chains from the cursor is what a read from it would return first. A wake-up lost or late leaves a gap, and a
feed entry made elsewhere (a retry given up, a cancel) comes with a bare wake-up (``news``): either way the feed is
read, so an entry comes no later than it would without this.
"""

from __future__ import annotations

from collections.abc import Iterable

from .contracts import Finished

FEED_ENTRIES_KEPT = 10_000  # entries held for a read that has not come; past it, new ones are left to the read


class FeedFromWakeups:
    """Feed entries come in wake-ups and not yet taken, by seq."""

    def __init__(self) -> None:
        self._came: dict[int, tuple[int, Finished]] = {}  # seq → (prev, entry)
        self.news = True  # a bare 'results' wake-up came since the feed was last read (or it never was)
        self.taken = 0  # entries handed over with no read of the feed
        self.left = 0  # entries that came when FEED_ENTRIES_KEPT were held (left to a read)
        self.reads = 0  # reads of the feed past a cursor (what the wake-ups spare, when they can)

    def arrived(self, entries: Iterable[tuple[int, int, Finished]]) -> None:
        """Entries ``(prev, seq, entry)`` from a wake-up."""
        for prev, seq, entry in entries:
            if len(self._came) >= FEED_ENTRIES_KEPT:
                self.left += 1
            elif 0 <= prev < seq:
                self._came[seq] = (prev, entry)

    def take(self, cursor: int) -> tuple[list[Finished], int, bool]:
        """The entries that chain from ``cursor``, the cursor past them, and whether the feed needs no read besides
        (no gap met, no bare wake-up since the last read). Entries at or before ``cursor`` are dropped (seen)."""
        came = self._came
        out: list[Finished] = []
        for seq in sorted(came):
            prev, entry = came[seq]
            if seq <= cursor:
                del came[seq]
            elif prev <= cursor:
                del came[seq]
                out.append(entry)
                cursor = seq
            else:  # an entry between the cursor and this one did not come (yet)
                self.taken += len(out)
                return out, cursor, False
        self.taken += len(out)
        return out, cursor, not self.news

    def read_through(self, cursor: int) -> None:
        """The feed was read up to ``cursor``: entries at or before it are seen."""
        for seq in [s for s in self._came if s <= cursor]:
            del self._came[seq]
