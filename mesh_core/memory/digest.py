"""Anti-entropy digests (pure): a hash per key bucket over a replica's frontier of original writes.

Replicas that hold the same frontier for every key in a bucket have the same
digest for it, whatever order the writes arrived in, so comparing 64 short
hashes finds what differs without shipping any data.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

BUCKETS = 64


def bucket_of(memory_type: str, key: str, buckets: int = BUCKETS) -> int:
    return zlib.crc32(f"{memory_type}\0{key}".encode()) % buckets


def digests(sources: Iterable[tuple[str, str, str, int]], buckets: int = BUCKETS) -> dict[int, str]:
    """``(memory_type, key, origin, hlc)`` of every frontier write → bucket → digest (empty buckets left out)."""
    lines: dict[int, list[str]] = {}
    for memory_type, key, origin, hlc in sources:
        lines.setdefault(bucket_of(memory_type, key, buckets), []).append(f"{memory_type}\0{key}\0{origin}\0{hlc}")
    return {b: hashlib.sha1("\n".join(sorted(v)).encode()).hexdigest()[:16] for b, v in lines.items()}


def differing(mine: dict[int, str], theirs: dict[int, str]) -> set[int]:
    return {b for b in set(mine) | set(theirs) if mine.get(b) != theirs.get(b)}
