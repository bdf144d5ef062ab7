"""Anti-entropy digests (pure): a value per key bucket over a replica's frontier of original writes.

A bucket's digest is the sum, mod 2**64, of a hash of each of its frontier lines ``(memory_type, key, origin,
stamp)``. A sum does not depend on the order the writes arrived in, so replicas that hold the same frontier for
every key in a bucket have the same digest for it, and comparing 64 short values finds what differs without
shipping any data. It also follows changes (``BucketDigests``): replacing a key's frontier subtracts its old
lines and adds the new ones, so a replica keeps its digests as it applies writes instead of rehashing them all.

Under steady writes two replicas' digests differ in every bucket, each a moment behind the other, and most of that
is lag, not loss. A replica's frontier only moves forward, so a peer whose digest for a bucket is one this replica
had lately holds nothing there it lacks now: ``BucketDigests.had`` tells, and an anti-entropy round reads only the
buckets where some peer's digest is not one of those.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

BUCKETS = 64
Line = tuple[str, str, str, int]  # (memory_type, key, origin, stamp): one frontier write (the stamp: its HLC)
_MASK = (1 << 64) - 1
# Past digests kept per bucket (about 80 bytes each, at most ~5 MB for all 64): a peer's digest is up to a round
# old, and at some 30 changes a second to a bucket (2,000 writes/s) this covers about half a minute.
LATELY_KEPT = 1024
_KEYED = hashlib.blake2b(digest_size=8, key=b"mesh-digest")  # copied per line: the key's block is hashed once


def bucket_of(memory_type: str, key: str, buckets: int = BUCKETS) -> int:
    return zlib.crc32(f"{memory_type}\0{key}".encode()) % buckets


def line_hash(memory_type: str, key: str, origin: str, stamp: int) -> int:
    """A line's share of its bucket's digest: 64 bits of a keyed BLAKE2b."""
    h = _KEYED.copy()
    h.update(f"{memory_type}\0{key}\0{origin}\0{stamp}".encode())
    return int.from_bytes(h.digest(), "big")


class BucketDigests:
    """Per bucket the sum of its lines' hashes and how many lines it holds, updated line by line; and the sums each
    bucket had after its last ``kept`` changes (``had``; 0: none kept, for digests nobody asks that of)."""

    __slots__ = ("counts", "kept", "lately", "sums")

    def __init__(self, buckets: int = BUCKETS, kept: int = LATELY_KEPT) -> None:
        self.sums = [0] * buckets
        self.counts = [0] * buckets
        self.kept = kept
        self.lately: list[dict[int, None]] = [{} for _ in range(buckets)]  # oldest first

    def add(self, lines: Iterable[Line]) -> None:
        self._remember(self._change(lines, 1))

    def remove(self, lines: Iterable[Line]) -> None:
        """Take out lines added before (a line never added leaves the digests wrong: callers remove what they hold)."""
        self._change(lines, -1)

    def replace(self, gone: Iterable[Line], came: Iterable[Line]) -> None:
        """One change of the frontier: ``gone`` out, ``came`` in; the sums it leaves are remembered, not the one
        between (no replica holds a frontier with the old lines out and the new ones not in)."""
        touched = self._change(gone, -1) | self._change(came, 1)
        self._remember(touched)

    def forget(self, bucket: int) -> None:
        """Forget the bucket's past sums (a change was undone: a sum it had held a write this frontier no longer
        holds, and a peer with that sum would hold something this one lacks)."""
        self.lately[bucket].clear()

    def had(self, bucket: int, digest: str | None) -> bool:
        """Whether ``digest`` (``as_dict``'s form; None: the bucket empty) is this bucket's now or after one of its
        last ``kept`` changes. A replica whose digest it is holds nothing in the bucket this one lacks: its
        lines are ones this frontier held, or ones a later write here replaced."""
        if digest is None:
            return True
        try:
            value = int(digest, 16)
        except (TypeError, ValueError):
            return False
        return (value == self.sums[bucket] and self.counts[bucket] > 0) or value in self.lately[bucket]

    def _change(self, lines: Iterable[Line], sign: int) -> set[int]:
        sums, counts, buckets = self.sums, self.counts, len(self.sums)
        touched = set()
        for memory_type, key, origin, stamp in lines:
            bucket = bucket_of(memory_type, key, buckets)
            sums[bucket] = (sums[bucket] + sign * line_hash(memory_type, key, origin, stamp)) & _MASK
            counts[bucket] += sign
            touched.add(bucket)
        return touched

    def _remember(self, buckets: Iterable[int]) -> None:
        if not self.kept:
            return
        for bucket in buckets:
            if not self.counts[bucket]:
                continue
            lately, value = self.lately[bucket], self.sums[bucket]
            lately.pop(value, None)  # the newest last
            lately[value] = None
            if len(lately) > self.kept:
                del lately[next(iter(lately))]

    def as_dict(self) -> dict[int, str]:
        """Bucket → digest (16 hex digits); empty buckets left out."""
        return {b: f"{s:016x}" for b, (s, n) in enumerate(zip(self.sums, self.counts, strict=True)) if n}


def digests(sources: Iterable[Line], buckets: int = BUCKETS) -> dict[int, str]:
    """``(memory_type, key, origin, hlc)`` of every frontier write → bucket → digest (empty buckets left out)."""
    out = BucketDigests(buckets, kept=0)
    out.add(sources)
    return out.as_dict()


def differing(mine: dict[int, str], theirs: dict[int, str]) -> set[int]:
    return {b for b in set(mine) | set(theirs) if mine.get(b) != theirs.get(b)}
