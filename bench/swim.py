"""``swim``: membership on grpc_mesh, as the nodes themselves report it (``NodeStatusChanged`` log lines).

Two runs, both with real ``mesh-tui --no-ui`` processes and the engine's default timings:

* **Detection.** ``nodes`` worker processes (default 5); ``kills`` times (default 10) one of them is
  killed with SIGKILL (no leave, the victim rotates), and every survivor's JSON log is read until it says
  the victim is ``dead``. Detection = the ``at`` of that line (the survivor's wall clock, this machine)
  minus the moment of the kill; per kill: the first survivor (the mesh knows) and the last one (every
  survivor knows), and the first ``suspect``. The victim is then started again (same name, port and
  state) and the next kill waits until every survivor holds it active again. Target (issue #12):
  detection ≤ 3 s.
* **False deaths.** ``soak_nodes`` worker processes (default 8) and an in-process client that keeps
  ``load_inflight`` no-op tasks in flight for ``minutes`` (default 10). Nothing is killed, so every
  ``dead`` a node reports is a false death, and every ``suspect`` a false suspicion (refuted or not).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import Any

from mesh_core.errors import MeshError
from mesh_core.model import TaskStatus
from mesh_testing import Cluster, JsonLog

from .cluster import STOP_GRACE_SECONDS, BenchError, CpuMeter, same_code
from .stats import summary_ms

TARGET_DETECTION_S = 3.0


@dataclass(frozen=True)
class SwimOptions:
    nodes: int = 5
    kills: int = 10
    detect_timeout_s: float = 30.0  # a kill not detected by every survivor within this counts as missed
    settle_s: float = 2.0  # after the victim is back and active everywhere, before the next kill
    soak_nodes: int = 8
    minutes: float = 10.0  # 0 skips the false-death run
    load_inflight: int = 32
    task_timeout: float = 30.0
    keep_dir: bool = False


class StatusTail:
    """Every ``NodeStatusChanged`` (and ``NodeJoined``, as new → active) line of one node's log files."""

    def __init__(self) -> None:
        self.logs: dict[str, JsonLog] = {}
        self.events: list[dict[str, Any]] = []

    def follow(self, path: Any) -> None:
        self.logs.setdefault(str(path), JsonLog(path, only=b'"event":"Node', keep=False))

    def poll(self) -> None:
        for log in self.logs.values():
            for e in log.poll():
                if e.get("event") == "NodeStatusChanged":
                    self.events.append(e)
                elif e.get("event") == "NodeJoined":  # a node (re)joining: active unless a change follows
                    self.events.append({**e, "old": "new", "new": "active"})


def _tails(cluster: Cluster, tails: dict[str, StatusTail]) -> None:
    for node in cluster.processes:
        tails.setdefault(node.name, StatusTail()).follow(node.log_path)


def _current(cluster: Cluster, name: str) -> Any:
    return [p for p in cluster.processes if p.name == name][-1]


async def _wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"swim: {what} not within {timeout:g} s")
        await asyncio.sleep(0.02)


def _status_now(tail: StatusTail, about: str) -> str | None:
    """The last status this node's log gave ``about`` (None: nothing said since it started)."""
    said = [e for e in tail.events if e.get("name") == about]
    return said[-1].get("new") if said else None


async def _one_kill(cluster: Cluster, tails: dict[str, StatusTail], victim: str, survivors: list[str],
                    opts: SwimOptions) -> dict[str, Any]:
    """Kill -9 ``victim``, wait until every survivor's log says it is dead, start it again and wait until every
    survivor holds it active; the times of that, from the survivors' own lines."""
    proc = _current(cluster, victim)
    for t in tails.values():
        t.poll()
    seen_before = {n: len(tails[n].events) for n in survivors}
    killed_at = time.time()
    proc.kill(signal.SIGKILL)
    proc.proc.wait()
    cluster.processes.remove(proc)  # gone on purpose: check_alive and the CPU meter skip it
    proc.close()

    def news(n: str) -> list[dict[str, Any]]:
        return [e for e in tails[n].events[seen_before[n]:] if e.get("name") == victim]

    def all_dead() -> bool:
        for t in tails.values():
            t.poll()
        return all(any(e.get("new") == "dead" for e in news(n)) for n in survivors)

    complete = True
    try:
        await _wait_until(all_dead, opts.detect_timeout_s, f"{victim} declared dead")
    except BenchError:
        complete = False
    dead = {n: min((float(e["at"]) - killed_at for e in news(n) if e.get("new") == "dead"), default=None)
            for n in survivors}
    suspect = [float(e["at"]) - killed_at for n in survivors for e in news(n) if e.get("new") == "suspect"]
    got = [v for v in dead.values() if v is not None]
    row: dict[str, Any] = {
        "victim": victim, "first_dead_s": round(min(got), 3) if got else None,
        "all_dead_s": round(max(got), 3) if complete else None,
        "first_suspect_s": round(min(suspect), 3) if suspect else None,
        "per_survivor_dead_s": {n: None if v is None else round(v, 3) for n, v in dead.items()}}
    # back again: same name, port and state folder; every survivor must hold it active before the next kill
    cluster.spawn(victim)
    _tails(cluster, tails)
    restarted = time.monotonic()

    def back() -> bool:
        for t in tails.values():
            t.poll()
        return all(_status_now(tails[n], victim) == "active" for n in survivors)

    await _wait_until(back, 30.0, f"{victim} active again on every survivor")
    row["back_active_everywhere_s"] = round(time.monotonic() - restarted, 3)
    return row


async def detection(opts: SwimOptions, log: Any) -> dict[str, Any]:
    names = [f"s{i}" for i in range(1, opts.nodes + 1)]
    kills: list[dict[str, Any]] = []
    async with Cluster(backend="grpc", stop_grace=STOP_GRACE_SECONDS, keep=opts.keep_dir) as cluster:
        same_code(cluster)
        for name in names:
            cluster.spawn(name)
        watcher = await cluster.client()
        ready = await cluster.wait_active(watcher)
        log(f"swim: {opts.nodes} grpc nodes active after {ready:.2f} s")
        tails: dict[str, StatusTail] = {}
        _tails(cluster, tails)
        for k in range(opts.kills):
            victim = names[k % len(names)]
            row = await _one_kill(cluster, tails, victim, [n for n in names if n != victim], opts)
            kills.append(row)
            log(f"swim: kill {k + 1}/{opts.kills} ({victim}): suspect after {row['first_suspect_s']} s, dead on "
                f"the first survivor after {row['first_dead_s']} s, on all {opts.nodes - 1} after "
                f"{row['all_dead_s']} s; back everywhere after {row['back_active_everywhere_s']} s")
            await asyncio.sleep(opts.settle_s)
            cluster.check_alive()
    first = [r["first_dead_s"] for r in kills if r["first_dead_s"] is not None]
    every = [r["all_dead_s"] for r in kills if r["all_dead_s"] is not None]
    out: dict[str, Any] = {
        "nodes": opts.nodes, "kills": len(kills), "missed": sum(r["all_dead_s"] is None for r in kills),
        "timings": "engine defaults", "target_s": TARGET_DETECTION_S, "per_kill": kills,
        "first_dead_mean_s": round(sum(first) / len(first), 3) if first else None,
        "first_dead_max_s": max(first, default=None),
        "all_dead_mean_s": round(sum(every) / len(every), 3) if every else None,
        "all_dead_max_s": max(every, default=None)}
    out["target_met"] = bool(every) and out["missed"] == 0 and out["all_dead_max_s"] <= TARGET_DETECTION_S
    return out


async def false_deaths(opts: SwimOptions, log: Any) -> dict[str, Any]:
    names = [f"f{i}" for i in range(1, opts.soak_nodes + 1)]
    out: dict[str, Any] = {"nodes": opts.soak_nodes, "minutes": opts.minutes, "load_inflight": opts.load_inflight}
    async with Cluster(backend="grpc", stop_grace=STOP_GRACE_SECONDS, keep=opts.keep_dir) as cluster:
        same_code(cluster)
        for name in names:
            cluster.spawn(name, "--log-level", "warning")  # status lines stay, task lines go
        mesh = await cluster.client()
        ready = await cluster.wait_active(mesh)
        log(f"swim: {opts.soak_nodes} grpc nodes active after {ready:.2f} s; {opts.minutes:g} min of tasks, "
            f"{opts.load_inflight} in flight ...")
        tails: dict[str, StatusTail] = {}
        _tails(cluster, tails)
        for t in tails.values():
            t.poll()
        start_events = {n: len(t.events) for n, t in tails.items()}
        meter = CpuMeter(cluster)
        done = failed = errors = 0
        latency: list[float] = []
        samples: list[str] = []
        until = time.monotonic() + opts.minutes * 60.0
        started = time.time()

        async def runner() -> None:
            nonlocal done, failed, errors
            i = 0
            while time.monotonic() < until:
                i += 1
                t0 = time.perf_counter()
                try:
                    task_id = await mesh.submit_task("echo", {"i": i})
                    task = await mesh.wait_task(task_id, opts.task_timeout)
                except (MeshError, TimeoutError) as exc:
                    errors += 1
                    if len(samples) < 5:
                        samples.append(f"{type(exc).__name__}: {exc}")
                    continue
                latency.append(time.perf_counter() - t0)
                done += 1
                failed += task.status is not TaskStatus.SUCCEEDED

        async def progress() -> None:
            while time.monotonic() < until:
                await asyncio.sleep(min(60.0, max(1.0, until - time.monotonic())))
                for t in tails.values():
                    t.poll()
                bad = sum(1 for n, t in tails.items() for e in t.events[start_events[n]:]
                          if e.get("new") in ("suspect", "dead"))
                log(f"swim: {done:,} tasks done, {errors} errors, {bad} suspect/dead lines so far")
                cluster.check_alive()

        with meter.measure(out):
            await asyncio.gather(progress(), *(runner() for _ in range(opts.load_inflight)))
        for t in tails.values():
            t.poll()
        changes = [{**{k: e.get(k) for k in ("name", "old", "new", "incarnation")}, "seen_by": n,
                    "after_s": round(float(e["at"]) - started, 3)}
                   for n, t in tails.items() for e in t.events[start_events[n]:] if e.get("old") != "new"]
        cluster.check_alive()
    dead = [c for c in changes if c["new"] == "dead"]
    out.update({
        "tasks_done": done, "tasks_failed": failed, "errors": errors, "error_samples": samples,
        "tasks_per_second": round(done / (opts.minutes * 60.0), 1) if opts.minutes else 0.0,
        "latency": summary_ms(latency),
        "false_deaths": len(dead), "nodes_falsely_dead": sorted({str(c["name"]) for c in dead}),
        "false_suspicions": sum(c["new"] == "suspect" for c in changes),
        "status_changes": changes[:200], "status_changes_total": len(changes)})
    return out


async def run(opts: SwimOptions, log: Any = print) -> dict[str, Any]:
    result: dict[str, Any] = {"options": opts.__dict__.copy()}
    log(f"swim: detection, {opts.kills} kill -9 on {opts.nodes} grpc nodes (default timings) ...")
    result["detection"] = await detection(opts, log)
    d = result["detection"]
    log(f"swim: detection mean {d['all_dead_mean_s']} s, max {d['all_dead_max_s']} s (every survivor); first "
        f"survivor mean {d['first_dead_mean_s']} s, max {d['first_dead_max_s']} s; missed {d['missed']}")
    if opts.minutes > 0:
        result["false_deaths"] = await false_deaths(opts, log)
        f = result["false_deaths"]
        log(f"swim: {opts.minutes:g} min on {opts.soak_nodes} nodes under load: {f['false_deaths']} false deaths, "
            f"{f['false_suspicions']} false suspicions, {f['tasks_done']:,} tasks ({f['tasks_per_second']}/s)")
    return result
