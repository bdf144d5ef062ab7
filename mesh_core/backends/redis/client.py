"""The Redis backend's plumbing: connection pool, error translation, scripts, key names and wake-ups.

Three ways to reach Redis (``RedisConfig.mode``): one server (``url`` or host/port); a primary found through
Sentinel (``sentinels`` + ``service``: redis-py's Sentinel pool asks the sentinels for the primary on every new
connection, and drops a connection that finds its server demoted, so a failover is followed by reconnecting);
or Redis Cluster (``cluster_nodes``: ``RedisCluster`` follows MOVED replies and refreshes its slot map after a
failover, and retries a failed call at once, so a failover reaches the node as failing calls, not as a call held
for seconds). Every key carries the hash tag ``{cluster}``, so all of them, and every script, live in one slot.
Wake-ups use classic pub/sub, which Redis Cluster carries to every node over its bus: the scripts' PUBLISH reach
a subscriber on any node (sharded pub/sub would need SPUBLISH in the scripts). The subscription is watched
(``_listen``): a quiet node probes it by publishing on its own channel, and makes it again, counted in
``reconnects``, when the probe does not come back or (Cluster) the slot has moved to another server.

An outage (calls failing as unreachable) is timed from its first failure to the next success, counted
(``redis_outages``) and told as a problem with its length; ``describe`` shows the last one and the server in use.
With ``wait_replicas`` the writes that acknowledge (task submitted, result recorded, memory write) return only
after that many replicas have them (a write then ``WAIT`` on one connection); fewer within ``wait_timeout_ms`` is
a ``BackendUnavailable`` and a ``redis_wait_timeouts`` problem, never a silent success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from ... import codec
from ...addresses import split_host_port
from ...coalesce import Coalescer
from ...config import RedisConfig
from ...errors import BackendError, BackendUnavailable, ConfigError, MeshError
from ...model import NodeInfo
from ...security import without_password
from ..contracts import Assignment, Completion, Enqueued, Quarantined, Topic
from ..shared import SharedStoreBackend
from . import scripts as lua
from . import tls
from .lean import LeanLine, LeanPubSub, usable
from .prompt import prompt

log = logging.getLogger("mesh.redis")
ALL = "all"
SCRIPTS = ("HEARTBEAT", "LEAVE", "SNAPSHOT", "ENQUEUE", "CLAIM", "RENEW", "COMPLETE", "REASSIGN", "STRANDED", "CANCEL",
           "REPLAY", "HOLD_LEASE", "LIST", "PRUNE", "COMPACT", "ASIDE")
PLAIN_SCRIPTS = {"HOLD_LEASE", "COMPACT"}  # the others are built on COMMON and answer {result, quarantined}
QUARANTINE_KEPT = 10_000  # entries of the quarantine stream kept (approximately), as in the scripts
# Replies that mean "not the primary now" or "the cluster is between owners": the medium is away, not broken.
# (RedisCluster follows MOVED itself; one reaches us only from the WAIT sent to a node chosen by a stale map.)
FAILING_OVER = (ReadOnlyError, ClusterDownError, TryAgainError, MovedError)
# The wake-up subscription is checked by a probe this node publishes on its own channel after this long without a
# message; a probe published that has not come back this long after means the subscription is gone.
PROBE = "probe"
STARTED = b"T"  # a wake-up that is the tasks started for this node (ENQUEUE): the rest of it is their fields
PROBE_QUIET_SECONDS = 2.0
PROBE_WAIT_SECONDS = 3.0
# Retries of a cluster call that failed (connection error, timeout, CLUSTERDOWN), sent at once as redis-py 8.1 did:
# 8.2 waits its retry's backoff between them, and its default one held a call 3-4 s through a failover, unseen.
CLUSTER_RETRIES = 10


class MeshClusterPipeline(ClusterPipeline):
    """A cluster pipeline that takes ``publish``: redis-py refuses PUBLISH in one, so it is sent right after the
    pipeline (a wake-up need not be inside the MULTI), its answer last as if it had been queued last."""

    def __init__(self, client: RedisCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self._wakes: list[tuple[Any, Any]] = []

    def publish(self, channel: Any, message: Any, **_: Any) -> MeshClusterPipeline:  # type: ignore[override]
        self._wakes.append((channel, message))
        return self

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if args and str(args[0]).upper() == "PUBLISH":  # a command list sent as is (``RedisMemory._transaction``)
            return self.publish(*args[1:3])
        return super().execute_command(*args, **kwargs)

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        out = await super().execute(raise_on_error, allow_redirections) if len(self) else []
        wakes, self._wakes = self._wakes, []
        return [*out, *[await self.cluster_client.publish(c, m) for c, m in wakes]]


class MeshRedisCluster(RedisCluster):
    """``RedisCluster`` with ``publish`` (redis-py's asyncio cluster has none before 8.0: the channel's slot picks
    the node, and Redis Cluster carries the message to every node); its pipelines take it (``MeshClusterPipeline``)."""

    async def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return await self.execute_command("PUBLISH", channel, message, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> MeshClusterPipeline:
        return MeshClusterPipeline(self, transaction)  # type: ignore[abstract]  # redis-py sets it at runtime


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (the primary asked of the sentinels per connection) that waits for a free connection."""


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RedisClient(SharedStoreBackend):
    """What the task, memory and membership parts share: one pool, its scripts, its keys and its wake channel."""

    INLINE_ENQUEUE = True

    def __init__(self, cfg: RedisConfig, *, limits: codec.CodecLimits = codec.DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.cfg = cfg
        self.prefix = f"mesh:{{{cfg.cluster}}}:"
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._local: NodeInfo | None = None
        self._scripts: dict[str, Any] = {}
        self._line: LeanLine | None = None  # one server: the scripts' and memory writes' own connection (``lean``)
        self._reads: LeanLine | None = None  # and the one of the result feed's blocking reads
        self._lean_tls: ssl.SSLContext | None = None
        self.reconnects = 0
        self._closing = False
        self._sentinel: Sentinel | None = None
        self._confirm = Coalescer(self._wait_batch)  # one WAIT serves every write finished before it was sent
        self.wait_timeouts = 0
        self.outages = 0
        self.outage_seconds_total = 0.0
        self.last_outage: dict[str, Any] | None = None
        self._outage_since: float | None = None  # monotonic time of the first failure of the outage under way
        self._outage_began = 0.0

    # -- plumbing ----------------------------------------------------------------
    def _where(self) -> str:
        # Shown in status and error lines: never with its password.
        if self.cfg.mode == "sentinel":
            return f"sentinel {self.cfg.service} via {','.join(self.cfg.sentinels)}"
        if self.cfg.mode == "cluster":
            return f"cluster {','.join(self.cfg.cluster_nodes)}"
        return without_password(self.cfg.url) if self.cfg.url else f"redis://{self.cfg.host}:{self.cfg.port}/{self.cfg.db}"

    def _connect(self) -> Any:
        # A blocking pool makes a burst of concurrent calls wait for a connection instead of failing
        # with "Too many connections" (redis-py's default pool refuses past its limit).
        cfg = self.cfg
        common: dict[str, Any] = {**self._server_options(), "max_connections": 64}
        socket = {k: common[k] for k in ("socket_timeout", "socket_connect_timeout")}
        if cfg.mode == "cluster":
            nodes = [ClusterNode(*_address(a)) for a in cfg.cluster_nodes]
            return MeshRedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), CLUSTER_RETRIES), **common)
        common["timeout"] = cfg.socket_timeout_seconds  # the wait for a free connection
        if cfg.mode == "sentinel":
            self._sentinel = Sentinel([_address(a) for a in cfg.sentinels],
                                      sentinel_kwargs={**socket, "password": cfg.sentinel_password})
            client = self._sentinel.master_for(cfg.service, connection_pool_class=BlockingSentinelPool, db=cfg.db,
                                               **common)
            client.connection_pool.connection_class = prompt(client.connection_pool.connection_class)
            return client
        if cfg.url:
            pool = aioredis.BlockingConnectionPool.from_url(cfg.url, **common)
        else:
            pool = aioredis.BlockingConnectionPool(host=cfg.host, port=cfg.port, db=cfg.db, **common)
        pool.connection_class = prompt(pool.connection_class)  # each command written in its caller's task
        return aioredis.Redis(connection_pool=pool)

    def _server_options(self) -> dict[str, Any]:
        """What every connection to a data server takes: timeouts, credentials, TLS."""
        cfg = self.cfg
        return {"socket_timeout": cfg.socket_timeout_seconds, "socket_connect_timeout": cfg.socket_timeout_seconds,
                "health_check_interval": 15, "username": cfg.username, "password": cfg.password,
                **tls.options(cfg)}

    def _serving(self) -> str:
        """The server taking this node's writes now, as host:port ("?" before the first connection)."""
        client = self._client
        if isinstance(client, RedisCluster):
            try:
                return str(client.get_node_from_key(self.prefix).name)
            except Exception:  # no slot map yet
                return "?"
        pool = getattr(client, "connection_pool", None)
        if isinstance(pool, SentinelConnectionPool):
            found = pool.master_address
            return f"{found[0]}:{found[1]}" if found else "?"
        return self._where()

    async def _call(self, coro: Any, *, opening: bool = False) -> Any:
        """Await a Redis call; its failure as a mesh error. ``opening``: the first call, whose connection failure
        is looked into (a TLS refusal or a plaintext/TLS mismatch is a ``ConfigError`` saying what to fix).
        A failure that means Redis is away starts (or continues) an outage; the next success ends it."""
        try:
            answer = await coro
        except (RedisError, OSError) as exc:
            error = await self._translated(exc, opening)
            if isinstance(error, BackendUnavailable):
                self._away(error)
            raise error from None
        except AttributeError as exc:
            if not _raised_in_driver(exc):
                raise
            # redis-py's cluster client can use a connection another task has just closed during a failover
            # (its writer is None): the call did not reach Redis, as with a connection refused.
            error = BackendUnavailable(f"Redis at {self._where()} is unreachable: the client lost the connection "
                                       f"mid-call ({type(exc).__name__}: {exc})")
            self._away(error)
            raise error from None
        if self._outage_since is not None:
            self._back()
        return answer

    async def _translated(self, exc: BaseException, opening: bool) -> Exception:
        """A Redis failure as the mesh's error."""
        if isinstance(exc, AuthenticationError):
            return ConfigError(f"config: Redis at {self._where()} refused the credentials: {exc}",
                               hint="check redis.username and redis.password")
        if isinstance(exc, FAILING_OVER):  # a demoted primary, or a cluster between owners of the slot
            return BackendUnavailable(f"Redis at {self._where()} is failing over: {exc}")
        if isinstance(exc, ResponseError):
            if "NOPERM" in str(exc) or "NOAUTH" in str(exc):
                return ConfigError(f"config: Redis at {self._where()} denied access: {exc}",
                                   hint=f"the ACL user needs ~{self.prefix}* and &{self.prefix}*")
            return BackendError(f"Redis error: {exc}")
        refusal = await tls.diagnose(self.cfg, exc) if opening else tls.explain(self.cfg, exc)
        if refusal is not None and opening:
            return ConfigError(f"config: Redis at {self._where()} {refusal.what}", hint=refusal.fix)
        if refusal is not None:
            return BackendUnavailable(f"Redis at {self._where()} {refusal.what}", hint=refusal.fix)
        return BackendUnavailable(f"Redis at {self._where()} is unreachable: {exc}")

    # -- outages ---------------------------------------------------------------------------------
    def _away(self, error: Exception) -> None:
        if self._outage_since is None:
            self._outage_since, self._outage_began = time.monotonic(), time.time()
            log.warning("Redis is away (%s): calls fail until it is back", error)

    def _back(self) -> None:
        """The first success after an outage: time it, count it, tell the node."""
        assert self._outage_since is not None
        seconds = time.monotonic() - self._outage_since
        self._outage_since = None
        self.outages += 1
        self.outage_seconds_total += seconds
        serving = self._serving()
        self.last_outage = {"seconds": round(seconds, 3), "began": self._outage_began, "serving": serving}
        self.found_problem("redis_outages", f"Redis at {self._where()} was away for {seconds:.1f} s; "
                                            f"back, served by {serving}")

    def availability(self) -> dict[str, Any]:
        """What ``status`` shows of the way to Redis: its mode, the server in use, outages and WAIT shortfalls."""
        out: dict[str, Any] = {"mode": self.cfg.mode, "serving": self._serving(), "outages": self.outages,
                               "outage_seconds_total": round(self.outage_seconds_total, 3)}
        if self.last_outage is not None:
            out["last_outage"] = self.last_outage
        away = self.outage()
        if away is not None:
            out["away_seconds"] = round(away, 3)
        if self.cfg.wait_replicas:
            out.update(wait_replicas=self.cfg.wait_replicas, wait_timeouts=self.wait_timeouts)
        return out

    def outage(self) -> float | None:
        """Seconds the outage under way has lasted; None while Redis answers."""
        return None if self._outage_since is None else time.monotonic() - self._outage_since

    # -- acknowledged writes -----------------------------------------------------------------------
    async def enqueue(self, assignments: Sequence[Assignment]) -> list[Enqueued]:
        out = await super().enqueue(assignments)
        await self._replicated()
        return out

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        out = await super().complete(completions)
        await self._replicated()
        return out

    async def publish_memory(self, origin: str, entries: Sequence[tuple[str, str, bytes]],
                             broadcast: bool = True) -> Any:
        out = await super().publish_memory(origin, entries, broadcast)
        await self._replicated()
        return out

    async def _replicated(self) -> None:
        """Return once ``wait_replicas`` replicas hold every write this node finished so far (no wait when 0)."""
        if self.cfg.wait_replicas:
            await self._confirm([None])

    async def _wait_batch(self, items: list[None]) -> list[None]:
        # WAIT counts the replicas that reached this connection's last write; a write of our own on the same
        # connection first makes that offset cover every write that finished before it (one replication stream).
        assert self._client is not None
        key, n, ms = self._key("wait"), self.cfg.wait_replicas, self.cfg.wait_timeout_ms
        if isinstance(self._client, RedisCluster):
            acked = await self._call(self._wait_on_node(key, n, ms))
        else:
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.wait(n, ms)
            acked = (await self._call(pipe.execute()))[1]
        if int(acked) < n:
            self.wait_timeouts += 1
            self.found_problem("redis_wait_timeouts", f"{int(acked)} of {n} replicas confirmed a write within {ms} ms")
            raise BackendUnavailable(
                f"Redis at {self._where()}: only {int(acked)} of redis.wait_replicas = {n} replicas confirmed the "
                f"write within {ms} ms; it is on the primary but may not survive a failover",
                hint="check the replicas (INFO replication), or raise redis.wait_timeout_ms")
        return [None] * len(items)

    async def _wait_on_node(self, key: str, n: int, ms: int) -> int:
        """INCR then WAIT on one connection of the node serving ``key`` (a cluster pipeline spreads keyless
        commands over nodes)."""
        assert isinstance(self._client, RedisCluster)
        await self._client.initialize()
        node = self._client.get_node_from_key(key)
        commands = [PipelineCommand(0, "INCR", key), PipelineCommand(1, "WAIT", n, ms)]
        await node.execute_pipeline(commands)
        for command in commands:
            if isinstance(command.result, Exception):
                raise command.result
        return int(commands[1].result)

    async def _script(self, name: str, *args: Any) -> Any:
        # The prefix as the one key names the slot: Redis Cluster runs the script on the node serving it.
        line, keys, argv = self._line, [self.prefix], [self.prefix, *args]
        raw = await self._call(line.script(self._scripts[name].script, keys, argv) if line is not None
                               else self._scripts[name](keys=keys, args=argv))
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
        if usable(self.cfg):
            self._lean_tls = tls.client_context(self.cfg)
            self._line, self._reads = LeanLine(self.cfg, self._lean_tls), LeanLine(self.cfg, self._lean_tls)

    # -- wake-ups ------------------------------------------------------------------
    async def _listen(self) -> None:
        """Subscribe to this node's wake channel and the broadcast one, and keep that subscription alive: a
        subscription that fails, is found gone (``_receive``) or, on Redis Cluster, is on a server that no longer
        serves the slot is dropped and made again (with backoff), each time counted in ``reconnects``."""
        assert self._local is not None and self._client is not None
        channels = [self._key("wake:", self._local.node_id), self._key("wake:", ALL)]
        delay = 0.1
        while not self._closing:
            subscription: _Subscription | None = None
            began = time.monotonic()
            try:
                subscription = await self._subscribe(channels)
                await self._receive(subscription, channels[0])
            except asyncio.CancelledError:
                if subscription is not None:
                    await subscription.close()
                raise
            except Exception as exc:  # the listener outlives any one fault: a node without it hears nothing
                if not isinstance(exc, (RedisError, OSError, SubscriptionLost)) and not _raised_in_driver(exc):
                    log.exception("wake-up listener fault: subscribing again")
                elif isinstance(exc, SubscriptionLost):
                    log.warning("%s: subscribing again", exc)
                self.reconnects += 1
            if subscription is not None:
                await subscription.close()
                if time.monotonic() - began > PROBE_QUIET_SECONDS + PROBE_WAIT_SECONDS:
                    delay = 0.1  # it held a while: this is a new fault, not the same one again
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            for topic in Topic:
                self._deliver(topic)  # anything may have happened while we were away

    async def _subscribe(self, channels: list[str]) -> _Subscription:
        """A pub/sub subscribed to ``channels``. On Redis Cluster it has a connection of its own to the server
        serving their slot (as the client's map says now): the cluster client closes every connection of its nodes
        when it reads the map again (CLUSTERDOWN, a run of MOVED), which would take the subscription with it,
        mid-command at times (redis-py then fails inside with an AttributeError, which ended the listener). Its
        own client retries nothing, so a failure comes back here to choose the server again."""
        client = self._client
        assert client is not None
        if self._line is not None:  # one server: the wake-ups read as they arrive, on a connection of their own
            subscription = _Subscription(LeanPubSub(self.cfg, self._lean_tls), None, None)
        elif not isinstance(client, RedisCluster):
            subscription = _Subscription(client.pubsub(ignore_subscribe_messages=True), None, None)
        else:
            await client.initialize()  # the map again if a failover tore it down
            node = client.get_node_from_key(channels[0])
            own = aioredis.Redis(host=node.host, port=node.port, retry=Retry(NoBackoff(), 0),
                                 **self._server_options())
            subscription = _Subscription(own.pubsub(ignore_subscribe_messages=True), own, str(node.name))
        try:
            await subscription.pubsub.subscribe(*channels)
        except BaseException:
            await subscription.close()
            raise
        return subscription

    async def _receive(self, subscription: _Subscription, own: str) -> None:
        """Deliver wake-ups until the node closes. Raise ``SubscriptionLost`` when the subscription is found not to
        work: after ``PROBE_QUIET_SECONDS`` without a message this node publishes a probe on its own channel (through
        the client, as any wake-up is sent), which must come back within ``PROBE_WAIT_SECONDS``; on Redis Cluster,
        also when the client's map says another server serves the slot now."""
        pubsub = subscription.pubsub
        heard = time.monotonic()  # the last message: proof that the subscription works
        probe: asyncio.Task[float | None] | None = None
        asked = 0.0  # when the last probe was started
        published: float | None = None  # when that probe was published, until a message comes
        try:
            while not self._closing:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                now = time.monotonic()
                if message and message.get("type") == "message":
                    heard = now
                    data = message["data"]
                    if data[:1] == STARTED:
                        self._started_here(data[1:])
                    elif (topic := _s(data)) != PROBE:
                        self._deliver(topic)
                moved = self._moved_from(subscription)
                if moved:
                    raise SubscriptionLost(moved)
                if probe is None and published is None and now - heard > PROBE_QUIET_SECONDS:
                    asked, probe = now, asyncio.get_running_loop().create_task(self._probe(own))
                if probe is not None and probe.done():
                    published, probe = probe.result(), None
                    if published is None:  # Redis did not take it: no news of the subscription; ask again later
                        heard = now
                if published is not None and heard >= asked:
                    published = None  # a message came after the probe was asked for: the subscription works
                if published is not None and now - published > PROBE_WAIT_SECONDS:
                    raise SubscriptionLost(f"wake-up subscription on {subscription.where or self._serving()} is "
                                           f"gone: a probe published {now - published:.1f} s ago did not come back")
        finally:
            if probe is not None:
                probe.cancel()
                if probe.done() and not probe.cancelled():
                    probe.exception()  # read, so that asyncio does not log it as never retrieved

    def _started_here(self, packed: bytes) -> None:
        """Tasks an ENQUEUE started for this node, in its wake-up (``RedisTasks`` runs them)."""

    def _moved_from(self, subscription: _Subscription) -> str | None:
        """Why a cluster subscription should move: the client's map says another server serves its slot."""
        client = self._client
        if subscription.where is None or not isinstance(client, RedisCluster):
            return None
        try:
            owner = str(client.get_node_from_key(self.prefix).name)
        except Exception:  # no map at the moment (a failover under way): the probe still watches
            return None
        if owner == subscription.where:
            return None
        return f"wake-up subscription on {subscription.where}, but {owner} serves the slot now"

    async def _probe(self, channel: str) -> float | None:
        """Publish a probe on ``channel``; when it was published, or None if Redis did not take it."""
        assert self._client is not None
        try:
            await self._call(self._client.publish(channel, PROBE))
        except MeshError:
            return None
        return time.monotonic()

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


class SubscriptionLost(Exception):
    """The wake-up subscription was found not to work (or to be on a server that no longer serves the slot)."""


class _Subscription:
    """A wake-up pub/sub, the client it has to itself (Redis Cluster) and that client's server."""

    def __init__(self, pubsub: Any, own: aioredis.Redis | None, where: str | None) -> None:
        self.pubsub, self.own, self.where = pubsub, own, where

    async def close(self) -> None:
        await _close_quickly(self.pubsub)
        if self.own is not None:
            await _close_quickly(self.own)


DRIVER_FOLDER = os.path.dirname(redis.__file__)


def _raised_in_driver(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside redis-py (its innermost frame is in the redis package)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(DRIVER_FOLDER + os.sep)


def _address(text: str) -> tuple[str, int]:
    found = split_host_port(text)
    assert found is not None  # the config checked it
    return found


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
