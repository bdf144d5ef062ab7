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
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .model import Task, TaskPriority


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


class TaskContext:
    """What a running handler knows about its task, and how it fans out subtasks."""

    def __init__(self, task: Task, mesh: Any) -> None:
        self.task = task
        self._mesh = mesh

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
        return str(self._mesh.node_id)

    async def submit(self, task_type: str, payload: Any = None, *, priority: TaskPriority | str | None = None,
                     **kwargs: Any) -> str:
        """Submit a subtask; it inherits this task's trace id and context."""
        context = dict(self.task.context)
        context.update(kwargs.pop("context", None) or {})
        context["parent_id"] = self.task.task_id
        context.setdefault("trace_id", self.task.context.get("trace_id", self.task.task_id))
        return str(await self._mesh.submit_task(task_type=task_type, payload=payload,
                                                priority=priority if priority is not None else self.task.priority,
                                                context=context, **kwargs))

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        return await self._mesh.wait_for(task_id, timeout=timeout)
