"""The Redis backend's plumbing: connection pool, error translation, scripts, key names and wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from ... import codec
from ...config import RedisConfig
from ...errors import BackendError, BackendUnavailable, ConfigError
from ...model import NodeInfo
from ...security import without_password
from ..contracts import Topic
from ..shared import SharedStoreBackend
from . import scripts as lua

ALL = "all"
SCRIPTS = ("HEARTBEAT", "LEAVE", "SNAPSHOT", "ENQUEUE", "CLAIM", "RENEW", "COMPLETE", "REASSIGN", "STRANDED", "CANCEL",
           "REPLAY", "HOLD_LEASE", "LIST", "PRUNE", "COMPACT")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisClient(SharedStoreBackend):
    """What the task, memory and membership parts share: one pool, its scripts, its keys and its wake channel."""

    def __init__(self, cfg: RedisConfig, *, limits: codec.CodecLimits = codec.DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.cfg = cfg
        self.prefix = f"mesh:{{{cfg.cluster}}}:"
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._local: NodeInfo | None = None
        self._scripts: dict[str, Any] = {}
        self.reconnects = 0
        self._closing = False

    # -- plumbing ----------------------------------------------------------------
    def _where(self) -> str:
        # Shown in status and error lines: never with its password.
        return without_password(self.cfg.url) if self.cfg.url else f"redis://{self.cfg.host}:{self.cfg.port}/{self.cfg.db}"

    def _connect(self) -> aioredis.Redis:
        # A blocking pool makes a burst of concurrent calls wait for a connection instead of failing
        # with "Too many connections" (redis-py's default pool refuses past its limit).
        common: dict[str, Any] = {"socket_timeout": self.cfg.socket_timeout_seconds,
                                  "socket_connect_timeout": self.cfg.socket_timeout_seconds,
                                  "health_check_interval": 15, "username": self.cfg.username,
                                  "password": self.cfg.password, "max_connections": 64,
                                  "timeout": self.cfg.socket_timeout_seconds}
        if self.cfg.url:
            pool = aioredis.BlockingConnectionPool.from_url(self.cfg.url, **common)
        else:
            pool = aioredis.BlockingConnectionPool(host=self.cfg.host, port=self.cfg.port, db=self.cfg.db, **common)
        return aioredis.Redis(connection_pool=pool)

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except AuthenticationError as exc:
            raise ConfigError(f"config: Redis at {self._where()} refused the credentials: {exc}",
                              hint="check redis.username and redis.password") from None
        except ResponseError as exc:
            if "NOPERM" in str(exc) or "NOAUTH" in str(exc):
                raise ConfigError(f"config: Redis at {self._where()} denied access: {exc}",
                                  hint=f"the ACL user needs ~{self.prefix}* and &{self.prefix}*") from None
            raise BackendError(f"Redis error: {exc}") from None
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"Redis at {self._where()} is unreachable: {exc}") from None

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._call(self._scripts[name](args=[self.prefix, *args]))

    def _key(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    def _register_scripts(self, client: aioredis.Redis) -> None:
        for name in SCRIPTS:
            self._scripts[name] = client.register_script(getattr(lua, name))

    # -- wake-ups ------------------------------------------------------------------
    async def _listen(self) -> None:
        """Subscribe to this node's wake channel and the broadcast one; reconnect with backoff."""
        assert self._local is not None and self._client is not None
        channels = [self._key("wake:", self._local.node_id), self._key("wake:", ALL)]
        delay = 0.1
        while not self._closing:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                delay = 0.1
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if message and message.get("type") == "message":
                        self._deliver(_s(message["data"]))
            except asyncio.CancelledError:
                await _close_quickly(pubsub)
                raise
            except (RedisError, OSError):
                self.reconnects += 1
            await _close_quickly(pubsub)
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            for topic in Topic:
                self._deliver(topic)  # anything may have happened while we were away

    async def _wake(self, node_ids: Iterable[str | None], topic: str) -> None:
        assert self._client is not None
        own = self._local.node_id if self._local else None
        targets = {n for n in node_ids if n}
        if not targets:
            return
        pipe = self._client.pipeline(transaction=False)
        for node_id in targets:
            if node_id == own:
                self._deliver(topic)
            else:
                pipe.publish(self._key("wake:", node_id), topic)
        with contextlib.suppress(BackendError):
            await self._call(pipe.execute())

    async def _broadcast(self, topic: str) -> None:
        assert self._client is not None
        with contextlib.suppress(BackendError):
            await self._call(self._client.publish(self._key("wake:", ALL), topic))


async def _close_quickly(thing: Any) -> None:
    """Close a client or pub/sub without waiting out a socket timeout on a half-read connection."""
    try:
        async with asyncio.timeout(0.5):
            await thing.aclose()
    except (TimeoutError, Exception):
        pool = getattr(thing, "connection_pool", None)
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=True)
