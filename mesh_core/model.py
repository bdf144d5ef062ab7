"""The mesh's nouns: nodes, tasks, memory items and conflicts (plain data, no I/O)."""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from typing import Any

from . import codec


class NodeType(enum.StrEnum):
    GENERAL = "general"
    LANGUAGE_EXPERT = "language_expert"
    PLANNING_ONLY = "planning_only"
    SENSOR_CONNECTED = "sensor_connected"
    COORDINATION_HUB = "coordination_hub"


class NodeRole(enum.StrEnum):
    """A worker executes tasks; a client (one-shot CLI command) only submits and reads."""

    WORKER = "worker"
    CLIENT = "client"


class NodeStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


LIVE = (NodeStatus.ACTIVE, NodeStatus.SUSPECT)  # may still be alive: a suspect node is only late so far

STATUS_LIGHTS = {
    NodeStatus.ACTIVE: "🟢",
    NodeStatus.SUSPECT: "🟡",
    NodeStatus.DEAD: "🔴",
    NodeStatus.LEFT: "⚪",
}


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_TASK_STATUSES


FINAL_TASK_STATUSES = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD_LETTER, TaskStatus.CANCELLED}
)


class TaskPriority(enum.IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, value: str | int | TaskPriority) -> TaskPriority:
        if isinstance(value, TaskPriority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            allowed = ", ".join(p.name.lower() for p in cls)
            raise ValueError(f"priority {value!r} is not one of {allowed}") from None


@dataclass
class NodeInfo:
    """One node as the mesh sees it: identity, abilities and its last heartbeat."""

    node_id: str
    name: str
    node_type: NodeType = NodeType.GENERAL
    role: NodeRole = NodeRole.WORKER
    host: str = ""
    port: int = 0
    pid: int = 0
    incarnation: int = 1
    capabilities: frozenset[str] = frozenset()
    task_types: frozenset[str] = frozenset()
    capacity: int = 100
    running: int = 0
    queued: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    last_seen: float = 0.0
    left: bool = False
    heartbeat_seq: int = 0  # changes with every heartbeat: liveness is judged by seeing it change
    signature: str = ""  # HMAC of the record's identity with the mesh's api_key (empty without one)

    @property
    def load(self) -> float:
        """Fraction of capacity in use: (running + queued) / capacity."""
        return (self.running + self.queued) / self.capacity if self.capacity > 0 else 1.0


@dataclass
class Attempt:
    """One try of a task on one node; kept for every attempt, including failures."""

    attempt: int
    node_id: str
    node_name: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class Task:
    """A unit of work routed to one node at a time, with its full history."""

    task_id: str
    task_type: str
    payload: Any = None
    priority: TaskPriority = TaskPriority.NORMAL
    status: TaskStatus = TaskStatus.PENDING
    node_id: str | None = None
    node_name: str | None = None
    attempt: int = 0
    failures: int = 0
    max_retries: int = 3
    timeout_s: float | None = None
    preferred_node_types: tuple[NodeType, ...] = ()
    required_capabilities: frozenset[str] = frozenset()
    context: dict[str, Any] = field(default_factory=dict)
    submitter_id: str | None = None
    why: str = ""
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires: float | None = None
    not_before: float = 0.0
    result: Any = None
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    signature: str = ""  # the submitter's HMAC over what the task asks (empty without an api_key)
    progress: float | None = None  # the last fraction done its handler reported (0..1), carried by lease renewals
    progress_message: str | None = None  # what the handler said with it
    # The payload as encoded once by the submitter (size checked); backends store it as is.
    payload_frame: bytes | None = field(default=None, repr=False, compare=False)

    def encoded_payload(self, limits: codec.CodecLimits) -> bytes:
        if self.payload_frame is None:
            self.payload_frame = codec.encode(self.payload, limits)
        return self.payload_frame

    @property
    def trace_id(self) -> str | None:
        return self.context.get("trace_id")

    @property
    def parent_id(self) -> str | None:
        return self.context.get("parent_id")


def new_task_id() -> str:
    """A fresh task id: 32 hex digits, the microsecond it was made (14) then 72 random bits (18).

    Time first, so the ids a node makes sort in the order it made them: each medium's task tables are B-trees keyed
    by id, and a new row lands on the page the last one did instead of on a random page to be written anew (on
    gRPC at 1,024 tasks in flight this was worth a third more tasks per second). Uniqueness rests on the random
    part; the clock going back only costs that locality."""
    return f"{time.time_ns() // 1000:014x}{os.urandom(9).hex()}"


_HEX = frozenset("0123456789abcdef")


def short_id(task_id: str) -> str:
    """The 12 characters that tell a task apart on screen. A made id (``new_task_id``, or an older uuid4 hex)
    shows its random end, since its start is the time and ids made together start alike; a caller's own id
    (an idempotency key such as ``invoice-42``) shows its start."""
    if len(task_id) == 32 and _HEX.issuperset(task_id):
        return task_id[-12:]
    return task_id[:12]


MAX_PROGRESS_MESSAGE_CHARS = 200  # a progress message is a status line, not a log


@dataclass(frozen=True)
class TaskProgress:
    """How far a running task is, as its handler last said: a fraction in 0..1 and a short message."""

    fraction: float
    message: str = ""

    @classmethod
    def checked(cls, fraction: Any, message: Any = "") -> TaskProgress:
        """A progress report validated; ValueError says what is wrong (NaN, outside 0..1, a long message)."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"progress must be a number from 0 to 1, not {type(fraction).__name__}")
        value = float(fraction)
        if not 0.0 <= value <= 1.0:  # NaN fails this too
            raise ValueError(f"progress must be from 0 to 1, not {fraction!r}")
        if message is None:
            message = ""
        if not isinstance(message, str):
            raise ValueError(f"a progress message must be text, not {type(message).__name__}")
        if len(message) > MAX_PROGRESS_MESSAGE_CHARS:
            raise ValueError(f"a progress message is at most {MAX_PROGRESS_MESSAGE_CHARS} characters "
                             f"(this one has {len(message)})")
        return cls(value, message)


@dataclass(frozen=True)
class MemoryItem:
    """One version of one memory fact, as stored in a replica and carried on the wire."""

    memory_type: str
    key: str
    value: Any
    vv: dict[str, int]
    hlc: int
    origin: str
    priority: int = 5
    tombstone: bool = False


@dataclass(frozen=True)
class Conflict:
    """Concurrent versions of one key that a strategy did not settle on its own."""

    conflict_id: str
    memory_type: str
    key: str
    siblings: tuple[MemoryItem, ...]
    strategy: str
    opened_at: float
    reason: str = ""


@dataclass(frozen=True)
class Recollection:
    """What ``recall_item`` found: the value, and every concurrent sibling when in conflict."""

    key: str
    memory_type: str
    value: Any
    siblings: tuple[MemoryItem, ...]
    origin: str
    hlc: int
