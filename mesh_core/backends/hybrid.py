"""``hybrid``'s start-up probes (I/O): PING the configured Redis, ``Handshake`` each configured gRPC seed.

Every probe runs at once and gives up after ``PROBE_TIMEOUT_S``, so choosing costs about a second at
worst. What they found goes to ``choice.decide`` (pure), which picks the medium and says why in one line.
Nothing is probed that the user did not configure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import GrpcConfig, MeshConfig, RedisConfig
from ..errors import ConfigError
from ..security import without_password
from ..waits import within
from .choice import Choice, RedisProbe, SeedOutcome, SeedProbe, decide
from .grpc import API_KEY_HEADER
from .grpc.tls import TlsFiles, tls_files

if TYPE_CHECKING:
    from .redis.tls import Refusal

PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Caller:
    """Who is asking: the ``Hello`` a seed gets (the node has no server of its own yet)."""

    node_id: str = ""
    node_name: str = ""
    incarnation: int = 0
    client: bool = False


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _connect_error(exc: BaseException, timeout: float) -> str:
    """A failed connection in a few words: refused, timed out, or the error's first line."""
    seen: BaseException | None = exc
    for _ in range(8):  # redis-py wraps the socket's error; a few links down is enough
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return "connection refused"
        if isinstance(seen, TimeoutError) or "timed out" in str(seen).lower() or "timeout" in str(seen).lower():
            return f"no answer within {timeout:g} s"
        seen = seen.__cause__ or seen.__context__
    return f"{type(exc).__name__}: {_first_line(str(exc))}"


async def probe_redis(cfg: RedisConfig, timeout: float = PROBE_TIMEOUT_S) -> RedisProbe:
    """PING ``cfg.url`` once, without retries; the answer's round trip in ms, or why there was none. With
    ``redis.sentinels`` or ``redis.cluster_nodes``, the primary they name (``probe_ha``)."""
    if cfg.mode != "single":
        return await probe_ha(cfg, timeout)
    assert cfg.url is not None
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    from .redis import tls  # the backend's TLS options and its words for a refused handshake

    shown = without_password(cfg.url)
    client = Redis.from_url(cfg.url, username=cfg.username, password=cfg.password, socket_timeout=timeout,
                            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), **tls.options(cfg))
    started = time.perf_counter()
    try:
        await within(client.ping(), timeout)
        return RedisProbe(shown, answered=True, ms=_elapsed_ms(started))
    except TimeoutError as exc:
        refusal = await tls.diagnose(cfg, exc, timeout) if cfg.tls else None  # a plaintext server never answers
        return RedisProbe(shown, answered=False, error=_refused(refusal) or f"no answer within {timeout:g} s")
    except AuthenticationError as exc:
        return RedisProbe(shown, answered=False, error=f"refused the credentials: {_first_line(str(exc))}")
    except ResponseError as exc:  # NOAUTH, NOPERM: it is there but will not serve us
        return RedisProbe(shown, answered=False, error=_first_line(str(exc)))
    except (RedisError, OSError) as exc:
        refusal = await tls.diagnose(cfg, exc, timeout)
        return RedisProbe(shown, answered=False, error=_refused(refusal) or _connect_error(exc, timeout))
    finally:
        try:
            await client.aclose()
        except (RedisError, OSError):
            pass


async def probe_ha(cfg: RedisConfig, timeout: float = PROBE_TIMEOUT_S) -> RedisProbe:
    """PING through the backend's own Sentinel or Cluster client: the sentinels must name a primary that
    answers, or a cluster node must answer with the slot map."""
    from redis.exceptions import RedisError

    from .redis import RedisBackend

    backend = RedisBackend(cfg)
    shown = backend._where()
    client = backend._client = backend._connect()
    started = time.perf_counter()
    try:
        await within(client.ping(), timeout)
        return RedisProbe(shown, answered=True, ms=_elapsed_ms(started))
    except TimeoutError:
        return RedisProbe(shown, answered=False, error=f"no answer within {timeout:g} s")
    except (RedisError, OSError) as exc:
        return RedisProbe(shown, answered=False, error=_first_line(str(exc)) or type(exc).__name__)
    finally:
        await backend.close()  # the client and the sentinels' own connections, as a node closes them


def _refused(refusal: Refusal | None) -> str:
    """A TLS refusal (``redis.tls.Refusal``) as a probe's error: what happened, then what to do."""
    return f"{refusal.what}: {refusal.fix}" if refusal is not None else ""


def _read(path: str | None, key: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: agent_mesh.grpc.tls.{key} = {path!r} cannot be read: {exc.strerror}") from None


def _channel(seed: str, cfg: GrpcConfig, files: TlsFiles | None = None) -> Any:
    import grpc

    from .grpc.wire import channel_options  # the options every mesh channel uses

    options = channel_options(cfg.max_message_bytes, cfg.keepalive_seconds)
    if files is not None:  # grpc_mesh's mutual TLS (``grpc.tls``, or the mesh CA in <state_dir>/certs)
        creds = grpc.ssl_channel_credentials(root_certificates=_read(str(files.ca), "ca_file"),
                                             private_key=_read(str(files.key), "key_file"),
                                             certificate_chain=_read(str(files.cert), "cert_file"))
        return grpc.aio.secure_channel(seed, creds, options=options)
    if cfg.tls.enabled:
        creds = grpc.ssl_channel_credentials(root_certificates=_read(cfg.tls.ca_file, "ca_file"),
                                             private_key=_read(cfg.tls.key_file, "key_file"),
                                             certificate_chain=_read(cfg.tls.cert_file, "cert_file"))
        return grpc.aio.secure_channel(seed, creds, options=options)
    return grpc.aio.insecure_channel(seed, options=options)


async def probe_seed(seed: str, cfg: GrpcConfig, caller: Caller, api_key: str | None = None,
                     timeout: float = PROBE_TIMEOUT_S, files: TlsFiles | None = None) -> SeedProbe:
    """One ``Handshake`` with ``seed``: who it is and whether it speaks this node's protocol version."""
    import grpc

    from .grpc._generated import mesh_pb2, mesh_pb2_grpc

    ours = mesh_pb2.PROTOCOL_VERSION_CURRENT
    hello = mesh_pb2.Hello(protocol_version=ours, node_id=caller.node_id, node_name=caller.node_name,
                           incarnation=caller.incarnation, client=caller.client)
    metadata = ((API_KEY_HEADER, api_key),) if api_key else None
    started = time.perf_counter()
    try:
        async with _channel(seed, cfg, files) as channel:
            stub = mesh_pb2_grpc.MeshStub(channel)
            reply = await within(stub.Handshake(hello, timeout=timeout, metadata=metadata), timeout + 0.5)
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            return SeedProbe(seed, SeedOutcome.OTHER_VERSION, error=_first_line(details))
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return SeedProbe(seed, SeedOutcome.REFUSED, error=f"{code.name}: {_first_line(details)}")
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return SeedProbe(seed, SeedOutcome.REFUSED, error="not a mesh node: no mesh.v1.Mesh/Handshake")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return SeedProbe(seed, SeedOutcome.SILENT, error=f"no answer within {timeout:g} s")
        if "refused" in details.lower():
            return SeedProbe(seed, SeedOutcome.SILENT, error="connection refused")
        return SeedProbe(seed, SeedOutcome.SILENT, error=f"{code.name}: {_first_line(details)}")
    except TimeoutError:
        return SeedProbe(seed, SeedOutcome.SILENT, error=f"no answer within {timeout:g} s")
    ms = _elapsed_ms(started)
    if reply.protocol_version != ours:
        return SeedProbe(seed, SeedOutcome.OTHER_VERSION, ms=ms, node_name=reply.node_name,
                         version=reply.protocol_version)
    return SeedProbe(seed, SeedOutcome.ANSWERED, ms=ms, node_name=reply.node_name, version=reply.protocol_version)


async def probe_all(config: MeshConfig, caller: Caller,
                    timeout: float = PROBE_TIMEOUT_S) -> tuple[RedisProbe | None, list[SeedProbe]]:
    """Probe what is configured, all at once: the Redis of ``redis.url``, ``redis.sentinels`` or
    ``redis.cluster_nodes`` (None when none is set) and every seed."""
    configured = config.redis.url is not None or config.redis.mode != "single"
    redis = asyncio.ensure_future(probe_redis(config.redis, timeout)) if configured else None
    try:
        # the certificate the node would speak with: its own, or a one-shot client's NAME (node_name, or "cli")
        files = tls_files(config, caller.node_name if not caller.client else config.node_name or "cli") \
            if config.grpc.seeds else None
        seeds = await asyncio.gather(*(probe_seed(seed, config.grpc, caller, config.security.api_key, timeout,
                                                  files) for seed in config.grpc.seeds))
        return (await redis if redis is not None else None), list(seeds)
    finally:
        if redis is not None and not redis.done():
            redis.cancel()


async def choose(config: MeshConfig, caller: Caller, timeout: float = PROBE_TIMEOUT_S) -> Choice:
    """Probe, then decide (``choice.decide``): the protocol for ``hybrid`` and the line saying why."""
    from .grpc._generated import mesh_pb2

    redis, seeds = await probe_all(config, caller, timeout)
    return decide(redis, seeds, mesh_pb2.PROTOCOL_VERSION_CURRENT)
