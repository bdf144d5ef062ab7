"""Backends by protocol name (a registry, so new media plug in without touching the manager)."""

from __future__ import annotations

from collections.abc import Callable

from .. import codec
from ..config import MeshConfig
from ..errors import ConfigError
from ..files import parse_file_mode
from .contracts import Backend
from .hybrid import Caller, choose


def _sqlite(config: MeshConfig, limits: codec.CodecLimits) -> Backend:
    from .sqlite import SqliteBackend
    return SqliteBackend(config.sqlite_db_path, limits=limits, file_mode=parse_file_mode(config.sqlite_file_mode))


def _redis(config: MeshConfig, limits: codec.CodecLimits) -> Backend:
    try:
        from .redis import RedisBackend
    except ImportError:
        raise ConfigError("config: agent_mesh.protocol = 'redis_distributed' needs the redis package",
                          hint="pip install 'mesh-tui[redis]'") from None
    return RedisBackend(config.redis, limits=limits)


def _grpc(config: MeshConfig, limits: codec.CodecLimits) -> Backend:
    try:
        from .grpc import GrpcBackend
    except ImportError as exc:
        raise ConfigError(f"config: agent_mesh.protocol = 'grpc_mesh' is not available in this build ({exc})",
                          hint="pip install grpcio protobuf") from None
    return GrpcBackend(config, limits)


FACTORIES: dict[str, Callable[[MeshConfig, codec.CodecLimits], Backend]] = {
    "sqlite_local": _sqlite, "redis_distributed": _redis, "grpc_mesh": _grpc}


def create_backend(config: MeshConfig, limits: codec.CodecLimits, protocol: str | None = None) -> Backend:
    """The backend for ``protocol`` (default ``config.protocol``), which must name a medium, not ``hybrid``."""
    protocol = protocol or config.protocol
    factory = FACTORIES.get(protocol)
    if factory is None:
        raise ConfigError(f"config: agent_mesh.protocol = {protocol!r} is not available in this release "
                          f"(available: {', '.join(sorted(FACTORIES))}, hybrid)")
    return factory(config, limits)


async def choose_backend(config: MeshConfig, limits: codec.CodecLimits,
                         caller: Caller | None = None) -> tuple[Backend, str]:
    """The backend for ``config.protocol`` and one line saying which and why. ``hybrid`` probes what is
    configured first (about a second at most; see ``mesh_core.backends.hybrid``)."""
    if config.protocol != "hybrid":
        return create_backend(config, limits), f"{config.protocol} as configured"
    choice = await choose(config, caller or Caller())
    return create_backend(config, limits, choice.protocol), choice.reason
