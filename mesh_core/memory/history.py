"""A key's replicated history (pure): versions named by their stamp, ordered the same way on every replica.

The medium keeps every key's newest published versions; each reader drops the
key's current value(s) and numbers the rest newest first, so index 1 is the
version just before the current one on every replica and client that read the
same medium.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import MemoryItem


def version_id(item: MemoryItem) -> str:
    """A version's name on every replica: its HLC stamp (hex) and the first eight characters of its origin."""
    return f"{item.hlc:x}.{item.origin[:8]}"


def _stamp(item: MemoryItem) -> tuple[str, int, str]:
    return item.memory_type, item.hlc, item.origin


def earlier_versions(versions: Iterable[MemoryItem], current: Iterable[MemoryItem], limit: int) -> list[dict[str, Any]]:
    """The versions that are not current, each once, newest stamp first (HLC, then origin), at most ``limit``."""
    now = {_stamp(c) for c in current}
    earlier = {_stamp(v): v for v in versions if _stamp(v) not in now}
    ordered = sorted(earlier.values(), key=lambda v: (v.hlc, v.origin), reverse=True)[:limit]
    return [{"index": n, "version": version_id(v), "memory_type": v.memory_type, "origin": v.origin, "hlc": v.hlc,
             "value": v.value, "vv": v.vv, "tombstone": v.tombstone} for n, v in enumerate(ordered, 1)]


def pick_version(rows: list[dict[str, Any]], version: int | str) -> dict[str, Any] | None:
    """The row ``version`` names: an index (int), a version id, or a prefix of exactly one version id."""
    if isinstance(version, int):
        return next((r for r in rows if r["index"] == version), None)
    exact = [r for r in rows if r["version"] == version]
    found = exact or [r for r in rows if r["version"].startswith(version)]
    return found[0] if len(found) == 1 else None
