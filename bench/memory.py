"""``memory``: write→visible latency of shared memory items on N worker nodes (default 5), SQLite, Redis or gRPC.

The bench process writes with a client-role manager (``sync_memory_item``). Workers
run with ``--log-format json``; each applied remote write prints a ``MemoryChanged``
line whose ``at`` is when that node applied it. write→visible = ``at`` minus the
wall-clock time taken just before the write call (same machine, same clock).

Phases: spaced writes (idle latency), a burst, a *sustained* run (writers keep
``burst_inflight`` writes in flight for ``sustained_s`` seconds: concurrent writes
are batched by the engine on the way in — one transaction per batch on SQLite — and
every node reads the log in batches), a catch-up after the workers were paused, and
the sustained run again with ``sync_memory_items`` batches (``batch`` items per call).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh_core.manager import AgentMeshManager
from mesh_core.model import LIVE
from mesh_core.node.tasks import PRUNE_EVERY_SECONDS
from mesh_testing import Cluster, JsonLog, RedisServer

from .cluster import CpuMeter, worker_mesh
from .stats import summary_ms

# p99 of write→visible on every node, from the issue
TARGET_VISIBLE_P99_MS = {"sqlite": 50.0, "redis": 20.0, "grpc": 20.0}


@dataclass(frozen=True)
class MemoryOptions:
    writes: int = 300
    spacing_s: float = 0.005
    warmup_writes: int = 30  # written the same way first, not measured
    burst: int = 2000
    burst_inflight: int = 64
    catch_up: int = 2000  # items written while the workers are paused (SIGSTOP), then applied on resume
    catch_up_away: bool = True  # also: one node paused until declared dead, then a compaction period more
    sustained_s: float = 8.0  # seconds of continuous writing with burst_inflight writes in flight (0 skips)
    batch: int = 100  # the batched sustained run: items per sync_memory_items call (0 skips that run)
    batch_inflight: int = 4  # batches in flight in that run
    workers: int = 5
    backend: str = "sqlite"  # "sqlite" or "redis"
    visible_timeout_s: float = 30.0
    keep_dir: bool = False


class LogTail:
    """A worker's JSON log, read incrementally: when it first applied each memory key (``MemoryChanged`` ``at``)."""

    def __init__(self, path: str | Path) -> None:
        self.log = JsonLog(path, only=b"MemoryChanged", keep=False)
        self.seen: dict[str, float] = {}

    def poll(self) -> None:
        for event in self.log.poll():
            if event.get("event") == "MemoryChanged" and isinstance(event.get("key"), str):
                self.seen.setdefault(event["key"], float(event["at"]))


def _applied(tails: dict[str, LogTail], written: dict[str, float], since: float) -> dict[str, dict[str, Any]]:
    """Per node: how many of ``written`` it applied, and how fast from ``since`` to its last one (and when its first
    one came: what a node resumed from a pause spent waking before it applied anything)."""
    per_node = {}
    for name, tail in tails.items():
        got = [tail.seen[k] for k in written if k in tail.seen]
        last = max(got) if got else since
        per_node[name] = {"applied": len(got), "seconds": round(last - since, 3),
                          "first_seconds": round(min(got) - since, 3) if got else None,
                          "items_per_second": round(len(got) / (last - since), 1) if last > since else 0.0}
    return per_node


async def _wait_visible(tails: list[LogTail], keys: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for tail in tails:
            tail.poll()
        if all(all(k in tail.seen for k in keys) for tail in tails):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


def _visibility(tails: dict[str, LogTail], written: dict[str, float]) -> dict[str, Any]:
    per_node: dict[str, Any] = {}
    every: list[float] = []
    all_nodes: list[float] = []  # per key: when the last node saw it
    missing = 0
    for name, tail in tails.items():
        lags = [tail.seen[k] - t for k, t in written.items() if k in tail.seen]
        missing += sum(1 for k in written if k not in tail.seen)
        per_node[name] = summary_ms(lags)
        every += lags
    for k, t in written.items():
        seen = [tail.seen[k] for tail in tails.values() if k in tail.seen]
        if len(seen) == len(tails):
            all_nodes.append(max(seen) - t)
    return {"any_node": summary_ms(every), "all_nodes": summary_ms(all_nodes), "per_node": per_node,
            "missing": missing}


async def _spaced_writes(mesh: AgentMeshManager, n: int, spacing: float, prefix: str = "k"
                         ) -> tuple[dict[str, float], list[float]]:
    written: dict[str, float] = {}
    call: list[float] = []
    for i in range(n):
        key = f"{prefix}{i}"
        t = time.time()
        p0 = time.perf_counter()
        await mesh.sync_memory_item("bench", {"i": i, "t": t}, key=key)
        call.append(time.perf_counter() - p0)
        written[key] = t
        await asyncio.sleep(spacing)
    return written, call


async def _burst(mesh: AgentMeshManager, n: int, inflight: int, prefix: str = "b",
                 for_s: float | None = None, batch: int = 1) -> tuple[dict[str, float], float, float]:
    """Write ``n`` items (or for ``for_s`` seconds) as fast as the client can with ``inflight`` calls at once,
    each call one item (``sync_memory_item``) or ``batch`` items (``sync_memory_items``).

    Returns (key -> write time, first write, last write done).
    """
    written: dict[str, float] = {}
    next_i = 0
    until = time.monotonic() + for_s if for_s is not None else None

    async def writer() -> None:
        nonlocal next_i
        while next_i < n and (until is None or time.monotonic() < until):
            first = next_i
            next_i += batch
            t = time.time()
            if batch == 1:
                await mesh.sync_memory_item("bench", {"i": first, "t": t, "burst": prefix}, key=f"{prefix}{first}")
                written[f"{prefix}{first}"] = t
                continue
            values = {f"{prefix}{i}": {"i": i, "t": t, "burst": prefix} for i in range(first, first + batch)}
            await mesh.sync_memory_items("bench", values)
            written.update(dict.fromkeys(values, t))

    start = time.time()
    await asyncio.gather(*(writer() for _ in range(min(inflight, n))))
    return written, start, time.time()


async def _declared_away(mesh: AgentMeshManager, name: str, timeout: float = 30.0) -> float:
    """Wait until ``mesh`` holds node ``name`` dead (or gone); returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        await mesh.mesh_view()
        if all(m.status not in LIVE for m in mesh.members() if m.info.name == name):
            break
        await asyncio.sleep(0.2)
    return round(time.monotonic() - start, 3)


async def _catch_up(cluster: Cluster, mesh: AgentMeshManager, tails: dict[str, LogTail], opts: MemoryOptions,
                    meter: CpuMeter, *, one: bool = False, away: bool = False) -> dict[str, Any]:
    """How fast nodes apply a backlog: write ``catch_up`` items with the workers paused, then resume them.

    grpc has no store: a client's write is held by the workers that applied it, and with every worker paused
    there is none to take it (the write fails, as it must). So on grpc one worker stays up and holds the
    backlog, as the shared store does on the other media; the paused ones catch it up from it (and from the
    client's pushes) on resume, and only they are measured.

    With ``one``, only the last worker is paused and the others apply the writes as they come: the rate at
    which a node that was away catches up, with the machine's cores to itself (with every worker paused, they
    resume together and share the cores: that measures how many replicas the machine holds as much as how fast
    a node applies).

    With ``away`` (and ``one``), the paused node stays paused until the others declared it dead, and then for
    one compaction period (``PRUNE_EVERY_SECONDS``) more: a node back from a pause, a restart or a cut link,
    which catches up from the log where it stopped as long as ``memory_sync.keep_log_for_absent_seconds`` keeps
    its place there (else from every key's newest entries: its bootstrap)."""
    out: dict[str, Any] = {"items": opts.catch_up, "paused_nodes": "one" if one else "all"}
    # paused one: the last; paused together: all, but on grpc one stays up to hold the backlog
    kept = cluster.processes[:-1] if one else cluster.processes[:1] if opts.backend == "grpc" else []
    paused = [node for node in cluster.processes if node not in kept]
    for node in paused:
        node.kill(signal.SIGSTOP)
    try:
        written, start, end_writes = await _burst(mesh, opts.catch_up, opts.burst_inflight,
                                                  prefix="d" if away else "o" if one else "c")
        if away:
            out["declared_dead_after_seconds"] = await _declared_away(mesh, paused[0].name)
            await asyncio.sleep(PRUNE_EVERY_SECONDS + 1.0)  # the sweeping node compacts the log meanwhile
    finally:
        resumed = time.time()
        for node in paused:
            node.kill(signal.SIGCONT)
    with meter.measure(out):
        ok = await _wait_visible(list(tails.values()), list(written), opts.visible_timeout_s)
    out["writer_lag_after"] = await _writer_lag(mesh)
    per_node = _applied(tails, written, resumed)
    caught = [per_node[node.name] for node in paused if node.name in per_node]
    out.update({"all_visible": ok, "paused_seconds": round(resumed - start, 3),
                "kept_running": [node.name for node in kept],
                "writes_per_second_while_paused": round(opts.catch_up / (end_writes - start), 1)
                if end_writes > start else 0.0,
                "applied_items_per_second": min((v["items_per_second"] for v in caught), default=0.0),
                "per_node": per_node})
    return out


async def _writer_lag(mesh: AgentMeshManager, patience: float = 5.0) -> dict[str, Any]:
    """What the writer's backpressure still counts as not applied by the slowest replica once every node showed every
    item: none within moments (the acks follow the applies), else later writes wait (and fail: ReplicasBehind) for
    items the replicas hold. Also how long it took to reach none."""
    start = time.monotonic()
    while True:
        lag = await mesh.services.memory.backpressure.lag()
        items = lag.items if lag is not None else None
        if not items or time.monotonic() - start >= patience:
            return {"items": items, "behind": list(lag.behind) if lag is not None else [],
                    "seconds": round(time.monotonic() - start, 3)}
        await asyncio.sleep(0.05)


async def _sustained(mesh: AgentMeshManager, tails: dict[str, LogTail], opts: MemoryOptions,
                     meter: CpuMeter, batch: int = 1) -> dict[str, Any]:
    """Write continuously for ``sustained_s`` seconds; items/s written and applied on the slowest node."""
    inflight = opts.burst_inflight if batch == 1 else opts.batch_inflight
    out: dict[str, Any] = {"seconds_requested": opts.sustained_s, "inflight": inflight, "batch": batch}
    with meter.measure(out):
        written, start, end_writes = await _burst(mesh, 10**9, inflight, prefix="s" if batch == 1 else "sb",
                                                  for_s=opts.sustained_s, batch=batch)
        ok = await _wait_visible(list(tails.values()), list(written), opts.visible_timeout_s)
    writer_lag = await _writer_lag(mesh)
    per_node = _applied(tails, written, start)
    n = len(written)
    out.update({"items": n, "all_visible": ok, "write_seconds": round(end_writes - start, 3),
                "writes_per_second": round(n / (end_writes - start), 1) if end_writes > start else 0.0,
                "applied_items_per_second": min(v["items_per_second"] for v in per_node.values()),
                "per_node": per_node, "lag": _visibility(tails, written), "writer_lag_after": writer_lag})
    return out


async def run(opts: MemoryOptions, log: Any = print, redis: RedisServer | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"options": opts.__dict__.copy(), "backend": opts.backend, "nodes": opts.workers,
                              "target_visible_p99_ms": TARGET_VISIBLE_P99_MS.get(opts.backend)}
    tag = f"memory[{opts.backend}, {opts.workers} nodes]"
    extra_cpu = {"redis-server": redis.cpu_seconds} if redis is not None and opts.backend == "redis" else {}
    async with worker_mesh(tag, log, workers=opts.workers, prefix="m", backend=opts.backend,
                           redis_url=redis.url if redis else None, keep_dir=opts.keep_dir) as (cluster, mesh, ready):
        result["cluster_ready_seconds"] = ready
        tails = {node.name: LogTail(node.log_path) for node in cluster.processes}
        # the client wakes the nodes it knows of: make sure its peer list holds all of them
        await mesh.mesh_view()
        meter = CpuMeter(cluster, extra_cpu)

        # Not measured: the first writes after the cluster came up (connections opened, first reads of each node)
        # took 30-80 ms to be seen everywhere, and with 300 writes they alone made the p99.
        warm, _ = await _spaced_writes(mesh, opts.warmup_writes, opts.spacing_s, prefix="w")
        await _wait_visible(list(tails.values()), list(warm), opts.visible_timeout_s)
        log(f"{tag}: {opts.writes} writes, {opts.spacing_s * 1000:g} ms apart ...")
        lat: dict[str, Any] = {}
        with meter.measure(lat):
            written, call = await _spaced_writes(mesh, opts.writes, opts.spacing_s)
            ok = await _wait_visible(list(tails.values()), list(written), opts.visible_timeout_s)
        lat.update(_visibility(tails, written))
        lat["all_visible"] = ok
        lat["write_call"] = summary_ms(call)
        result["write_to_visible"] = lat
        cluster.check_alive()
        target = TARGET_VISIBLE_P99_MS.get(opts.backend)
        p99_all = lat["all_nodes"].get("p99_ms")
        lat["target_p99_ms"] = target
        lat["target_met"] = None if target is None or p99_all is None else p99_all <= target
        log(f"{tag}: write→visible p50 {lat['any_node'].get('p50_ms')} ms, p99 {lat['any_node'].get('p99_ms')} "
            f"ms (each node); on all {opts.workers} nodes p50 {lat['all_nodes'].get('p50_ms')} ms, p99 {p99_all} ms"
            + (f" [target ≤ {target:g} ms: {'met' if lat['target_met'] else 'missed'}]" if target else ""))

        log(f"{tag}: burst of {opts.burst} writes, {opts.burst_inflight} in flight ...")
        burst: dict[str, Any] = {}
        with meter.measure(burst):
            bw, start, end_writes = await _burst(mesh, opts.burst, opts.burst_inflight)
            ok = await _wait_visible(list(tails.values()), list(bw), opts.visible_timeout_s)
        per_node = _applied(tails, bw, start)
        last_all = max((tail.seen[k] for tail in tails.values() for k in bw if k in tail.seen), default=start)
        burst.update({
            "items": opts.burst, "all_visible": ok, "write_seconds": round(end_writes - start, 3),
            "writes_per_second": round(opts.burst / (end_writes - start), 1) if end_writes > start else 0.0,
            "applied_everywhere_seconds": round(last_all - start, 3),
            "applied_items_per_second": round(opts.burst / (last_all - start), 1) if last_all > start else 0.0,
            "per_node": per_node, "lag": _visibility(tails, bw)})
        result["burst"] = burst
        cluster.check_alive()
        log(f"{tag}: burst {burst['writes_per_second']} writes/s, applied on all nodes at "
            f"{burst['applied_items_per_second']} items/s")
        if opts.sustained_s:
            log(f"{tag}: sustained writes for {opts.sustained_s:g} s, {opts.burst_inflight} in flight ...")
            sus = await _sustained(mesh, tails, opts, meter)
            result["sustained"] = sus
            cluster.check_alive()
            log(f"{tag}: sustained {sus['writes_per_second']} writes/s, applied at "
                f"{sus['applied_items_per_second']} items/s on the slowest node; lag p50 "
                f"{sus['lag']['all_nodes'].get('p50_ms')} ms, p99 {sus['lag']['all_nodes'].get('p99_ms')} ms "
                f"(all nodes); the writer counts {sus['writer_lag_after']['items']} items unapplied after")
        if opts.catch_up:
            result["catch_up"] = await _catch_up(cluster, mesh, tails, opts, meter)
            log(f"{tag}: catch-up of {opts.catch_up} queued items at "
                f"{result['catch_up']['applied_items_per_second']} items/s per node (slowest node); the writer "
                f"counts {result['catch_up']['writer_lag_after']['items']} items unapplied after")
            cluster.check_alive()
            result["catch_up_one"] = await _catch_up(cluster, mesh, tails, opts, meter, one=True)
            log(f"{tag}: catch-up of {opts.catch_up} items by one paused node (the others live) at "
                f"{result['catch_up_one']['applied_items_per_second']} items/s; the writer counts "
                f"{result['catch_up_one']['writer_lag_after']['items']} items unapplied after")
            cluster.check_alive()
            if opts.catch_up_away:
                log(f"{tag}: catch-up of {opts.catch_up} items by one node back after it was declared dead ...")
                back = result["catch_up_away"] = await _catch_up(cluster, mesh, tails, opts, meter, one=True, away=True)
                log(f"{tag}: catch-up of {opts.catch_up} items by one node back after it was declared dead (away "
                    f"{back['paused_seconds']} s) at {back['applied_items_per_second']} items/s")
        # last: the batched run leaves the nodes with the biggest replicas
        if opts.batch > 1 and opts.sustained_s:
            log(f"{tag}: sustained batches of {opts.batch} for {opts.sustained_s:g} s, "
                f"{opts.batch_inflight} in flight ...")
            sb = await _sustained(mesh, tails, opts, meter, batch=opts.batch)
            result["sustained_batched"] = sb
            cluster.check_alive()
            log(f"{tag}: batched {sb['writes_per_second']} writes/s, applied at "
                f"{sb['applied_items_per_second']} items/s on the slowest node; lag p50 "
                f"{sb['lag']['all_nodes'].get('p50_ms')} ms, p99 {sb['lag']['all_nodes'].get('p99_ms')} ms "
                f"(all nodes); the writer counts {sb['writer_lag_after']['items']} items unapplied after")
        result["log_lines"] = {name: {"lines": t.log.read, "unparsable": t.log.unparsable} for name, t in tails.items()}
    return result
