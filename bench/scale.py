"""``scale``: what membership costs each node as the mesh grows (issue #14 point 4), on SQLite and Redis.

For each kind, backend and size N in ``--scale-nodes`` (default 8, 32, 128) a fresh mesh is started and left
idle (no tasks, no memory writes).

Two kinds of node. ``members``: the membership path alone, as ``MembershipService`` runs it: a medium
(``SqliteBackend``/``RedisBackend``) heartbeating its record every second and reading its view twice a second,
judged by a ``MembershipTable`` (no task, result, memory or cancel loops): what membership itself costs.
``mesh``: a full ``AgentMeshManager`` worker (general type, engine default timings: heartbeat
1 s, suspect 2 s, dead 3 s) started in-process; the N nodes are spread over ``procs`` real Python processes
(2 for 8 nodes, N/16 up to 8; the same for ``members``), each running its share on one asyncio event loop,
against the real SQLite
file or the bench's private real ``redis-server``. Nodes sharing a loop share its CPU, so a slow view on one
delays every heartbeat of its process: that is part of what is measured.

Once every node sees all N active (``settle``; after ``settle_timeout_s`` the run goes on, and ``settled`` says
how many did), the run counts for ``seconds``:

* ``redis_commands_per_node_s``: ``INFO commandstats`` calls (each command inside a Lua script counts,
  as does the EVALSHA) over the window, divided by N and by the seconds; ``redis_cpu_per_node_s``: the
  redis-server's CPU seconds likewise (Redis only);
* ``cpu_per_node_s``: CPU seconds (user + system) of the node processes, per node per second;
* ``false_suspicions`` / ``false_deaths``: ``NodeStatusChanged`` to suspect / dead that any node published
  about another (nothing is killed, so every one is false); ``cut_off``: a node judging itself cut off
  from the medium (its own heartbeat late).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from mesh_testing import Cluster, RedisServer
from mesh_testing.process import clean_env

from .cluster import BenchError

NODES_PER_PROCESS = 16
MAX_PROCESSES = 8


@dataclass(frozen=True)
class ScaleOptions:
    backends: tuple[str, ...] = ("sqlite", "redis")
    kinds: tuple[str, ...] = ("members", "mesh")
    sizes: tuple[int, ...] = (8, 32, 128)
    seconds: float = 20.0
    start_timeout_s: float = 300.0  # for one process to start its nodes
    settle_timeout_s: float = 90.0  # then measured anyway: ``settled`` says how many nodes saw every node active
    keep_dir: bool = False


def processes_for(n: int) -> int:
    return max(2, min(MAX_PROCESSES, math.ceil(n / NODES_PER_PROCESS)))


class Child:
    """One process running a share of the nodes (``python -m bench.scale``); talks in lines on stdin/stdout."""

    def __init__(self, config: Path, tag: str, nodes: int, total: int, root: Path, kind: str) -> None:
        self.tag = tag
        self.err = open(root / f"{tag}.err", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "--child", str(config), tag, str(nodes), str(total), kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, cwd=os.getcwd(), env=clean_env(),
            text=True, bufsize=1)
        self.ps = psutil.Process(self.proc.pid)
        self.settled = 0

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        try:
            text = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        except TimeoutError:
            raise BenchError(f"scale child {self.tag}: no word in {timeout:g} s") from None
        if not text:
            raise BenchError(f"scale child {self.tag} exited (code {self.proc.poll()}); see {self.err.name}")
        return text.strip()

    def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def cpu(self) -> float:
        with contextlib.suppress(psutil.Error):
            t = self.ps.cpu_times()
            return t.user + t.system
        return 0.0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.err.close()


async def one_size(backend: str, n: int, kind: str, opts: ScaleOptions, log: Any,
                   server: RedisServer | None) -> dict[str, Any]:
    settings = {"heartbeat_interval_seconds": 1.0, "suspect_after_seconds": 2.0, "node_timeout_seconds": 3.0,
                "max_capacity": 4}
    cluster = Cluster(None, backend, server.url if server else None, settings=settings, keep=opts.keep_dir)
    procs = processes_for(n)
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    children: list[Child] = []
    stats = None
    try:
        started = time.monotonic()
        children = [Child(cluster.config, f"p{i}", k, n, cluster.root, kind) for i, k in enumerate(shares)]
        for c in children:  # a mesh that cannot carry its size starts slowly: that is a result too
            while (await c.line(opts.start_timeout_s)) != "started":
                pass
        started_s = time.monotonic() - started
        # every node sees all n active: each child says how many of its nodes do, once a second
        while True:
            lines = [await c.line(opts.settle_timeout_s) for c in children]
            done = sum(int(x.split()[1]) for x in lines if x.startswith("settled"))
            if done == n or time.monotonic() - started > opts.settle_timeout_s:
                break
            for c in children:
                c.say("more")
        settle_s = time.monotonic() - started
        log(f"scale[{kind} {backend} {n}]: {n} nodes in {procs} processes; {done} of them see every node active after "
            f"{settle_s:.1f} s; measuring {opts.seconds:g} s")
        if server is not None and backend == "redis":
            import redis

            stats = redis.Redis.from_url(server.url, socket_timeout=10)
            stats.config_resetstat()
            rcpu0 = server.cpu_seconds()
        cpu0 = sum(c.cpu() for c in children)
        t0 = time.monotonic()
        for c in children:
            c.say("go")
        await asyncio.sleep(opts.seconds)
        wall = time.monotonic() - t0
        cpu1 = sum(c.cpu() for c in children)
        out: dict[str, Any] = {"nodes": n, "processes": procs, "start_s": round(started_s, 1),
                               "settle_s": round(settle_s, 1), "settled": done,
                               "seconds": round(wall, 1),
                               "cpu_per_node_s": round((cpu1 - cpu0) / n / wall, 5)}
        if stats is not None:
            info = stats.info("commandstats")
            calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()
                     if k.removeprefix("cmdstat_") not in ("config", "info")}
            total = sum(calls.values())
            out["redis_commands_per_node_s"] = round(total / n / wall, 2)
            out["redis_cpu_per_node_s"] = round((server.cpu_seconds() - rcpu0) / n / wall, 6)  # type: ignore[union-attr]
            out["redis_top_commands_per_node_s"] = {
                k: round(v / n / wall, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:8]}
        for c in children:
            c.say("stop")
        counts: dict[str, int] = {"false_suspicions": 0, "false_deaths": 0, "cut_off": 0}
        for c in children:
            while not (text := await c.line(60)).startswith("{"):
                pass
            for k, v in json.loads(text).items():
                counts[k] = counts.get(k, 0) + int(v)
        out.update(counts)
        log(f"scale[{kind} {backend} {n}]: {json.dumps(out)}")
        return out
    finally:
        if stats is not None:
            stats.close()
        for c in children:
            with contextlib.suppress(Exception):
                c.close()
        cluster.stop()


async def run(opts: ScaleOptions, log: Any, server: RedisServer | None) -> dict[str, Any]:
    out: dict[str, Any] = {"node": {"mesh": "AgentMeshManager worker, in-process, N/16 (2..8) node processes",
                                    "members": "the membership path alone (medium + table), same processes"},
                           "load_average": os.getloadavg()}
    for kind in opts.kinds:
        for backend in opts.backends:
            if backend == "redis" and server is None:
                raise BenchError("scale on redis needs the bench's redis-server")
            per: dict[str, Any] = {}
            for n in opts.sizes:
                try:
                    per[str(n)] = await one_size(backend, n, kind, opts, log, server)
                except BenchError as exc:  # a size the mesh cannot carry: said, and the next one runs
                    log(f"scale[{kind} {backend} {n}]: FAILED: {exc}")
                    per[str(n)] = {"nodes": n, "error": str(exc)}
            first, last = per[str(opts.sizes[0])], per[str(opts.sizes[-1])]
            growth = {k: round(last[k] / first[k], 2) for k in ("cpu_per_node_s", "redis_commands_per_node_s")
                      if first.get(k) and last.get(k)}
            per["growth_first_to_last"] = growth
            out.setdefault(kind, {})[backend] = per
    return out


# -- the child process ----------------------------------------------------------------------------------------
async def _child(config: str, tag: str, count: int, total: int, kind: str = "mesh") -> None:
    if kind == "members":
        await _members_child(config, tag, count, total)
        return
    from mesh_core.config import load_config
    from mesh_core.events import NodeStatusChanged
    from mesh_core.manager import AgentMeshManager
    from mesh_core.model import NodeRole, NodeStatus

    meshes: list[AgentMeshManager] = []
    counting = False
    counts = {"false_suspicions": 0, "false_deaths": 0, "cut_off": 0}

    async def watch(mesh: AgentMeshManager) -> None:
        own = mesh.node_id
        async for batch in mesh.subscribe_batches(routine=False):
            for e in batch:
                if not counting or not isinstance(e, NodeStatusChanged):
                    continue
                if e.node_id == own:
                    counts["cut_off"] += e.new == "suspect"
                elif e.new == "suspect":
                    counts["false_suspicions"] += 1
                elif e.new == "dead":
                    counts["false_deaths"] += 1

    for i in range(count):
        mesh = AgentMeshManager(load_config(config, overrides={"node_name": f"{tag}n{i}"}, env={}))
        await mesh.start()
        meshes.append(mesh)
    watchers = [asyncio.ensure_future(watch(m)) for m in meshes]
    print("started", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        settled = sum(
            1 for m in meshes
            if sum(1 for x in m.members() if x.status is NodeStatus.ACTIVE and x.info.role is NodeRole.WORKER)
            >= total)
        print(f"settled {settled}", flush=True)
        word = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if word == "go":
            break
        if not word:
            return
        await asyncio.sleep(1.0)
    counting = True
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    counting = False
    print(json.dumps(counts), flush=True)
    for w in watchers:
        w.cancel()
    await asyncio.gather(*(m.stop() for m in meshes), return_exceptions=True)


class _Member:
    """The membership path of one node and nothing else: its record's heartbeat every second, its view read
    from the medium and judged by the table twice a second (as ``MembershipService`` does)."""

    def __init__(self, medium: Any, info: Any, table: Any) -> None:
        self.medium, self.info, self.table = medium, info, table
        self.changes: list[Any] = []

    async def beat_loop(self, interval: float) -> None:
        while True:
            await self.medium.heartbeat(self.info)
            await asyncio.sleep(interval)

    async def view_loop(self, period: float, suspect_after: float) -> None:
        while True:
            await self.refresh(suspect_after)
            await asyncio.sleep(period)

    async def refresh(self, suspect_after: float) -> None:
        try:
            snap = await self.medium.snapshot(suspect_after)
        except TypeError:  # an older release (bench/scale.py runs against one too): no window, every stamp read
            snap = await self.medium.snapshot()
        extra = {"aged": True} if getattr(snap, "aged", False) else {}
        self.changes += self.table.observe(snap.nodes, time.monotonic(), store_now=snap.now, **extra)


async def _members_child(config: str, tag: str, count: int, total: int) -> None:
    import uuid

    from mesh_core import codec
    from mesh_core.backends import create_backend
    from mesh_core.config import load_config
    from mesh_core.membership import DetectorConfig, MembershipTable
    from mesh_core.model import NodeInfo, NodeStatus

    cfg = load_config(config, env={})
    members = []
    for i in range(count):
        info = NodeInfo(node_id=uuid.uuid4().hex, name=f"{tag}m{i}", task_types=frozenset({"echo"}))
        medium = create_backend(cfg, codec.DEFAULT_LIMITS)
        await medium.open(info)
        table = MembershipTable(DetectorConfig(cfg.suspect_after_seconds, cfg.node_timeout_seconds), info.node_id)
        members.append(_Member(medium, info, table))
    tasks = [asyncio.ensure_future(m.beat_loop(cfg.heartbeat_interval_seconds)) for m in members]
    print("started", flush=True)
    period = min(0.5, cfg.heartbeat_interval_seconds / 2)
    tasks += [asyncio.ensure_future(m.view_loop(period, cfg.suspect_after_seconds)) for m in members]
    loop = asyncio.get_running_loop()
    while True:
        settled = sum(1 for m in members if sum(1 for x in m.table.members() if x.status is NodeStatus.ACTIVE)
                      >= total)
        print(f"settled {settled}", flush=True)
        word = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if word == "go":
            break
        if not word:
            return
        await asyncio.sleep(1.0)
    for m in members:
        m.changes.clear()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    counts = {"false_suspicions": 0, "false_deaths": 0, "cut_off": 0}
    for m in members:
        for c in m.changes:
            if c.node.node_id == m.info.node_id:
                continue
            counts["false_suspicions"] += c.new is NodeStatus.SUSPECT
            counts["false_deaths"] += c.new is NodeStatus.DEAD
    print(json.dumps(counts), flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*(m.medium.close() for m in members), return_exceptions=True)


if __name__ == "__main__":
    if len(sys.argv) in (6, 7) and sys.argv[1] == "--child":
        asyncio.run(_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), *sys.argv[6:]))
    else:
        raise SystemExit("bench.scale is run by `python -m bench scale`")
