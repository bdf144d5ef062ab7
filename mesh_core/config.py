"""Configuration: defaults < YAML file < MESH_* environment < CLI flags.

Every value is checked; a bad one raises ``ConfigError`` whose message names
the key, the value and what is allowed. Unknown keys are collected in
``MeshConfig.warnings`` (the CLI prints them) rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .addresses import (
    WILDCARD_HOSTS,
    host_port_or_empty_problem,
    host_port_problem,
    join_host_port,
    machine_address,
    redis_url_problem,
)
from .errors import ConfigError
from .files import parse_file_mode, readable_by_others
from .security import without_password

PROTOCOLS = ("sqlite_local", "redis_distributed", "grpc_mesh", "hybrid")
NODE_TYPES = ("general", "language_expert", "planning_only", "sensor_connected", "coordination_hub")
ALGORITHMS = ("least_loaded", "round_robin", "capability_based", "random")
CONFLICT_STRATEGIES = ("latest_wins", "merge_compatible", "source_priority", "manual", "version_vector")
SYNC_STRATEGIES = ("eventual", "strong", "master_slave", "peer_to_peer")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("info", "warning")  # warning: no line per task or memory item


def _choice(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


def _positive() -> dict[str, Any]:
    return {"min": 0, "exclusive": True}


def _non_negative() -> dict[str, Any]:
    return {"min": 0}


def _file_mode(text: str) -> str | None:
    """Why ``text`` is not a file mode for the shared SQLite file (None when it is)."""
    try:
        parse_file_mode(text)
    except ValueError:
        return ('an octal mode in quotes, e.g. "0600" or "0660", with owner read and write and no execute bits '
                "(unquoted, YAML reads 0660 as the number 432)")
    return None


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = field(default=None, metadata={"check": redis_url_problem})
    host: str = "localhost"
    port: int = field(default=6379, metadata={"min": 1, "max": 65535})
    db: int = field(default=0, metadata=_non_negative())
    username: str | None = None
    password: str | None = None
    cluster: str = "default"
    socket_timeout_seconds: float = field(default=5.0, metadata=_positive())
    # TLS, for a rediss:// url: the CA that issued the server's certificate (unset: the system's CAs), and this
    # node's certificate and key for a server that asks clients for one (``tls-auth-clients``).
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_check_hostname: bool = True  # the server's certificate must name the host in the url
    # High availability: Sentinel (``sentinels`` host:port list + the monitored ``service`` name) or Redis Cluster
    # (``cluster_nodes``, any few of its nodes: the rest is discovered). Either replaces url/host/port.
    sentinels: tuple[str, ...] = field(default=(), metadata={"item_check": host_port_problem})
    service: str = "mymaster"
    sentinel_password: str | None = None  # for sentinels started with requirepass (the data nodes use password)
    cluster_nodes: tuple[str, ...] = field(default=(), metadata={"item_check": host_port_problem})
    # Writes that acknowledge (task submitted, result recorded, memory write) wait until this many replicas have
    # them (Redis WAIT), at most ``wait_timeout_ms``; fewer in time is an error, not a silent success. 0: no wait.
    wait_replicas: int = field(default=0, metadata={"min": 0, "max": 16})
    wait_timeout_ms: int = field(default=1000, metadata={"min": 1, "max": 600_000})

    def __post_init__(self) -> None:
        if self.sentinels and self.cluster_nodes:
            raise ConfigError("config: agent_mesh.redis.sentinels and redis.cluster_nodes are both set",
                              hint="Sentinel (a primary and its replicas) or Redis Cluster: keep one of them")
        if (self.sentinels or self.cluster_nodes) and self.url:
            ha = _ha_key(self)
            raise ConfigError(f"config: agent_mesh.redis.{ha} and redis.url are both set",
                              hint=f"with redis.{ha} the nodes find the server themselves: remove redis.url")
        if self.wait_replicas and self.wait_timeout_ms / 1000 >= self.socket_timeout_seconds:
            raise ConfigError(f"config: agent_mesh.redis.wait_timeout_ms = {self.wait_timeout_ms} is not under "
                              f"redis.socket_timeout_seconds = {self.socket_timeout_seconds}",
                              hint="a WAIT longer than the socket timeout reads as a dead connection: lower it")
        if self.sentinels and not self.service.strip():
            raise ConfigError("config: agent_mesh.redis.service is empty",
                              hint="the name the sentinels monitor the primary under (sentinel monitor NAME ...)")
        if self.cluster_nodes and self.db:
            raise ConfigError(f"config: agent_mesh.redis.db = {self.db} with redis.cluster_nodes",
                              hint="Redis Cluster has only database 0: remove redis.db")
        given = [key for key in TLS_FILE_KEYS if getattr(self, key)]
        if given and self.mode != "single":
            raise ConfigError(f"config: agent_mesh.redis.{given[0]} is set with redis.{_ha_key(self)}",
                              hint="TLS to a Sentinel set or a Redis Cluster is not supported yet: remove the "
                                   "redis.tls_* keys, or use one server through a rediss:// url")
        if given and not (self.url or "").startswith("rediss://"):
            shown = f"redis.url = {without_password(self.url)!r}" if self.url else "redis.url is unset"
            raise ConfigError(f"config: agent_mesh.redis.{given[0]} is set but {shown}",
                              hint="TLS needs a rediss://host:port/db url; or remove the redis.tls_* keys")
        if self.tls_key_file and not self.tls_cert_file:
            raise ConfigError("config: agent_mesh.redis.tls_key_file is set without redis.tls_cert_file",
                              hint="give the certificate that goes with the key")

    @property
    def tls(self) -> bool:
        """Whether the connection is TLS (a ``rediss://`` url)."""
        return bool(self.url and self.url.startswith("rediss://"))

    @property
    def mode(self) -> str:
        """How the nodes reach Redis: ``sentinel``, ``cluster`` or ``single`` (one server at url/host:port)."""
        return "sentinel" if self.sentinels else "cluster" if self.cluster_nodes else "single"


TLS_FILE_KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file")


def _ha_key(cfg: RedisConfig) -> str:
    return "sentinels" if cfg.sentinels else "cluster_nodes"


@dataclass(frozen=True)
class TLSConfig:
    """``grpc.tls``: mutual TLS between grpc_mesh nodes (see ``mesh_core.backends.grpc.tls``).

    ``enabled``: null/``auto`` (the default) speaks TLS when the files are there: ``ca_file``, ``cert_file``,
    ``key_file`` when given, else the mesh CA and this node's certificate in ``<state_dir>/certs``
    (``ca.pem``, ``NAME.pem``, ``NAME.key``, made by ``mesh-tui certs``); ``true`` requires them; ``false``
    never speaks TLS. A grpc_mesh server always asks for the client's certificate (mutual TLS)."""

    enabled: bool | None = field(default=None, metadata={"auto": True})
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    require_client_cert: bool = False  # the hybrid probe's server side: grpc_mesh always requires one


@dataclass(frozen=True)
class GrpcConfig:
    port: int = field(default=9901, metadata={"min": 0, "max": 65535})
    host: str = "127.0.0.1"
    # host:port other nodes dial to reach this one; empty = derived (see ``advertise_address``)
    advertise: str = field(default="", metadata={"check": host_port_or_empty_problem})
    compression: bool = True
    seeds: tuple[str, ...] = field(default=(), metadata={"item_check": host_port_problem})
    keepalive_seconds: float = field(default=10.0, metadata=_positive())
    max_message_bytes: int = field(default=4 * 1024 * 1024, metadata=_positive())
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Listen on a non-loopback address without TLS anyway (--insecure): every status line then says INSECURE.
    insecure: bool = False


def advertise_address(grpc: GrpcConfig, bound_port: int) -> str:
    """The ``host:port`` other nodes dial to reach this node: ``grpc.advertise`` when set; else ``grpc.host``
    with the port the server bound (``grpc.port`` 0 binds an ephemeral one) when the host is a specific
    address; else, for a wildcard host, this machine's hostname resolved to an address."""
    if grpc.advertise:
        return grpc.advertise
    host = grpc.host.strip().removeprefix("[").removesuffix("]")
    if host not in WILDCARD_HOSTS:
        return join_host_port(host, bound_port)
    return join_host_port(machine_address(), bound_port)


@dataclass(frozen=True)
class TaskDistributionConfig:
    load_balancing_algorithm: str = field(default="least_loaded", metadata=_choice(*ALGORITHMS))
    retry_failed_tasks: bool = True
    max_task_retries: int = field(default=3, metadata=_non_negative())
    task_affinity_enabled: bool = True
    retry_backoff_seconds: float = field(default=0.2, metadata=_non_negative())
    retry_backoff_max_seconds: float = field(default=30.0, metadata=_non_negative())
    # Retention: the newest tasks_kept tasks stay whatever their state; older finished ones are deleted
    # (with their attempts). Dead letters stay until there are more than dead_letters_kept. Unfinished
    # tasks are never deleted.
    tasks_kept: int = field(default=100_000, metadata=_positive())
    dead_letters_kept: int = field(default=10_000, metadata=_positive())


@dataclass(frozen=True)
class MemorySyncConfig:
    enabled: bool = True
    strategy: str = field(default="eventual", metadata=_choice(*SYNC_STRATEGIES))
    conflict_resolution_strategy: str = field(default="latest_wins", metadata=_choice(*CONFLICT_STRATEGIES))
    strategies: dict[str, str] = field(default_factory=dict, metadata={"value_choices": CONFLICT_STRATEGIES})
    compression_enabled: bool = True
    compression_threshold_bytes: int = field(default=1024, metadata=_non_negative())
    max_sync_batch_size: int = field(default=50, metadata=_positive())
    max_item_bytes: int = field(default=1024 * 1024, metadata=_positive())
    history_size: int = field(default=20, metadata=_positive())
    strong_timeout_seconds: float = field(default=2.0, metadata=_positive())
    gossip_fanout: int = field(default=2, metadata=_positive())  # peer_to_peer: peers woken per hop
    # writer backpressure: a node's write waits while the slowest active replica has not applied more than this
    # many of its earlier writes (0: never waits), at most max_lag_wait_seconds, then fails (ReplicasBehind)
    max_lag_items: int = field(default=10_000, metadata=_non_negative())
    max_lag_wait_seconds: float = field(default=10.0, metadata=_positive())
    # Compaction keeps the log entries a node that is away (declared dead, or stopped) has not applied, for this
    # long after its last heartbeat: back within it, the node applies only what it missed; later, it reads every
    # key's newest entries again (its bootstrap). 0: only nodes that may be alive (active, suspect) keep theirs.
    keep_log_for_absent_seconds: float = field(default=300.0, metadata=_non_negative())
    primary: str | None = None  # master_slave: the primary's node name; unset = whoever holds the lease
    source_priority: tuple[str, ...] = ()  # node ids, names or node types, best first (source_priority strategy)


@dataclass(frozen=True)
class SecurityConfig:
    api_key: str | None = None
    allowlist: tuple[str, ...] = ()


def _bind_host(host: str) -> str | None:
    return None if host.strip() and not any(c.isspace() for c in host) else "an address to bind, e.g. 127.0.0.1"


@dataclass(frozen=True)
class MetricsConfig:
    """``metrics``: this node's Prometheus endpoint (``GET /metrics``, ``mesh_core.metrics``); off while
    ``port`` is unset. ``host`` is the address it binds: this machine only unless set otherwise."""

    port: int | None = field(default=None, metadata={"min": 0, "max": 65535})  # 0: a free port, picked at start
    host: str = field(default="127.0.0.1", metadata={"check": _bind_host})


@dataclass(frozen=True)
class MeshConfig:
    enabled: bool = True
    protocol: str = field(default="sqlite_local", metadata=_choice(*PROTOCOLS))
    node_type: str = field(default="general", metadata=_choice(*NODE_TYPES))
    node_name: str | None = None
    state_dir: str = ".mesh"
    port: int = field(default=9900, metadata={"min": 0, "max": 65535})
    heartbeat_interval_seconds: float = field(default=1.0, metadata=_positive())
    suspect_after_seconds: float = field(default=2.0, metadata=_positive())
    node_timeout_seconds: float = field(default=3.0, metadata=_positive())
    # How far ahead of this node's clock a remote memory stamp may pull its HLC; beyond it: clamped, flagged.
    max_clock_offset_seconds: float = field(default=0.5, metadata=_positive())
    sync_interval_seconds: float = field(default=10.0, metadata=_positive())
    task_timeout_seconds: float = field(default=300.0, metadata=_positive())
    max_capacity: int = field(default=100, metadata=_positive())
    concurrency: int = field(default=64, metadata=_positive())
    max_pending_tasks: int = field(default=10_000, metadata=_non_negative())
    shutdown_grace_seconds: float = field(default=2.0, metadata=_non_negative())
    max_frame_bytes: int = field(default=4 * 1024 * 1024, metadata=_positive())
    sqlite_db_path: str = ".mesh/mesh_coordination.db"
    # The shared file's mode (its -wal/-shm follow): owner only, or e.g. "0660" for a group sharing a machine.
    sqlite_file_mode: str = field(default="0600", metadata={"check": _file_mode})
    handlers: tuple[str, ...] = ()
    log_format: str = field(default="text", metadata=_choice(*LOG_FORMATS))
    log_level: str = field(default="info", metadata=_choice(*LOG_LEVELS))
    redis: RedisConfig = field(default_factory=RedisConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    task_distribution: TaskDistributionConfig = field(default_factory=TaskDistributionConfig)
    memory_sync: MemorySyncConfig = field(default_factory=MemorySyncConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    node_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: tuple[str, ...] = field(default=(), compare=False, metadata={"internal": True})

    def __post_init__(self) -> None:
        if self.suspect_after_seconds > self.node_timeout_seconds:
            raise ConfigError(
                f"config: agent_mesh.suspect_after_seconds = {self.suspect_after_seconds} is over "
                f"node_timeout_seconds = {self.node_timeout_seconds} (allowed: at most the timeout)")
        if self.heartbeat_interval_seconds >= self.node_timeout_seconds:
            raise ConfigError(
                f"config: agent_mesh.heartbeat_interval_seconds = {self.heartbeat_interval_seconds} is not "
                f"below node_timeout_seconds = {self.node_timeout_seconds} (allowed: a shorter interval)")
        sync = self.memory_sync
        # A strong write must give its verdict before any node it waits for could be declared dead and dropped.
        if sync.strategy == "strong" and sync.strong_timeout_seconds >= self.node_timeout_seconds:
            raise ConfigError(
                f"config: agent_mesh.memory_sync.strong_timeout_seconds = {sync.strong_timeout_seconds} is not "
                f"below node_timeout_seconds = {self.node_timeout_seconds} (allowed: a shorter timeout)")

    def conflict_strategy_for(self, memory_type: str) -> str:
        strategies = self.memory_sync.strategies
        return strategies.get(memory_type) or strategies.get("*") or self.memory_sync.conflict_resolution_strategy

    def node_config(self, node_type: str | None = None) -> dict[str, Any]:
        return dict(self.node_configs.get(node_type or self.node_type) or {})

    def replace(self, **changes: Any) -> MeshConfig:
        return dataclasses.replace(self, **changes)


# --- building and checking -------------------------------------------------------

def _describe(allowed: Any) -> str:
    return ", ".join(str(a) for a in allowed)


def _bad(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config: {path} = {value!r} is not allowed (allowed: {allowed})")


def _coerce(path: str, value: Any, tp: Any, meta: Mapping[str, Any], warnings: list[str] | None = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _coerce(path, value, tp, meta, warnings)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _bad(path, value, "a mapping of keys")
        return _build(tp, value, path, warnings)
    if tp is bool:
        if meta.get("auto") and isinstance(value, str) and value.lower() == "auto":
            return None  # a bool | None field where null and "auto" mean: decide from what is there
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise _bad(path, value, "true, false or auto" if meta.get("auto") else "true or false")
    if tp in (int, float):
        if isinstance(value, bool):
            raise _bad(path, value, "a number")
        try:
            number = tp(value) if isinstance(value, str) else value
        except ValueError:
            raise _bad(path, value, "a whole number" if tp is int else "a number") from None
        if tp is int and not isinstance(number, int):
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            else:
                raise _bad(path, value, "a whole number")
        if tp is float and not isinstance(number, (int, float)):
            raise _bad(path, value, "a number")
        number = tp(number)
        if not math.isfinite(number):
            raise _bad(path, value, "a finite number")
        low, high = meta.get("min"), meta.get("max")
        if low is not None and (number <= low if meta.get("exclusive") else number < low):
            raise _bad(path, value, f"a number {'above' if meta.get('exclusive') else 'of at least'} {low}"
                       + (f" and at most {high}" if high is not None else ""))
        if high is not None and number > high:
            raise _bad(path, value, f"a number from {low} to {high}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _bad(path, value, "a string")
        value = str(value)
        if "choices" in meta and value not in meta["choices"]:
            raise _bad(path, value, _describe(meta["choices"]))
        wrong = meta["check"](value) if "check" in meta else None
        if wrong:
            raise _bad(path, without_password(value), wrong)  # a URL's password stays out of the message
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _bad(path, value, "a list")
        item_meta = {"check": meta["item_check"]} if "item_check" in meta else {}
        return tuple(_coerce(f"{path}[{i}]", v, args[0], item_meta) for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _bad(path, value, "a mapping")
        choices = meta.get("value_choices")
        if choices:
            for k, v in value.items():
                if v not in choices:
                    raise _bad(f"{path}.{k}", v, _describe(choices))
        return {str(k): (dict(v) if isinstance(v, Mapping) else v) for k, v in value.items()}
    raise TypeError(f"config field {path} has an unsupported type {tp!r}")


def _build(cls: Any, data: Mapping[str, Any], path: str, warnings: list[str] | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = fields.get(str(key))
        if f is None:
            if warnings is not None:
                warnings.append(f"unknown config key {path}.{key} (ignored)")
            continue
        kwargs[f.name] = _coerce(f"{path}.{key}", value, hints[f.name], f.metadata, warnings)
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


# environment variable → dotted key; the seed's MERNSTA_* names are aliases
ENV_KEYS: dict[str, str] = {
    "MESH_NODE_TYPE": "node_type",
    "MERNSTA_NODE_TYPE": "node_type",
    "MESH_PROTOCOL": "protocol",
    "MERNSTA_MESH_PROTOCOL": "protocol",
    "MESH_NODE_NAME": "node_name",
    "MESH_STATE_DIR": "state_dir",
    "MESH_DB": "sqlite_db_path",
    "MESH_SQLITE_DB_PATH": "sqlite_db_path",
    "MESH_SQLITE_FILE_MODE": "sqlite_file_mode",
    "MESH_LOG_FORMAT": "log_format",
    "MESH_LOG_LEVEL": "log_level",
    "MESH_HANDLERS": "handlers",
    "MESH_MAX_CAPACITY": "max_capacity",
    "MESH_CONCURRENCY": "concurrency",
    "MESH_HEARTBEAT_INTERVAL_SECONDS": "heartbeat_interval_seconds",
    "MESH_NODE_TIMEOUT_SECONDS": "node_timeout_seconds",
    "MESH_SUSPECT_AFTER_SECONDS": "suspect_after_seconds",
    "MESH_TASK_TIMEOUT_SECONDS": "task_timeout_seconds",
    "MESH_REDIS_URL": "redis.url",
    "MESH_REDIS_CLUSTER": "redis.cluster",
    "MESH_REDIS_TLS_CA_FILE": "redis.tls_ca_file",
    "MESH_REDIS_TLS_CERT_FILE": "redis.tls_cert_file",
    "MESH_REDIS_TLS_KEY_FILE": "redis.tls_key_file",
    "MESH_REDIS_SENTINELS": "redis.sentinels",
    "MESH_REDIS_SERVICE": "redis.service",
    "MESH_REDIS_CLUSTER_NODES": "redis.cluster_nodes",
    "MESH_REDIS_WAIT_REPLICAS": "redis.wait_replicas",
    "MESH_REDIS_WAIT_TIMEOUT_MS": "redis.wait_timeout_ms",
    "MESH_GRPC_PORT": "grpc.port",
    "MESH_GRPC_SEEDS": "grpc.seeds",
    "MESH_GRPC_HOST": "grpc.host",
    "MESH_GRPC_ADVERTISE": "grpc.advertise",
    "MESH_GRPC_INSECURE": "grpc.insecure",
    "MESH_GRPC_TLS": "grpc.tls.enabled",
    "MESH_API_KEY": "security.api_key",
    "MESH_METRICS_PORT": "metrics.port",
    "MESH_METRICS_HOST": "metrics.host",
    "MESH_LOAD_BALANCING_ALGORITHM": "task_distribution.load_balancing_algorithm",
    "MESH_CONFLICT_STRATEGY": "memory_sync.conflict_resolution_strategy",
    "MESH_MEMORY_MAX_LAG_ITEMS": "memory_sync.max_lag_items",
    "MESH_MEMORY_MAX_LAG_WAIT_SECONDS": "memory_sync.max_lag_wait_seconds",
    "MESH_MEMORY_KEEP_LOG_FOR_ABSENT_SECONDS": "memory_sync.keep_log_for_absent_seconds",
}

# keys whose relative paths are resolved against the folder of the file that set them
PATH_KEYS = ("state_dir", "sqlite_db_path", *(f"redis.{key}" for key in TLS_FILE_KEYS))


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``agent_mesh:`` section of a YAML file, with relative paths made absolute."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config: {p} is not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config: {p}{where}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"config: {p} must hold a mapping with an agent_mesh: section")
    if "agent_mesh" not in doc:
        raise ConfigError(f"config: {p} has no agent_mesh: section")
    section = doc["agent_mesh"] if doc["agent_mesh"] is not None else {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"config: {p}: agent_mesh must be a mapping")
    section = dict(section)
    for dotted in PATH_KEYS:
        *parents, key = dotted.split(".")
        holder: dict[str, Any] | None = section
        for part in parents:  # a nested section is copied before it is changed
            inner = holder.get(part) if holder is not None else None
            if holder is None or not isinstance(inner, Mapping):
                holder = None
                break
            holder[part] = dict(inner)
            holder = holder[part]
        value = holder.get(key) if holder is not None else None
        if holder is not None and isinstance(value, str) and value and not os.path.isabs(value):
            holder[key] = str((p.parent / value).resolve())
    return section


def secrets_in(section: Mapping[str, Any]) -> list[str]:
    """The dotted keys of an ``agent_mesh:`` section that hold a secret: the API key, a Redis password."""
    found = []
    security, redis = section.get("security"), section.get("redis")
    if isinstance(security, Mapping) and security.get("api_key"):
        found.append("security.api_key")
    if isinstance(redis, Mapping):
        if redis.get("password"):
            found.append("redis.password")
        url = redis.get("url")
        if isinstance(url, str):
            try:
                has_password = bool(urlsplit(url).password)
            except ValueError:
                has_password = False
            if has_password:
                found.append("the password in redis.url")
    return found


def _exposed_secrets(path: str | os.PathLike[str], section: Mapping[str, Any]) -> list[str]:
    """One warning when the file at ``path`` holds a secret and group or others may read it."""
    secrets = secrets_in(section)
    mode = readable_by_others(path) if secrets else None
    if mode is None:
        return []
    return [f"{path} holds {' and '.join(secrets)} and is readable by other users (mode {mode:04o}): "
            f"run chmod 600 {path}"]


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None, use_default_file: bool = True) -> MeshConfig:
    """Build the effective config. ``overrides`` are dotted keys from CLI flags."""
    env = os.environ if env is None else env
    layers: dict[str, Any] = {}
    config_path = path or env.get("MESH_CONFIG")
    if config_path is None and use_default_file and Path("config.yaml").is_file():
        config_path = "config.yaml"
    warnings: list[str] = []
    if config_path:
        layers = read_file(config_path)
        warnings += _exposed_secrets(config_path, layers)
    env_layer: dict[str, Any] = {}
    for var, dotted in ENV_KEYS.items():
        if var.startswith("MERNSTA_") and env.get(var) is not None:
            _set_dotted(env_layer, dotted, env[var])
    for var, dotted in ENV_KEYS.items():
        if not var.startswith("MERNSTA_") and env.get(var) is not None:
            _set_dotted(env_layer, dotted, env[var])
    layers = _deep_merge(layers, env_layer)
    cli_layer: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(cli_layer, dotted, value)
    layers = _deep_merge(layers, cli_layer)
    config = _build(MeshConfig, layers, "agent_mesh", warnings)
    return dataclasses.replace(config, warnings=tuple(warnings))
