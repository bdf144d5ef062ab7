"""Anti-entropy digests (pure): a value per key bucket over a replica's frontier of original writes.

A bucket's digest is the sum, mod 2**64, of a hash of each of its frontier lines ``(memory_type, key, origin,
stamp)``. A sum does not depend on the order the writes arrived in, so replicas that hold the same frontier for
every key in a bucket have the same digest for it, and comparing 64 short values finds what differs without
shipping any data. It also follows changes (``BucketDigests``): replacing a key's frontier subtracts its old
lines and adds the new ones, so a replica keeps its digests as it applies writes instead of rehashing them all.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

BUCKETS = 64
Line = tuple[str, str, str, int]  # (memory_type, key, origin, stamp): one frontier write (the stamp: its HLC)
_MASK = (1 << 64) - 1


def bucket_of(memory_type: str, key: str, buckets: int = BUCKETS) -> int:
    return zlib.crc32(f"{memory_type}\0{key}".encode()) % buckets


def line_hash(memory_type: str, key: str, origin: str, stamp: int) -> int:
    """A line's share of its bucket's digest: 64 bits of a keyed BLAKE2b."""
    return int.from_bytes(hashlib.blake2b(f"{memory_type}\0{key}\0{origin}\0{stamp}".encode(), digest_size=8,
                                          key=b"mesh-digest").digest(), "big")


class BucketDigests:
    """Per bucket the sum of its lines' hashes and how many lines it holds, updated line by line."""

    __slots__ = ("counts", "sums")

    def __init__(self, buckets: int = BUCKETS) -> None:
        self.sums = [0] * buckets
        self.counts = [0] * buckets

    def add(self, lines: Iterable[Line]) -> None:
        self._change(lines, 1)

    def remove(self, lines: Iterable[Line]) -> None:
        """Take out lines added before (a line never added leaves the digests wrong: callers remove what they hold)."""
        self._change(lines, -1)

    def _change(self, lines: Iterable[Line], sign: int) -> None:
        sums, counts, buckets = self.sums, self.counts, len(self.sums)
        for memory_type, key, origin, stamp in lines:
            bucket = bucket_of(memory_type, key, buckets)
            sums[bucket] = (sums[bucket] + sign * line_hash(memory_type, key, origin, stamp)) & _MASK
            counts[bucket] += sign

    def as_dict(self) -> dict[int, str]:
        """Bucket → digest (16 hex digits); empty buckets left out."""
        return {b: f"{s:016x}" for b, (s, n) in enumerate(zip(self.sums, self.counts, strict=True)) if n}


def digests(sources: Iterable[Line], buckets: int = BUCKETS) -> dict[int, str]:
    """``(memory_type, key, origin, hlc)`` of every frontier write → bucket → digest (empty buckets left out)."""
    out = BucketDigests(buckets)
    out.add(sources)
    return out.as_dict()


def differing(mine: dict[int, str], theirs: dict[int, str]) -> set[int]:
    return {b for b in set(mine) | set(theirs) if mine.get(b) != theirs.get(b)}
