"""Agent Mesh engine: nodes, task routing, replicated memory. Never imports textual."""

from .commands import REGISTRY as COMMANDS
from .commands import CommandResult, run_command
from .config import MeshConfig, load_config
from .errors import (
    ConfigError,
    MeshError,
    NoCapacity,
    SyncTimeout,
    TaskFailed,
    TaskIdInUse,
    TaskNotFound,
    TaskTimeout,
    UnknownTaskType,
)
from .events import (
    BackendStatus,
    ConflictOpened,
    ConflictResolved,
    Event,
    MemoryChanged,
    NodeJoined,
    NodeStatusChanged,
    TaskUpdated,
)
from .handlers import TaskContext, handler
from .manager import AgentMeshManager, Recollection
from .model import (
    Conflict,
    MemoryItem,
    NodeInfo,
    NodeRole,
    NodeStatus,
    NodeType,
    Task,
    TaskPriority,
    TaskProgress,
    TaskStatus,
)
from .nodes import create_specialized_node, get_recommended_node_type

__all__ = [
    "AgentMeshManager", "BackendStatus", "COMMANDS", "CommandResult", "ConfigError", "Conflict", "ConflictOpened",
    "ConflictResolved", "Event", "MemoryChanged", "MemoryItem", "MeshConfig", "MeshError", "NoCapacity",
    "NodeInfo", "NodeJoined", "NodeRole", "NodeStatus", "NodeStatusChanged", "NodeType", "Recollection",
    "SyncTimeout", "Task", "TaskContext", "TaskFailed", "TaskIdInUse", "TaskNotFound", "TaskPriority", "TaskProgress",
    "TaskStatus",
    "TaskTimeout", "TaskUpdated", "UnknownTaskType", "create_specialized_node", "get_recommended_node_type", "handler",
    "load_config", "run_command",
]
