"""Node types: what abilities, capabilities and handlers a node of each type brings.

``create_specialized_node(type, config)`` builds a type's profile from its
``node_configs.<type>`` section. A profile may carry ``on_start(node)`` /
``on_stop(node)`` for background work (the sensor's sampler), ``metrics()`` for
what its heartbeat shows (the language expert's cache), and
``disable_execution`` (the planner serves nothing but planning task types).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..config import NODE_TYPES, MeshConfig
from ..errors import ConfigError
from ..handlers import HandlerSpec, NodePort
from ..model import NodeType
from . import general

Hook = Callable[[NodePort], Awaitable[None]]


@dataclass(frozen=True)
class NodeProfile:
    node_type: NodeType
    capabilities: frozenset[str]
    handlers: tuple[HandlerSpec, ...]
    notes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    on_start: Hook | None = None        # awaited with the node (its typed port) once it has started
    on_stop: Hook | None = None         # awaited with the node before it tears down
    metrics: Callable[[], dict[str, Any]] | None = None  # merged into the node's heartbeat metrics
    disable_execution: bool = False     # serve only this profile's handlers: no plugins, nothing else

    @property
    def task_types(self) -> frozenset[str]:
        return frozenset(s.task_type for s in self.handlers)


def _caps(specs: list[HandlerSpec]) -> frozenset[str]:
    return frozenset().union(*(s.capabilities for s in specs)) if specs else frozenset()


def _bool(settings: dict[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ConfigError(f"config: node_configs.*.{key} = {value!r} is not allowed (allowed: true or false)")


def create_specialized_node(node_type: str | NodeType, config: MeshConfig | None = None) -> NodeProfile:
    """The profile (capabilities, handlers, hooks, notes) of a node of ``node_type``."""
    value = node_type.value if isinstance(node_type, NodeType) else str(node_type)
    if value not in NODE_TYPES:
        raise ConfigError(f"config: agent_mesh.node_type = {value!r} is not allowed (allowed: {', '.join(NODE_TYPES)})")
    config = config or MeshConfig()
    settings = config.node_config(value)
    kind = NodeType(value)
    base = general.handlers()
    if kind is NodeType.LANGUAGE_EXPERT:
        from .language_expert import CAPABILITIES as NLP
        from .language_expert import LanguageExpert
        expert = LanguageExpert(settings)
        specs = base + expert.handlers()
        return NodeProfile(kind, general.CAPABILITIES | NLP | _caps(specs), tuple(specs),
                           ("language expert: py3langid, vaderSentiment (English), yake; entities by rule; "
                            "no translation (no offline model)",), settings, on_start=expert.on_start,
                           on_stop=expert.on_stop, metrics=expert.metrics)
    if kind is NodeType.PLANNING_ONLY:
        from . import planning_only
        disabled = _bool(settings, "disable_execution", True)
        specs = planning_only.handlers() + ([] if disabled else base)
        caps = planning_only.CAPABILITIES | _caps(specs)
        note = ("planning only: coordinates and never executes other work (disable_execution)" if disabled
                else "planner that also serves the general handlers (disable_execution: false)")
        return NodeProfile(kind, caps, tuple(specs), (note,), settings, disable_execution=disabled)
    if kind is NodeType.SENSOR_CONNECTED:
        from .sensor_connected import CAPABILITIES as SENSING
        from .sensor_connected import SensorNode
        sensor = SensorNode(settings)
        specs = base + sensor.handlers()
        note = (f"sensor: samples every {sensor.interval:g} s into a ring of {sensor.history.maxlen}; "
                f"{len(sensor.rules)} rule(s), {len(sensor.sources)} source(s)")
        return NodeProfile(kind, general.CAPABILITIES | SENSING | _caps(specs), tuple(specs), (note,), settings,
                           on_start=sensor.on_start, on_stop=sensor.on_stop, metrics=sensor.metrics)
    if kind is NodeType.COORDINATION_HUB:
        note = ("coordination hub: no special power on the hub backends (sqlite_local, redis_distributed); "
                "in grpc_mesh it is the seed peer others join through. Until grpc_mesh lands it serves as general")
        # The note travels in the heartbeat, so every node's /mesh_agents can say what the hub is.
        return NodeProfile(kind, general.CAPABILITIES | {"coordination"} | _caps(base), tuple(base), (note,),
                           settings, metrics=lambda: {"notes": [note]})
    return NodeProfile(kind, general.CAPABILITIES | _caps(base), tuple(base), (), settings)


@dataclass(frozen=True)
class MachineFacts:
    """What the recommendation looks at; gathered from psutil and the installed packages."""

    cores: int
    memory_gib: float
    sensors: tuple[str, ...] = ()
    nlp_packages: tuple[str, ...] = ()

    @classmethod
    def gather(cls) -> MachineFacts:
        from .language_expert import available
        from .sensor_connected import has_hardware_sensors
        return cls(os.cpu_count() or 1, psutil.virtual_memory().total / 2**30, tuple(has_hardware_sensors()),
                   tuple(available()))


NLP_REQUIRED = ("py3langid", "vaderSentiment", "yake")


def get_recommended_node_type(facts: MachineFacts | None = None) -> tuple[NodeType, list[str]]:
    """A node type that exists, with the reasons for it, from what this machine has.

    Hardware sensors → sensor_connected; 4+ cores, 4+ GiB and the language packages → language_expert;
    one core or under 1 GiB → planning_only (it coordinates and runs nothing heavy); else general.
    """
    facts = facts or MachineFacts.gather()
    reasons = [f"{facts.cores} core(s), {facts.memory_gib:.1f} GiB memory"]
    missing = [p for p in NLP_REQUIRED if p not in facts.nlp_packages]
    if facts.sensors:
        choice = NodeType.SENSOR_CONNECTED
        reasons.append(f"hardware sensors present ({'; '.join(facts.sensors)})")
    elif facts.cores >= 4 and facts.memory_gib >= 4 and not missing:
        choice = NodeType.LANGUAGE_EXPERT
        reasons.append("enough cores and memory for text analysis, and the language packages are installed")
    elif facts.cores <= 1 or facts.memory_gib < 1:
        choice = NodeType.PLANNING_ONLY
        reasons.append("a small machine: planning coordinates the mesh without executing heavy work")
    else:
        choice = NodeType.GENERAL
        if missing:
            reasons.append(f"language packages missing ({', '.join(missing)}), so not a language expert")
        elif facts.cores < 4 or facts.memory_gib < 4:
            reasons.append("under 4 cores or 4 GiB: a general worker rather than a language expert")
        reasons.append("no hardware sensors")
    assert choice.value in NODE_TYPES
    return choice, reasons
