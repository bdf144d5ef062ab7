"""Node types: what abilities, capabilities and handlers a node of each type brings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..config import NODE_TYPES, MeshConfig
from ..errors import ConfigError
from ..handlers import HandlerSpec
from ..model import NodeType
from . import general


@dataclass(frozen=True)
class NodeProfile:
    node_type: NodeType
    capabilities: frozenset[str]
    handlers: tuple[HandlerSpec, ...]
    notes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)


def create_specialized_node(node_type: str | NodeType, config: MeshConfig | None = None) -> NodeProfile:
    """The profile (capabilities, handlers, notes) of a node of ``node_type``."""
    value = node_type.value if isinstance(node_type, NodeType) else str(node_type)
    if value not in NODE_TYPES:
        raise ConfigError(f"config: agent_mesh.node_type = {value!r} is not allowed (allowed: {', '.join(NODE_TYPES)})")
    config = config or MeshConfig()
    settings = config.node_config(value)
    specs = general.handlers()
    notes: tuple[str, ...] = ()
    if value != NodeType.GENERAL.value:
        notes = (f"{value} serves the general handlers until its specialised handlers land",)
    return NodeProfile(NodeType(value), general.CAPABILITIES | frozenset().union(*(s.capabilities for s in specs)),
                       tuple(specs), notes, settings)


def get_recommended_node_type() -> tuple[NodeType, list[str]]:
    """A node type that exists, with the reasons for it, from what this machine has."""
    reasons = [f"{os.cpu_count() or 1} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB memory"]
    reasons.append("only the general type has real handlers so far")
    return NodeType.GENERAL, reasons
