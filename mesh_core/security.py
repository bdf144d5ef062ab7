"""Who may be part of the mesh (pure checks; no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from .model import NodeInfo


def allowed(node: NodeInfo, patterns: Sequence[str]) -> bool:
    """True when no allowlist is set, or a glob pattern matches the node's id, name or host."""
    if not patterns:
        return True
    return any(fnmatchcase(value, pattern) for pattern in patterns
               for value in (node.node_id, node.name, node.host) if value)
