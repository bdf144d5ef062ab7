"""Task handlers: how a node learns to run a task type.

``register_handler`` on the manager, or the ``@handler`` decorator in a
plugin module named by config ``handlers:`` / ``--handlers``. A handler is
``async def fn(payload)`` or ``async def fn(payload, ctx)``; plain functions
run in a thread so they never block the node.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError
from .model import NodeInfo, NodeRole, NodeStatus, TaskProgress

if TYPE_CHECKING:
    from .events import Event
    from .membership import Member
    from .model import NodeType, Recollection, Task, TaskPriority


@dataclass(frozen=True)
class HandlerSpec:
    task_type: str
    fn: Callable[..., Any]
    capabilities: frozenset[str]
    takes_context: bool
    is_async: bool


def make_spec(task_type: str, fn: Callable[..., Any], capabilities: Iterable[str] = ()) -> HandlerSpec:
    if not task_type or not isinstance(task_type, str):
        raise ValueError("a handler needs a task type name")
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return HandlerSpec(task_type, fn, frozenset(capabilities), len(params) >= 2,
                       inspect.iscoroutinefunction(fn))


class HandlerRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}

    def add(self, spec: HandlerSpec) -> None:
        self._specs[spec.task_type] = spec

    def get(self, task_type: str) -> HandlerSpec | None:
        return self._specs.get(task_type)

    def task_types(self) -> frozenset[str]:
        return frozenset(self._specs)

    def capabilities(self) -> frozenset[str]:
        caps: set[str] = set()
        for spec in self._specs.values():
            caps |= spec.capabilities
        return frozenset(caps)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._specs.values())


PLUGIN_REGISTRY = HandlerRegistry()


def handler(task_type: str, *, capabilities: Iterable[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for plugin modules: ``@handler("resize", capabilities={"images"})``."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        PLUGIN_REGISTRY.add(make_spec(task_type, fn, capabilities))
        return fn
    return wrap


def load_plugins(modules: Iterable[str]) -> list[HandlerSpec]:
    """Import plugin modules; return every handler they registered."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f"config: handlers module {name!r} cannot be imported: {type(exc).__name__}: {exc}",
                              hint="is it on PYTHONPATH?") from None
    return list(PLUGIN_REGISTRY)


class NodePort(Protocol):
    """What a running handler (or a node type's background hook) may ask of the node it runs on."""

    @property
    def node_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    async def submit_task(self, task_type: str, payload: Any = None, *,
                          priority: TaskPriority | str | int = ...,
                          preferred_node_types: Iterable[NodeType | str] = (),
                          required_capabilities: Iterable[str] = (), timeout_s: float | None = None,
                          context: dict[str, Any] | None = None, task_id: str | None = None,
                          max_retries: int | None = None, queue: bool = False) -> str: ...

    async def wait_for(self, task_id: str, timeout: float | None = None) -> Any: ...

    async def wait_task(self, task_id: str, timeout: float | None = None) -> Task: ...

    async def cancel_task(self, task_id: str) -> dict[str, str]: ...

    async def recall_item(self, key: str, memory_type: str | None = None) -> Recollection: ...

    async def sync_memory_item(self, memory_type: str, memory_data: Any, priority: int = 5,
                               key: str | None = None) -> str: ...

    def members(self) -> list[Member]: ...

    def publish(self, event: Event) -> None: ...


class TaskContext:
    """What a running handler knows about its task, and what it may do on the mesh.

    Subtasks inherit the task's trace id and context; ``cancelled`` turns true
    when someone asked for this attempt to stop (a long handler may check it).
    A handler whose side effect must not be stopped half-way calls ``commit``
    before it starts it.
    """

    def __init__(self, task: Task, node: NodePort, cancelled: Callable[[], bool] = lambda: False,
                 report: Callable[[TaskProgress], None] | None = None,
                 commit: Callable[[], bool] | None = None) -> None:
        self.task = task
        self._node = node
        self._cancelled = cancelled
        self._report = report
        self._commit = commit

    def progress(self, fraction: float, message: str = "") -> None:
        """Say how far this task is: ``fraction`` from 0 to 1 and a short message (at most 200 characters).

        Costs no write: the latest report is kept and travels with the next lease renewal, so a reader on
        any node sees it within one renewal interval. A value outside 0..1 (or NaN, or a long message) is a
        ValueError here, in the handler that made it.
        """
        report = TaskProgress.checked(fraction, message)
        self.task.progress, self.task.progress_message = report.fraction, report.message or None
        if self._report is not None:
            self._report(report)

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def attempt(self) -> int:
        return self.task.attempt

    @property
    def context(self) -> dict[str, Any]:
        return self.task.context

    @property
    def node_id(self) -> str:
        return self._node.node_id

    @property
    def node_name(self) -> str:
        return self._node.name

    @property
    def node(self) -> NodePort:
        """The node this task runs on, through its typed port (for a node type's background work)."""
        return self._node

    @property
    def cancelled(self) -> bool:
        return self._cancelled()

    def commit(self) -> bool:
        """Pass the point of no return: from now on a cancel no longer stops this attempt, and its outcome is
        recorded as it ends (a write applied is reported applied, never cancelled behind it). False when a
        cancel was asked already: the handler should then stop without its side effect. A timeout or the
        node's own stop still end it."""
        if self._commit is None:
            return not self.cancelled
        return self._commit()

    async def submit(self, task_type: str, payload: Any = None, *, priority: TaskPriority | str | None = None,
                     **kwargs: Any) -> str:
        """Submit a subtask; it inherits this task's trace id and context."""
        context = dict(self.task.context)
        context.update(kwargs.pop("context", None) or {})
        context["parent_id"] = self.task.task_id
        context.setdefault("trace_id", self.task.context.get("trace_id", self.task.task_id))
        return await self._node.submit_task(task_type, payload,
                                            priority=priority if priority is not None else self.task.priority,
                                            context=context, **kwargs)

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """A subtask's result (raises TaskFailed or TaskTimeout like ``wait_for``)."""
        return await self._node.wait_for(task_id, timeout=timeout)

    async def wait_task(self, task_id: str, timeout: float | None = None) -> Task:
        """A subtask once it is final, whatever its status."""
        return await self._node.wait_task(task_id, timeout)

    async def cancel(self, task_id: str) -> dict[str, str]:
        """Cancel a subtask (and its own subtasks)."""
        return await self._node.cancel_task(task_id)

    async def recall(self, key: str, memory_type: str | None = None) -> Recollection:
        """A fact from this node's replica, with its siblings when in conflict."""
        return await self._node.recall_item(key, memory_type)

    async def remember(self, memory_type: str, value: Any, *, priority: int = 5, key: str | None = None) -> str:
        """Write a fact to the shared memory; returns its key."""
        return await self._node.sync_memory_item(memory_type, value, priority, key)

    def workers(self) -> list[NodeInfo]:
        """Active worker nodes as this node sees them now."""
        return [m.info for m in self._node.members()
                if m.status is NodeStatus.ACTIVE and m.info.role is NodeRole.WORKER]
