"""The Redis backend's plumbing: connection pool, error translation, scripts, key names and wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from ... import codec
from ...config import RedisConfig
from ...errors import BackendError, BackendUnavailable, ConfigError
from ...model import NodeInfo
from ...security import without_password
from ..contracts import Quarantined, Topic
from ..shared import SharedStoreBackend
from . import scripts as lua
from . import tls

log = logging.getLogger("mesh.redis")
ALL = "all"
SCRIPTS = ("HEARTBEAT", "LEAVE", "SNAPSHOT", "ENQUEUE", "CLAIM", "RENEW", "COMPLETE", "REASSIGN", "STRANDED", "CANCEL",
           "REPLAY", "HOLD_LEASE", "LIST", "PRUNE", "COMPACT", "ASIDE")
PLAIN_SCRIPTS = {"HOLD_LEASE", "COMPACT"}  # the others are built on COMMON and answer {result, quarantined}
QUARANTINE_KEPT = 10_000  # entries of the quarantine stream kept (approximately), as in the scripts


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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
                                  "timeout": self.cfg.socket_timeout_seconds, **tls.options(self.cfg)}
        if self.cfg.url:
            pool = aioredis.BlockingConnectionPool.from_url(self.cfg.url, **common)
        else:
            pool = aioredis.BlockingConnectionPool(host=self.cfg.host, port=self.cfg.port, db=self.cfg.db, **common)
        return aioredis.Redis(connection_pool=pool)

    async def _call(self, coro: Any, *, opening: bool = False) -> Any:
        """Await a Redis call; its failure as a mesh error. ``opening``: the first call, whose connection failure
        is looked into (a TLS refusal or a plaintext/TLS mismatch is a ``ConfigError`` saying what to fix)."""
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
            refusal = await tls.diagnose(self.cfg, exc) if opening else tls.explain(self.cfg, exc)
            if refusal is not None and opening:
                raise ConfigError(f"config: Redis at {self._where()} {refusal.what}", hint=refusal.fix) from None
            if refusal is not None:
                raise BackendUnavailable(f"Redis at {self._where()} {refusal.what}", hint=refusal.fix) from None
            raise BackendUnavailable(f"Redis at {self._where()} is unreachable: {exc}") from None

    async def _script(self, name: str, *args: Any) -> Any:
        raw = await self._call(self._scripts[name](args=[self.prefix, *args]))
        if name in PLAIN_SCRIPTS:
            return raw
        result, moved = raw
        for i in range(0, len(moved), 3):
            self.counted_kind(_s(moved[i]), f"{_s(moved[i + 1])}: {_s(moved[i + 2])} (by {name.lower()})")
        return result

    # -- quarantine ------------------------------------------------------------------------------
    async def _settle_aside(self) -> None:
        """Move aside what reads found unreadable: tasks by the ASIDE script (it takes them out of every
        queue), other records here, each with its raw bytes and reason in the quarantine stream."""
        taken = self.take_aside()
        if not taken or self._client is None:
            return
        tasks: list[Any] = []
        pipe = self._client.pipeline(transaction=True)
        others = []
        for q, where in taken:
            if where[0] == "task":  # ("task", id)
                tasks += [where[1], q.reason]
                continue
            others.append(q)
            pipe.xadd(self._key("quarantine"), {"kind": q.kind, "key": q.key, "raw": q.raw, "reason": q.reason,
                                                "at": repr(q.at)}, maxlen=QUARANTINE_KEPT, approximate=True)
            for op, *args in where:  # [(hdel | delete | xdel | srem, key, …)]: the original goes
                getattr(pipe, op)(*args)
        try:
            if others:
                await self._call(pipe.execute())
                self.counted(others)
            if tasks:
                await self._script("ASIDE", *tasks)
        except BackendError as exc:  # the read itself stands; the next read finds the records again
            log.warning("could not move %d unreadable records aside: %s", len(taken), exc)

    async def _wrong_type(self, kind: str, key: str, reason: str, removal: list[tuple[Any, ...]]) -> None:
        """Queue a key of the wrong type where the mesh keeps one of its own, with its dump as the raw bytes."""
        assert self._client is not None
        raw = await self._call(self._client.dump(key))
        self.set_aside(kind, key, raw or b"", reason, removal)

    async def quarantined(self, limit: int = 100) -> list[Quarantined]:
        assert self._client is not None
        rows = await self._call(self._client.xrevrange(self._key("quarantine"), count=limit))
        out = []
        for entry_id, f in rows:
            try:
                when = float(_s(f.get(b"at") or b""))
            except ValueError:  # the stream entry's own id says when, in milliseconds
                when = int(_s(entry_id).partition("-")[0]) / 1000
            out.append(Quarantined(_s(f.get(b"kind", b"?")), _s(f.get(b"key", b"")), _s(f.get(b"reason", b"")),
                                   when, f.get(b"raw", b"")))
        return out

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
