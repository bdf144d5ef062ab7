"""Redis high availability on loopback: a Sentinel set and a Redis Cluster of private servers.

``RedisSentinelSet``: a primary, one replica (``--replicaof``) and three
sentinels (``redis-server sentinel.conf --sentinel``) watching them under one
service name, quorum 2, the primary judged down after ``down_after_ms``.
``start()`` returns once the replica is in sync and every sentinel knows the
replica and the two other sentinels, so a kill -9 of the primary is followed by
a failover within a few seconds. ``RedisClusterSet``: six servers with
``--cluster-enabled yes`` joined by ``redis-cli --cluster create
--cluster-replicas 1`` (three primaries, each with a replica); ``start()``
returns once every node sees all 16384 slots served.

Each server is a ``RedisServer`` (free port, own folder, stopped by pid, cleaned
up at exit). ``kill_primary`` (kill -9) and ``wait_failover`` drive a failover; ``rejoin`` starts the killed
server again and waits until it is a replica in sync, so the set is whole again for the next test.
``RedisClusterSet.freeze_primary_for`` (SIGSTOP: a host that hangs, its connections open) and ``thaw`` do the
same without closing a socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from mesh_testing.redis_server import RedisServer, free_port

SERVICE = "mesh"


class SentinelServer(RedisServer):
    """A redis-server in sentinel mode, monitoring ``service`` at 127.0.0.1:``primary_port``."""

    def __init__(self, primary_port: int, service: str = SERVICE, *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 4000) -> None:
        super().__init__()
        self.primary_port = primary_port
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def arguments(self) -> list[str]:
        conf = Path(self.folder) / "sentinel.conf"  # the sentinel rewrites it with what it learns
        if not conf.exists():
            s = self.service
            conf.write_text("\n".join([
                f"port {self.port}", "bind 127.0.0.1", "protected-mode no", f"dir {self.folder}",
                f"sentinel monitor {s} 127.0.0.1 {self.primary_port} 2",
                f"sentinel down-after-milliseconds {s} {self.down_after_ms}",
                f"sentinel failover-timeout {s} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {s} 1", ""]))
        return [str(conf), "--sentinel"]


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _until(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} not within {timeout} s (last error: {last})")


class RedisSentinelSet:
    """``with RedisSentinelSet() as ha: ha.sentinel_addresses, ha.service``: a primary, a replica, three sentinels."""

    def __init__(self, service: str = SERVICE, *, down_after_ms: int = 1000, sentinels: int = 3) -> None:
        self.service = service
        self.primary = RedisServer()
        self.replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(self.primary.port)))
        self.sentinels = [SentinelServer(self.primary.port, service, down_after_ms=down_after_ms)
                          for _ in range(sentinels)]

    @property
    def servers(self) -> list[RedisServer]:
        """The data servers, the first primary first."""
        return [self.primary, self.replica]

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def __enter__(self) -> RedisSentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def start(self) -> RedisSentinelSet:
        try:
            self.primary.start()
            self.replica.start()
            _until("the replica in sync", lambda: _client(self.replica.port).info("replication")
                   .get("master_link_status") == "up", 15)
            for s in self.sentinels:
                s.start()
            _until("every sentinel knowing the replica and the other sentinels", self._settled, 20)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _settled(self) -> bool:
        for s in self.sentinels:
            with _client(s.port) as c:
                master = c.execute_command("SENTINEL", "MASTER", self.service)
                fields = _pairs(master)
                if int(fields.get("num-slaves", 0)) < 1 or int(fields.get("num-other-sentinels", 0)) < \
                        len(self.sentinels) - 1:
                    return False
        return True

    def primary_port(self) -> int:
        """The port the sentinels name as the primary now."""
        for s in self.sentinels:
            if s.proc is None or s.proc.poll() is not None:
                continue
            with contextlib.suppress(redis.RedisError, OSError), _client(s.port) as c:
                found = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                if found:
                    return int(found[1])
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> RedisServer:
        """kill -9 the current primary; the server killed."""
        port = self.primary_port()
        victim = next(s for s in self.servers if s.port == port)
        victim.kill()
        return victim

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Until the sentinels name another primary and it takes writes; its port."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.primary_port()
            if port == old_port:
                return False
            with _client(port) as c:
                if c.info("replication").get("role") != "master":
                    return False
            found.append(port)
            return True
        _until("a failover", promoted, timeout)
        return found[-1]

    def rejoin(self, server: RedisServer, timeout: float = 30) -> None:
        """Start a killed data server again (same port and folder) as a replica of the primary the sentinels name
        now, as an operator would (left to the sentinels, a server back as an empty primary is turned into a
        replica only some 8 s later), and wait until it is in sync: the set is whole again."""
        extra = list(server.extra)
        if "--replicaof" in extra:
            at = extra.index("--replicaof")
            del extra[at:at + 3]
        server.extra = (*extra, "--replicaof", "127.0.0.1", str(self.primary_port()))
        server.start()

        def synced() -> bool:
            primary = self.primary_port()
            with _client(server.port) as c:
                info = c.info("replication")
                if info.get("role") == "slave" and info.get("master_port") == primary:
                    return bool(info.get("master_link_status") == "up")
                if primary != server.port:  # a sentinel still named the old primary when it started: follow now
                    c.replicaof("127.0.0.1", primary)
                return False
        _until("the old primary back as a replica in sync", synced, timeout)

    def cleanup(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            with contextlib.suppress(Exception):
                server.cleanup()


def _pairs(raw: object) -> dict[str, str]:
    """A reply of field/value pairs (a flat list, or the dict redis-py makes of it) as text."""
    def text(x: object) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)
    if isinstance(raw, dict):
        return {text(k): text(v) for k, v in raw.items()}
    flat = [text(x) for x in raw]  # type: ignore[attr-defined]
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _cluster_nodes(c: redis.Redis) -> list[str]:
    raw = c.execute_command("CLUSTER NODES")  # redis-py parses this into a dict; the raw text is wanted
    return raw.decode().splitlines() if isinstance(raw, bytes) else [
        f"{v['node_id']} {k} {v['flags']} - - - - - {' '.join('-'.join(map(str, r)) for r in v['slots'])}"
        for k, v in raw.items()]


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli")
    if not found:
        raise RuntimeError("no redis-cli on PATH (Debian: apt-get install redis-tools)")
    return found


class RedisClusterSet:
    """``with RedisClusterSet() as rc: rc.node_addresses``: three primaries, each with one replica."""

    def __init__(self, primaries: int = 3, *, node_timeout_ms: int = 1000) -> None:
        self.primaries = primaries
        self.servers = [RedisServer(extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                           "--cluster-node-timeout", str(node_timeout_ms),
                                           "--cluster-port", str(free_port())))
                        for _ in range(primaries * 2)]
        self.frozen: list[RedisServer] = []  # stopped with SIGSTOP: up, its sockets open, answering nothing

    @property
    def node_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    def __enter__(self) -> RedisClusterSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def start(self) -> RedisClusterSet:
        try:
            cli = redis_cli_binary()
            for s in self.servers:
                s.start()
            done = subprocess.run([cli, "--cluster", "create", *self.node_addresses, "--cluster-replicas", "1",
                                   "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-1500:]} {done.stderr}")
            _until("every cluster node serving all slots", self._settled, 30)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _live(self) -> list[RedisServer]:
        """The servers that run and answer (not killed, not frozen)."""
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None and s not in self.frozen]

    def _settled(self) -> bool:
        for s in self._live():
            with _client(s.port) as c:
                info = c.cluster("INFO")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
                replication = c.info("replication")  # a replica never in sync cannot take over
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return False
        return True

    def primary_for(self, key: str) -> RedisServer:
        """The server that serves ``key``'s slot now, as a live node sees it."""
        for s in self._live():
            with contextlib.suppress(redis.RedisError, OSError), _client(s.port) as c:
                slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
                for line in _cluster_nodes(c):
                    parts = line.split()
                    if "master" not in parts[2] or "fail" in parts[2]:
                        continue
                    for r in parts[8:]:
                        low, _, high = r.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            port = int(parts[1].split("@")[0].rpartition(":")[2])
                            return next(x for x in self.servers if x.port == port)
        raise RuntimeError(f"no live node says who serves {key!r}")

    def kill_primary_for(self, key: str) -> RedisServer:
        """kill -9 the primary of ``key``'s slot; the server killed."""
        victim = self.primary_for(key)
        victim.kill()
        return victim

    def wait_failover(self, key: str, old: RedisServer, timeout: float = 30) -> RedisServer:
        """Until a live server serves ``key``'s slot and the cluster is whole again; that server."""
        found: list[RedisServer] = []

        def promoted() -> bool:
            try:
                owner = self.primary_for(key)
            except RuntimeError:  # between the old primary's fail flag and the promotion
                return False
            if owner is old or not self._settled():
                return False
            found.append(owner)
            return True
        _until("a cluster failover", promoted, timeout)
        return found[-1]

    def freeze_primary_for(self, key: str) -> RedisServer:
        """SIGSTOP the primary of ``key``'s slot, as a host that hangs: its connections stay open and nothing on
        them is answered (nor closed); the server frozen. ``thaw`` brings it back."""
        victim = self.primary_for(key)
        assert victim.proc is not None
        os.kill(victim.proc.pid, signal.SIGSTOP)
        self.frozen.append(victim)
        return victim

    def thaw(self, server: RedisServer, timeout: float = 30) -> None:
        """SIGCONT a frozen server and wait until the cluster is whole again (it learns it was failed over and
        turns into a replica of the new primary)."""
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGCONT)
        self.frozen.remove(server)
        _until("the frozen server back as a replica in sync", self._settled, timeout)

    def rejoin(self, server: RedisServer, timeout: float = 30) -> None:
        """Start a killed server again (same port, folder and nodes.conf) and wait until it is back as a replica
        in sync and every node serves all slots: the cluster is whole again."""
        server.start()
        _until("the old primary back as a replica in sync", self._settled, timeout)

    def cleanup(self) -> None:
        for server in self.frozen:
            with contextlib.suppress(Exception):
                os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.cleanup()
