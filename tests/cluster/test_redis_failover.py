"""Redis high availability (issue 15): the primary is killed (kill -9) during a 1,000-task run.

Two ``mesh-tui --no-ui`` workers and an in-process client share a Sentinel set or a Redis Cluster with
``redis.wait_replicas: 1``. A third of the way through, the primary that serves the mesh's slot is killed; once a
replica has taken over, the dead server is started again (same port and folder) and rejoins as a replica, as an
operator's restart would (so the session's set is whole again afterwards). The client retries what was not
acknowledged (same task id: one task). Afterwards every acknowledged task ran and was recorded exactly once,
every acknowledged memory write is on the new primary, and each node reports the outage it saw
(``redis_outages``, seconds in ``status``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

import mesh_testing
from mesh_core import AgentMeshManager, load_config
from mesh_core.errors import MeshError
from mesh_core.model import NodeRole, TaskStatus
from mesh_testing import eventually, until
from mesh_testing.redis_ha import RedisClusterSet, RedisSentinelSet

pytestmark = pytest.mark.slow

TASKS = 1000
MEMORY_EVERY = 5  # one memory write per five tasks
KILL_AFTER = TASKS // 3
SETTINGS = {"heartbeat_interval_seconds": 0.5, "suspect_after_seconds": 1.5, "node_timeout_seconds": 4.0,
            "shutdown_grace_seconds": 1.0, "concurrency": 16, "task_distribution": {"retry_backoff_seconds": 0.05}}


class Failover:
    """Drives the kill -9 and the restart of one HA set-up, and reads what its primary holds."""

    def __init__(self, mode: str, ha: RedisSentinelSet | RedisClusterSet) -> None:
        self.mode = mode
        self.ha: Any = ha
        self.seconds = 0.0  # kill to a promoted replica, as the harness saw it

    def settings(self) -> dict[str, Any]:
        if self.mode == "sentinel":
            ha = {"sentinels": self.ha.sentinel_addresses, "service": self.ha.service}
        else:
            ha = {"cluster_nodes": self.ha.node_addresses[:2]}
        return {**ha, "wait_replicas": 1, "wait_timeout_ms": 1000}

    def kill_and_restart(self, prefix: str) -> None:
        began = time.monotonic()
        if self.mode == "sentinel":
            victim = self.ha.kill_primary()
            self.ha.wait_failover(victim.port)
        else:
            victim = self.ha.kill_primary_for(prefix)
            self.ha.wait_failover(prefix, victim)
        self.seconds = time.monotonic() - began
        self.ha.rejoin(victim)  # same port and folder: it comes back as a replica of the new primary

    def subscribers(self, channel: str) -> int:
        """Subscribers of ``channel`` on the live data servers (a subscription dies with its server)."""
        total = 0
        for server in self.ha.servers:
            if server.proc is not None and server.proc.poll() is None:
                with redis.Redis(port=server.port) as c:
                    total += int(c.pubsub_numsub(channel)[0][1])
        return total

    def primary(self) -> redis.Redis | redis.RedisCluster:
        if self.mode == "sentinel":
            return redis.Redis(port=self.ha.primary_port())
        return redis.RedisCluster(host="127.0.0.1", port=self.ha.primary_for("{x}").port)


@pytest.mark.parametrize("mode", ["sentinel", "cluster"])
def test_nodes_follow_a_failover_and_lose_no_acknowledged_write(mode: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    failover = Failover(mode, request.getfixturevalue(f"redis_{mode}"))
    cluster = mesh_testing.Cluster(tmp_path, "redis", settings={**SETTINGS, "redis": failover.settings()})
    prefix = f"mesh:{{{cluster.name}}}:"
    try:
        workers = [cluster.start("a"), cluster.start("b")]
        until(lambda: workers[0].view() == {"a": "active", "b": "active"}, timeout=10)
        config = load_config(cluster.config, overrides={"state_dir": str(cluster.state)}, env={})
        run = asyncio.run(_run(config, failover, prefix))

        # every acknowledged task ran once and its result was recorded once
        assert len(run["tasks"]) == TASKS
        assert all(t.status is TaskStatus.SUCCEEDED for t in run["tasks"]), Counter(t.status for t in run["tasks"])
        for t in run["tasks"]:
            assert t.result == {"i": int(t.task_id.rpartition("-")[2])}
            assert len([x for x in t.attempts if x.finished_at and x.error is None]) == 1, t.attempts
        # every acknowledged memory write is on the new primary
        primary = failover.primary()
        missing = [k for k in run["memory"] if not primary.hexists(f"{prefix}mk:fact\0{k}", run["origin"])]
        assert not missing, missing[:10]

        # each worker subscribed to the wake-up channel again, on a live server
        until(lambda: failover.subscribers(f"{prefix}wake:all") >= len(workers), timeout=10)

        # each node saw the outage, timed it and says so in status
        seen = {"client": run["outage"]} if run["outage"] is not None else {}
        for w in workers:
            backend = w.status()["local"]["backend"]
            assert backend["mode"] == mode and backend["outages"] >= 1 and backend["reconnects"] >= 1, backend
            seen[w.name] = backend["last_outage"]["seconds"]
            w.wait_event(lambda e: e.get("event") == "Problem" and e.get("counter") == "redis_outages")
            health = [e.get("healthy") for e in w.lines if e.get("event") == "BackendStatus"]
            assert False in health and True in health[health.index(False):], health  # degraded, then back
        assert all(0 < s < 30 for s in seen.values()), seen
        print(f"\n{mode}: failover (kill to promoted replica) {failover.seconds:.1f} s; outage seen by the nodes "
              + ", ".join(f"{n} {s:.1f} s" for n, s in seen.items())
              + f"; run {run['seconds']:.1f} s; calls retried {run['retries']}, why {run['why']}")
        cluster.check_alive()
    finally:
        cluster.stop()


async def _run(config: Any, failover: Failover, prefix: str) -> dict[str, Any]:
    """Submit ``TASKS`` tasks and a memory write per ``MEMORY_EVERY``, retrying what was not acknowledged, with
    the primary killed after ``KILL_AFTER`` acknowledgements; wait for every task."""
    async with AgentMeshManager(config, role=NodeRole.CLIENT) as mesh:
        ids = [f"fo-{i:04d}" for i in range(TASKS)]
        acknowledged: list[str] = []
        memory: list[str] = []
        retries: Counter[str] = Counter()
        why: Counter[str] = Counter()
        enough = asyncio.Event()
        gate = asyncio.Semaphore(32)

        async def until_acknowledged(what: str, call: Any) -> None:
            async with gate:  # 32 calls at a time, their pauses included
                while True:
                    try:
                        await call()
                        return
                    except MeshError as exc:  # not acknowledged: the same call again (same task id: one task)
                        retries[f"{what}: {type(exc).__name__}"] += 1
                        why[_kind(exc)] += 1
                        await asyncio.sleep(0.2)

        async def one(i: int) -> None:
            await until_acknowledged("task", lambda: mesh.submit_task("echo", {"i": i}, task_id=ids[i]))
            acknowledged.append(ids[i])
            if i % MEMORY_EVERY == 0:
                key = f"fo-{i:04d}"
                await until_acknowledged("memory", lambda: mesh.sync_memory_item("fact", {"i": i}, key=key))
                memory.append(key)
            if len(acknowledged) >= KILL_AFTER:
                enough.set()

        async def kill() -> None:
            await enough.wait()
            await asyncio.to_thread(failover.kill_and_restart, prefix)

        began = time.monotonic()
        await asyncio.gather(kill(), *(one(i) for i in range(TASKS)))
        for task_id in ids:
            await mesh.wait_task(task_id, timeout=120)
        seconds = time.monotonic() - began
        tasks = [t for n in range(0, TASKS, 50) for t in await mesh.get_tasks(ids[n:n + 50])]
        # the client's own calls may all have landed outside the outage (the cluster client retries a moved slot)
        last = mesh.services.ctx.backend.last_outage  # type: ignore[attr-defined]
        return {"tasks": tasks, "memory": memory, "origin": mesh.node_id, "retries": dict(retries),
                "why": why.most_common(4),
                "outage": last["seconds"] if last else None, "seconds": seconds}


def _kind(exc: Exception) -> str:
    text = str(exc)
    for marker, kind in (("is unreachable", "unreachable"), ("replicas confirmed", "WAIT short"),
                         ("is failing over", "failing over"), ("is full", "nodes full")):
        if marker in text:
            return kind
    return type(exc).__name__


def _subscribers(rc: RedisClusterSet, channel: str) -> int:
    """Subscribers of ``channel`` on the cluster's servers that answer (none killed, none frozen)."""
    total = 0
    for server in rc._live():
        with redis.Redis(port=server.port, socket_timeout=2, socket_connect_timeout=2) as c:
            total += int(c.pubsub_numsub(channel)[0][1])
    return total


async def test_a_node_moves_its_wake_up_subscription_off_a_primary_that_hangs(tmp_path: Path,
                                                                              redis_cluster: RedisClusterSet) -> None:
    """The primary serving the mesh's slot hangs (SIGSTOP: its sockets stay open, nothing on them is answered or
    closed) and its replica takes over: within seconds the node is subscribed again on a server that answers,
    counted as a reconnect, and a wake-up sent then reaches it. (A subscription left on the hung server hears
    nothing, and no error ever says so: the node went without wake-ups until the server came back.)"""
    rc = redis_cluster
    cluster = mesh_testing.Cluster(tmp_path, "redis",
                                   settings={**SETTINGS, "redis": {"cluster_nodes": rc.node_addresses[:2]}})
    prefix = f"mesh:{{{cluster.name}}}:"
    try:
        a = await cluster.node("a")
        backend: Any = a.services.ctx.backend
        own = f"{prefix}wake:{a.node_id}"
        heard: list[str] = []
        backend.on_signal(lambda topic: (heard.append(topic), a.services.ctx.on_signal(topic)))
        await eventually(lambda: asyncio.to_thread(lambda: _subscribers(rc, own) == 1), 10)
        assert backend.reconnects == 0

        victim = await asyncio.to_thread(rc.freeze_primary_for, prefix)
        try:
            frozen = time.monotonic()
            await asyncio.to_thread(rc.wait_failover, prefix, victim)
            failed_over = time.monotonic() - frozen
            # subscribed again on a server that answers, within seconds
            await eventually(lambda: asyncio.to_thread(lambda: _subscribers(rc, own) == 1), 10)
            moved = time.monotonic() - frozen
            assert backend.reconnects >= 1
            with redis.RedisCluster(host="127.0.0.1", port=rc.primary_for(prefix).port) as c:
                c.publish(own, "checked")
            await eventually(lambda: "checked" in heard, 5)
            print(f"\nprimary frozen: failed over after {failed_over:.1f} s, the node subscribed on "
                  f"{backend.availability()['serving']} after {moved:.1f} s ({backend.reconnects} reconnects)")
        finally:
            await asyncio.to_thread(rc.thaw, victim)
    finally:
        await cluster.close()

