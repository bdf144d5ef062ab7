"""Error hierarchy: one root, each error says what to do next.

Every error carries ``retriable`` (may the same call succeed if tried again)
and a ``hint`` telling the user what to do; the CLI prints ``str(err)`` as one
line and never a traceback.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every error the mesh raises on purpose."""

    retriable: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class ConfigError(MeshError):
    """A configuration value is missing, of the wrong type or out of range."""

    exit_code = 2


class UsageError(MeshError):
    """A command was called with arguments it does not take."""

    exit_code = 2


class CodecError(MeshError):
    """A frame could not be decoded: corrupt, truncated or of an unknown version."""


class FrameTooLarge(CodecError):
    """A frame (or the value it would hold) is over the configured size limit."""


class BackendError(MeshError):
    """The backend failed; ``retriable`` says whether trying again can help."""

    retriable = True


class BackendUnavailable(BackendError):
    """The backend cannot be reached now; the node keeps working locally."""


class ClockSkewed(MeshError):
    """This node's wall clock is off the medium's past ``max_clock_offset_seconds``: its writes are refused until
    the clock is fixed (``offset``: seconds ahead, negative when behind)."""

    retriable = True

    def __init__(self, message: str, *, offset: float) -> None:
        super().__init__(message)
        self.offset = offset


class IdentityError(MeshError):
    """The node's state folder cannot give this process an identity."""

    exit_code = 2


class TaskError(MeshError):
    """Base for errors about one task."""

    def __init__(self, message: str, *, task_id: str | None = None, hint: str | None = None) -> None:
        self.task_id = task_id
        super().__init__(message, hint=hint)


class UnknownTaskType(TaskError):
    """No live node has a handler for this task type."""

    exit_code = 3


class NoCapacity(TaskError):
    """Every node that could run the task is full or overloaded (backpressure)."""

    exit_code = 3
    retriable = True


class TaskFailed(TaskError):
    """The task ended failed, dead-lettered or cancelled; ``errors`` lists each attempt's error."""

    exit_code = 1

    def __init__(self, message: str, *, task_id: str | None = None, status: str = "failed",
                 errors: list[str] | None = None) -> None:
        self.status = status
        self.errors = errors or []
        super().__init__(message, task_id=task_id)


class TaskTimeout(TaskError):
    """Waiting for a task's result took longer than the caller allowed."""

    exit_code = 3
    retriable = True


class TaskIdInUse(TaskError):
    """A task id (idempotency key) was submitted again with a different task type or payload."""

    exit_code = 2


class TaskNotFound(TaskError):
    """No task with this id exists in the mesh."""

    exit_code = 2


class MemoryNotFound(MeshError):
    """No memory item with this key exists in the local replica."""


class SyncTimeout(MeshError):
    """A strong write was not applied by every active node in time."""

    retriable = True

    def __init__(self, message: str, *, missing: list[str],
                 hint: str = "the write is in the mesh's log: they apply it when they return") -> None:
        self.missing = missing
        super().__init__(message, hint=hint)


class ReplicasBehind(MeshError):
    """A write waited ``memory_sync.max_lag_wait_seconds`` for the slowest active replicas to apply this node's
    earlier writes (more than ``max_lag_items`` behind) and they did not: the write was not made."""

    retriable = True

    def __init__(self, message: str, *, behind: list[str],
                 hint: str = "try again: the write was not made; a replica that stays behind is slow or stuck") -> None:
        self.behind = behind
        super().__init__(message, hint=hint)


class CertError(MeshError):
    """A certificate cannot be made, read or used: no CA yet, a CA already there, a bad host or lifetime."""

    exit_code = 2
