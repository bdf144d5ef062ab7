"""Who may be part of the mesh, and whose records to trust (pure checks; no I/O)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import codec
from .model import NodeInfo, Task


def allowed(node: NodeInfo, patterns: Sequence[str]) -> bool:
    """True when no allowlist is set, or a glob pattern matches the node's id, name or host."""
    if not patterns:
        return True
    return any(fnmatchcase(value, pattern) for pattern in patterns
               for value in (node.node_id, node.name, node.host) if value)


# -- record signing: with a shared api_key every record a node writes carries an HMAC ------------------
# What is signed is the record's identity and content, so a record made or changed by anyone without the
# key is refused by every node that has it. Signatures are hex HMAC-SHA256 digests, compared in constant time.

def sign(key: str, *parts: str | bytes) -> str:
    mac = hmac.new(key.encode(), digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        mac.update(len(data).to_bytes(4, "big"))  # length-prefixed: no two part lists sign alike
        mac.update(data)
    return mac.hexdigest()


def verify(key: str, signature: str | None, *parts: str | bytes) -> bool:
    return bool(signature) and hmac.compare_digest(sign(key, *parts), signature or "")


def node_parts(node: NodeInfo) -> tuple[str, ...]:
    """A node record's identity and abilities (not its load, which changes every heartbeat)."""
    return (node.node_id, str(node.incarnation), node.name, node.role.value, node.node_type.value, node.host,
            str(node.port), ",".join(sorted(node.task_types)), ",".join(sorted(node.capabilities)))


def task_parts(task: Task) -> tuple[str | bytes, ...]:
    """What a worker acts on: the task's id, type, payload, requirements and who submitted it."""
    return (task.task_id, task.task_type, codec.pack(task.payload), task.submitter_id or "",
            ",".join(sorted(task.required_capabilities)), str(task.max_retries),
            "" if task.timeout_s is None else repr(float(task.timeout_s)))


def memory_parts(wire: dict[str, Any]) -> tuple[str | bytes, ...]:
    """A memory item on the wire (``item_to_wire``): key, origin, clock, vector, value, flags."""
    vv = ",".join(f"{k}={v}" for k, v in sorted(wire.get("vv", {}).items()))
    return (str(wire.get("t")), str(wire.get("k")), str(wire.get("o")), str(wire.get("h")), vv,
            codec.pack(wire.get("v")), str(wire.get("p", 5)), str(bool(wire.get("d", False))))


def without_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (log lines must not carry secrets)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))
