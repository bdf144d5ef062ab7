"""Who may be part of the mesh, and whose records to trust (pure checks; no I/O)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import codec
from .model import NodeInfo, Task


def permitted(patterns: Sequence[str], *identity: str | None) -> bool:
    """True when no allowlist is set, or a glob pattern matches one of ``identity`` (a node's id, name, host)."""
    if not patterns:
        return True
    return any(fnmatchcase(value, pattern) for pattern in patterns for value in identity if value)


def allowed(node: NodeInfo, patterns: Sequence[str]) -> bool:
    """True when no allowlist is set, or a glob pattern matches the node's id, name or host."""
    return permitted(patterns, node.node_id, node.name, node.host)


NOT_ALLOWED = "is not on the allowlist"


@dataclass(frozen=True)
class Trust:
    """The mesh's one rule for whose records to believe, asked by every ingest path (node records, tasks,
    memory writes, whatever reached the medium): the origin must be on the allowlist, and with an api_key
    the record must carry a valid signature over ``parts``."""

    allowlist: tuple[str, ...] = ()
    api_key: str | None = None

    @property
    def believes_all(self) -> bool:
        """No allowlist and no api_key: every record is believed, and a caller need not build what it would
        check (a record's signed parts cost a pack of its payload; a worker checks every task it runs)."""
        return not self.allowlist and not self.api_key

    def refuses(self, identity: Sequence[str | None], signature: str | None, parts: Sequence[str | bytes]) -> str:
        """Why the record is not believed ('' when it is). ``identity``: its origin's id, name and host."""
        if not permitted(self.allowlist, *identity):
            return NOT_ALLOWED
        if self.api_key and not verify(self.api_key, signature, *parts):
            return "is not signed with this mesh's api_key" if not signature else "has a bad signature"
        return ""


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


# A task names its submitter's name and host in its context beside the submitter's id, so a worker judges the
# allowlist from the task alone when it has no record of the submitter (a client writes none on a shared store).
SUBMITTER_NAME, SUBMITTER_HOST = "_submitter_name", "_submitter_host"


def task_parts(task: Task) -> tuple[str | bytes, ...]:
    """What a worker acts on: the task's id, type, payload, requirements and who submitted it (id, name, host)."""
    name, host = task_submitter(task)[1:]
    return (task.task_id, task.task_type, codec.pack(task.payload), task.submitter_id or "",
            ",".join(sorted(task.required_capabilities)), str(task.max_retries),
            "" if task.timeout_s is None else repr(float(task.timeout_s)), name or "", host or "")


def task_submitter(task: Task) -> tuple[str | None, ...]:
    """The submitter of a task as the task names it: id, name, host (None where it names none)."""
    context = task.context if isinstance(task.context, dict) else {}
    return (task.submitter_id, *(v if isinstance(v, str) else None
                                 for v in (context.get(SUBMITTER_NAME), context.get(SUBMITTER_HOST))))


# A memory frame names its origin's name and host beside its id, so every replica judges the allowlist the
# same way from the frame alone (the origin's node record may be gone by the time a late replica reads it).
ORIGIN_NAME, ORIGIN_HOST = "on", "oh"


def memory_parts(wire: dict[str, Any]) -> tuple[str | bytes, ...]:
    """A memory item on the wire (``item_to_wire``): key, origin (id, name, host), clock, vector, value, flags."""
    vv = ",".join(f"{k}={v}" for k, v in sorted(wire.get("vv", {}).items()))
    return (str(wire.get("t")), str(wire.get("k")), str(wire.get("o")), str(wire.get("h")), vv,
            codec.pack(wire.get("v")), str(wire.get("p", 5)), str(bool(wire.get("d", False))),
            str(wire.get(ORIGIN_NAME, "")), str(wire.get(ORIGIN_HOST, "")))



def memory_origin(wire: dict[str, Any]) -> tuple[str | None, ...]:
    """The origin of a memory frame as the allowlist sees it: id, name, host."""
    return tuple(v if isinstance(v, str) else None for v in (wire.get("o"), wire.get(ORIGIN_NAME),
                                                              wire.get(ORIGIN_HOST)))


def without_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (log lines must not carry secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparseable: hide whatever stands before the host
        _, at, host = url.rpartition("@")
        return f"***@{host}" if at else url
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))
