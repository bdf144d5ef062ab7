"""Machine description, the printed table, and the JSON file in ``bench/results/``."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# targets from the issue
TARGET_TASKS_PER_SECOND = {"sqlite": 5000, "redis": 10_000}
TARGET_IDLE_P50_MS = {"sqlite": 1.0, "redis": 0.5}  # SQLite: issue #14 (it was 2 ms before)
TARGET_VS_HUEY = 3.0
TARGET_VISIBLE_P99_MS = {"sqlite": 50.0, "redis": 20.0, "grpc": 20.0}
GRPC_REFERENCES = ("raw", "raw-tls", "autogen")  # bench grpcpeers (grpc_refs.REFERENCES)
TARGET_DETECTION_S = 3.0  # grpc_mesh: kill -9 → dead on every survivor (bench swim)
# grpc_mesh against the references of the same run (issue #12)
TARGET_GRPC_TASKS_PER_SECOND = 5000  # at 1,024 in flight
TARGET_GRPC_VS_AUTOGEN = 2.0  # tasks/s at 1,024 in flight
TARGET_GRPC_VS_RAW = 0.7  # tasks/s at 1,024 in flight, the raw stream echo
TARGET_GRPC_IDLE_P50_VS_AUTOGEN = 0.8


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "load_average": load_average(),
        "pace_us": machine_pace(),
    }
    info.update(_git())
    return info


PACE_UNITS = 2000  # memory items through the reference work per repetition


def machine_pace(repeats: int = 5) -> float:
    """How fast this machine runs the engine's kind of work now: µs of CPU per unit of a fixed pure-Python piece
    (a memory item framed and unframed by ``codec``, its version vector compared and folded in a dict), the best
    of ``repeats`` (about 0.1 s in all). This 2-core machine's speed swung 2× within hours (``bench.apply`` 89.6
    then 44.0 µs per item on the same code), and by half that within minutes: figures from two runs compare only in
    proportion to their paces, read at the start and the end of each run."""
    from mesh_core import codec
    from mesh_core.clock import Ordering, compare_vectors

    # 200 keys, each written ten times: all but the first write of a key is compared with the one held
    items = [{"t": "fact", "k": f"k{i % 200}", "v": {"i": i, "text": "x" * 40}, "vv": {"a" * 32: i, "b" * 32: i // 2},
              "h": i << 16, "o": "a" * 32, "p": 5, "d": False} for i in range(PACE_UNITS)]
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        held: dict[str, dict[str, int]] = {}
        for item in items:
            got = codec.decode(codec.encode(item))
            old = held.get(got["k"])
            if old is None or compare_vectors(got["vv"], old) is not Ordering.BEFORE:
                held[got["k"]] = dict(sorted(got["vv"].items()))
        best = min(best, time.process_time() - start)
    return round(best / PACE_UNITS * 1e6, 2)


def load_average() -> list[float] | None:
    """1/5/15-minute load: other work on the machine (tests, builds) skews every figure."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit or None, "git_dirty": bool(dirty)}


def save(name: str, data: dict[str, Any], folder: Path = RESULTS_DIR) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def failures(data: dict[str, Any]) -> list[str]:
    """Labels of the parts that could not run."""
    out = []
    for section in ("tasks", "memory"):
        for key, block in (data.get(section) or {}).items():
            if isinstance(block, dict) and "error" in block:
                out.append(f"{section}[{key}]")
    for section in ("peers", "algorithms", "grpcpeers", "swim", "scale"):
        block = data.get(section) or {}
        if "error" in block:
            out.append(section)
        named = {k: block[k] for k in ("celery", "huey", *GRPC_REFERENCES) if k in block}
        if section == "peers":
            named = peer_blocks(block)
        for key, sub in {**block.get("runs", {}), **named}.items():
            if isinstance(sub, dict) and "error" in sub:
                out.append(f"{section}[{key}]")
    return out


def _runs(block: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not block or "error" in block:
        return []
    runs = block.get("throughput") or []
    return runs if isinstance(runs, list) else [runs]


def _at(block: dict[str, Any] | None, inflight: int) -> dict[str, Any] | None:
    return next((r for r in _runs(block) if r.get("inflight") == inflight), None)


NOT_PEERS = ("options", "machine", "seconds", "error")  # keys of data["peers"] that are no peer


def peer_blocks(peer_section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The peers of a ``peers`` result, by name (Celery, Huey, and those in venvs of their own), in run order."""
    return {k: v for k, v in peer_section.items() if k not in NOT_PEERS and isinstance(v, dict)}


def shape_runs(block: dict[str, Any] | None, shape: str) -> list[dict[str, Any]]:
    """A block's throughput runs of one shape (``window`` or ``waiters``; ``bench/window.py``)."""
    if not block or "error" in block or "skipped" in block:
        return []
    by_shape = block.get("shapes")
    if isinstance(by_shape, dict):
        return list(by_shape.get(shape) or [])
    return [r for r in _runs(block) if r.get("shape") == shape]


def idle_p50(block: dict[str, Any] | None) -> float | None:
    if not block or "error" in block or "skipped" in block:
        return None
    value = block.get("idle_latency", {}).get("round_trip", {}).get("p50_ms")
    return float(value) if value is not None else None


def ratios(data: dict[str, Any]) -> dict[str, Any]:
    """mesh on Redis ÷ each peer, at each in-flight level both ran, and best against best (same run, same server).

    Per level the mesh's and the peer's runs of the same shape are compared, in the shape the peer's ``throughput``
    has (the window); ``best_peer_ratios`` compares every shape."""
    mesh = (data.get("tasks") or {}).get("redis") or {}
    out: dict[str, Any] = {}
    for peer, pb in peer_blocks(data.get("peers") or {}).items():
        if not _runs(pb) or not _runs(mesh):
            continue
        key = peer.replace("-", "_")
        for run in _runs(pb):
            k = run["inflight"]
            shape = run.get("shape")
            m = next((r for r in shape_runs(mesh, shape) if r["inflight"] == k), None) if shape else None
            m = m or _at(mesh, k)
            if m and run["tasks_per_second"]:
                out[f"mesh_vs_{key}_tasks_per_second_{k}_inflight"] = round(m["tasks_per_second"] /
                                                                            run["tasks_per_second"], 2)
        if pb.get("best_tasks_per_second"):
            out[f"mesh_vs_{key}_best_tasks_per_second"] = round(mesh.get("best_tasks_per_second", 0.0)
                                                                / pb["best_tasks_per_second"], 2)
        mp50, pp50 = idle_p50(mesh), idle_p50(pb)
        if mp50 and pp50:
            out[f"mesh_vs_{key}_idle_p50"] = round(mp50 / pp50, 2)
    return out


def best_peer_ratios(data: dict[str, Any]) -> dict[str, Any]:
    """Issue #14 point 5: the mesh on Redis ÷ the best peer of the same run, per shape and in-flight level (tasks/s:
    the fastest peer at that level and shape; above 1 the mesh is faster) and for idle p50 (the lowest peer p50; below
    1 the mesh is faster), each with the best peer's name.

    ``{"idle_p50": {"best": name, "peer": ms, "mesh": ms, "ratio": mesh ÷ peer},
    "window": {level: {"best": name, "peer": tasks/s, "mesh": tasks/s, "ratio": ...}}, "waiters": {...}}``;
    a level or shape the mesh or no peer ran is absent."""
    mesh = (data.get("tasks") or {}).get("redis") or {}
    peers = peer_blocks(data.get("peers") or {})
    out: dict[str, Any] = {}
    p50s = {name: v for name, b in peers.items() if (v := idle_p50(b))}
    mp50 = idle_p50(mesh)
    if p50s and mp50:
        best = min(p50s, key=lambda name: p50s[name])
        out["idle_p50"] = {"best": best, "peer": p50s[best], "mesh": mp50, "ratio": round(mp50 / p50s[best], 2)}
    for shape in ("window", "waiters"):
        levels: dict[int, Any] = {}
        for m in shape_runs(mesh, shape):
            k = m["inflight"]
            rates = {name: r["tasks_per_second"] for name, b in peers.items() for r in shape_runs(b, shape)
                     if r["inflight"] == k and r["tasks_per_second"]}
            if not rates:
                continue
            best = max(rates, key=lambda name: rates[name])
            levels[k] = {"best": best, "peer": rates[best], "mesh": m["tasks_per_second"],
                         "ratio": round(m["tasks_per_second"] / rates[best], 2)}
        if levels:
            out[shape] = levels
    return out


def cpu_ms_per_task(run: dict[str, Any]) -> float | None:
    """CPU milliseconds of every process per finished task of one run (given, or from its ``cpu_seconds``)."""
    if run.get("cpu_ms_per_task") is not None:
        return float(run["cpu_ms_per_task"])
    done, used = run.get("tasks_finished") or run.get("round_trips"), run.get("cpu_seconds")
    return round(sum(used.values()) * 1000.0 / done, 3) if done and used else None


def grpc_ratios(data: dict[str, Any], mesh_key: str = "grpc") -> dict[str, Any]:
    """The mesh's ``tasks[mesh_key]`` ÷ each gRPC reference of the same run.

    tasks/s at each in-flight level both ran and best against best (higher is better for
    the mesh), idle p50 and CPU per task at the best level (lower is better for the mesh).
    """
    mesh = (data.get("tasks") or {}).get(mesh_key) or {}
    refs = data.get("grpcpeers") or {}
    out: dict[str, Any] = {}
    if not _runs(mesh):
        return out
    for name in GRPC_REFERENCES:
        ref = refs.get(name) or {}
        if not _runs(ref):
            continue
        key = name.replace("-", "_")
        for run in _runs(ref):
            m = _at(mesh, run["inflight"])
            if m and run["tasks_per_second"]:
                out[f"mesh_vs_{key}_tasks_per_second_{run['inflight']}_inflight"] = round(
                    m["tasks_per_second"] / run["tasks_per_second"], 3)
        if ref.get("best_tasks_per_second"):
            out[f"mesh_vs_{key}_best_tasks_per_second"] = round(
                (mesh.get("best_tasks_per_second") or 0.0) / ref["best_tasks_per_second"], 3)
        mp50 = mesh.get("idle_latency", {}).get("round_trip", {}).get("p50_ms")
        rp50 = ref.get("idle_latency", {}).get("round_trip", {}).get("p50_ms")
        if mp50 and rp50:
            out[f"mesh_vs_{key}_idle_p50"] = round(mp50 / rp50, 2)
        m_best = max(_runs(mesh), key=lambda r: r["tasks_per_second"])
        r_best = max(_runs(ref), key=lambda r: r["tasks_per_second"])
        mc, rc = cpu_ms_per_task(m_best), cpu_ms_per_task(r_best)
        if mc and rc:
            out[f"mesh_vs_{key}_cpu_per_task_at_best"] = round(mc / rc, 2)
    return out


def grpc_targets(data: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #12's targets for the mesh on grpc against the references of the same run (None: not measured)."""
    mesh = (data.get("tasks") or {}).get("grpc") or {}
    if not _runs(mesh):
        return {}
    at = _at(mesh, 1024)
    r = grpc_ratios(data)
    vs_autogen = r.get("mesh_vs_autogen_tasks_per_second_1024_inflight")
    vs_raw = r.get("mesh_vs_raw_tasks_per_second_1024_inflight")
    p50 = r.get("mesh_vs_autogen_idle_p50")
    return {
        f"tasks_per_second_1024_inflight_ge_{TARGET_GRPC_TASKS_PER_SECOND}":
            None if at is None else at["tasks_per_second"] >= TARGET_GRPC_TASKS_PER_SECOND,
        f"vs_autogen_1024_inflight_ge_{TARGET_GRPC_VS_AUTOGEN:g}x":
            None if vs_autogen is None else vs_autogen >= TARGET_GRPC_VS_AUTOGEN,
        f"vs_raw_1024_inflight_ge_{TARGET_GRPC_VS_RAW:g}x": None if vs_raw is None else vs_raw >= TARGET_GRPC_VS_RAW,
        f"idle_p50_le_{TARGET_GRPC_IDLE_P50_VS_AUTOGEN:g}x_autogen":
            None if p50 is None else p50 <= TARGET_GRPC_IDLE_P50_VS_AUTOGEN,
    }


def mtls_cost(plain: dict[str, Any], mtls: dict[str, Any]) -> dict[str, Any]:
    """The mesh on grpc with and without mutual TLS, same run: tasks/s per in-flight level and what TLS cost
    (percent of the plaintext throughput; issue #13's target: at most 15)."""
    out: dict[str, Any] = {}
    with_tls = {thr["inflight"]: thr["tasks_per_second"] for thr in _runs(mtls)}
    cpu_tls = {thr["inflight"]: thr.get("cpu_ms_per_task") for thr in _runs(mtls)}
    for thr in _runs(plain):
        k, tps = thr["inflight"], thr["tasks_per_second"]
        if k in with_tls and tps:
            out[f"{k}_inflight"] = {"plain_per_second": tps, "mtls_per_second": with_tls[k],
                                    "cost_pct": round(100.0 * (1 - with_tls[k] / tps), 1),
                                    "plain_cpu_ms_per_task": thr.get("cpu_ms_per_task"),
                                    "mtls_cpu_ms_per_task": cpu_tls.get(k)}
    best_plain, best_tls = plain.get("best_tasks_per_second"), mtls.get("best_tasks_per_second")
    if best_plain and best_tls:
        out["best_cost_pct"] = round(100.0 * (1 - best_tls / best_plain), 1)
        out["target_met"] = out["best_cost_pct"] <= 15.0
    return out


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat, for quick comparison between result files."""
    out: dict[str, Any] = {}
    for backend, block in (data.get("tasks") or {}).items():
        if not isinstance(block, dict) or "error" in block:
            continue
        rt = block.get("idle_latency", {}).get("round_trip", {})
        out[f"tasks_{backend}_idle_p50_ms"] = rt.get("p50_ms")
        out[f"tasks_{backend}_idle_p99_ms"] = rt.get("p99_ms")
        for thr in _runs(block):
            k = thr["inflight"]
            out[f"tasks_{backend}_per_second_{k}_inflight"] = thr["tasks_per_second"]
            out[f"tasks_{backend}_load_p50_ms_{k}_inflight"] = thr["latency_under_load"].get("p50_ms")
            out[f"tasks_{backend}_load_p99_ms_{k}_inflight"] = thr["latency_under_load"].get("p99_ms")
            if thr.get("errors"):
                out[f"tasks_{backend}_errors_{k}_inflight"] = thr["errors"]
        for thr in shape_runs(block, "window"):
            out[f"tasks_{backend}_per_second_{thr['inflight']}_inflight_window"] = thr["tasks_per_second"]
        out[f"tasks_{backend}_best_per_second"] = block.get("best_tasks_per_second")
        if backend in TARGET_TASKS_PER_SECOND:
            out[f"tasks_{backend}_target_per_second_met"] = (block.get("best_tasks_per_second") or 0) >= \
                TARGET_TASKS_PER_SECOND[backend]
            if rt.get("p50_ms") is not None:
                out[f"tasks_{backend}_target_idle_p50_met"] = rt["p50_ms"] <= TARGET_IDLE_P50_MS[backend]
    algos = (data.get("algorithms") or {}).get("runs") or {}
    for name, block in algos.items():
        if "error" in block:
            continue
        out[f"algorithm_{name}_idle_p50_ms"] = block["idle_latency"]["round_trip"].get("p50_ms")
        out[f"algorithm_{name}_idle_p99_ms"] = block["idle_latency"]["round_trip"].get("p99_ms")
        out[f"algorithm_{name}_tasks_per_second"] = block.get("mean_tasks_per_second",
                                                              block.get("best_tasks_per_second"))
        out[f"algorithm_{name}_tasks_per_second_per_round"] = block.get("best_tasks_per_second_per_round")
        best = max(_runs(block), key=lambda r: r["tasks_per_second"])
        out[f"algorithm_{name}_load_p50_ms"] = best["latency_under_load"].get("p50_ms")
        out[f"algorithm_{name}_load_p99_ms"] = best["latency_under_load"].get("p99_ms")
    for peer, block in peer_blocks(data.get("peers") or {}).items():
        if "error" in block or "skipped" in block:
            continue
        key = peer.replace("-", "_")
        out[f"peer_{key}_idle_p50_ms"] = block["idle_latency"]["round_trip"].get("p50_ms")
        out[f"peer_{key}_idle_p99_ms"] = block["idle_latency"]["round_trip"].get("p99_ms")
        for shape in ("window", "waiters"):
            suffix = "" if shape == "window" else "_waiters"  # window: the keys earlier results have
            for thr in shape_runs(block, shape) or (_runs(block) if shape == "window" else []):
                k = thr["inflight"]
                out[f"peer_{key}_per_second_{k}_inflight{suffix}"] = thr["tasks_per_second"]
                out[f"peer_{key}_load_p50_ms_{k}_inflight{suffix}"] = thr["latency_under_load"].get("p50_ms")
                out[f"peer_{key}_load_p99_ms_{k}_inflight{suffix}"] = thr["latency_under_load"].get("p99_ms")
    for shape, levels in best_peer_ratios(data).items():
        if shape == "idle_p50":
            out["mesh_vs_best_peer_idle_p50"] = levels["ratio"]
            out["best_peer_idle_p50"] = levels["best"]
            continue
        for k, v in levels.items():
            out[f"mesh_vs_best_peer_{shape}_{k}_inflight"] = v["ratio"]
            out[f"best_peer_{shape}_{k}_inflight"] = v["best"]
    for name in GRPC_REFERENCES:
        block = (data.get("grpcpeers") or {}).get(name) or {}
        if not block or "error" in block:
            continue
        key = f"grpc_{name.replace('-', '_')}"
        out[f"{key}_idle_p50_ms"] = block["idle_latency"]["round_trip"].get("p50_ms")
        out[f"{key}_idle_p99_ms"] = block["idle_latency"]["round_trip"].get("p99_ms")
        for thr in _runs(block):
            k = thr["inflight"]
            out[f"{key}_per_second_{k}_inflight"] = thr["tasks_per_second"]
            out[f"{key}_cpu_ms_per_task_{k}_inflight"] = thr.get("cpu_ms_per_task")
        out[f"{key}_best_per_second"] = block.get("best_tasks_per_second")
    for k, v in ((data.get("grpcpeers") or {}).get("mtls_cost") or {}).items():
        out[f"grpc_mtls_{k}"] = v
    cost = data.get("tasks_mtls_cost") or {}
    if cost:
        out["tasks_grpc_mtls_best_cost_pct"] = cost.get("best_cost_pct")
    out.update(grpc_ratios(data))
    out.update({f"grpc_target_{k}_met": v for k, v in grpc_targets(data).items()})
    sw = data.get("swim") or {}
    det = sw.get("detection") or {}
    if det:
        for k in ("first_dead_mean_s", "first_dead_max_s", "all_dead_mean_s", "all_dead_max_s", "missed", "kills",
                  "target_met"):
            out[f"swim_detection_{k}"] = det.get(k)
    soak = sw.get("false_deaths") or {}
    if soak:
        for k in ("nodes", "minutes", "false_deaths", "false_suspicions", "tasks_done", "tasks_per_second"):
            out[f"swim_soak_{k}"] = soak.get(k)
    r = ratios(data)
    out.update(r)
    if "mesh_vs_huey_best_tasks_per_second" in r:
        out["target_3x_huey_met"] = r["mesh_vs_huey_best_tasks_per_second"] >= TARGET_VS_HUEY
    for backend, mem in (data.get("memory") or {}).items():
        if not isinstance(mem, dict) or "error" in mem:
            continue
        vis = mem.get("write_to_visible", {})
        out[f"memory_{backend}_nodes"] = mem.get("nodes")
        out[f"memory_{backend}_visible_p50_ms"] = vis.get("any_node", {}).get("p50_ms")
        out[f"memory_{backend}_visible_p99_ms"] = vis.get("any_node", {}).get("p99_ms")
        out[f"memory_{backend}_visible_all_nodes_p50_ms"] = vis.get("all_nodes", {}).get("p50_ms")
        out[f"memory_{backend}_visible_all_nodes_p99_ms"] = vis.get("all_nodes", {}).get("p99_ms")
        out[f"memory_{backend}_target_p99_met"] = vis.get("target_met")
        if "burst" in mem:
            out[f"memory_{backend}_burst_items_per_second"] = mem["burst"]["applied_items_per_second"]
        if "sustained" in mem:
            out[f"memory_{backend}_sustained_writes_per_second"] = mem["sustained"]["writes_per_second"]
            out[f"memory_{backend}_sustained_items_per_second"] = mem["sustained"]["applied_items_per_second"]
        if "sustained_batched" in mem:
            out[f"memory_{backend}_batched_items_per_second"] = mem["sustained_batched"]["applied_items_per_second"]
        if "catch_up" in mem:
            out[f"memory_{backend}_catch_up_items_per_second"] = mem["catch_up"]["applied_items_per_second"]
        if "catch_up_one" in mem:
            out[f"memory_{backend}_catch_up_one_items_per_second"] = mem["catch_up_one"]["applied_items_per_second"]
        if "catch_up_away" in mem:
            out[f"memory_{backend}_catch_up_away_items_per_second"] = mem["catch_up_away"]["applied_items_per_second"]
    return out


# -- the printed tables -------------------------------------------------------------------------------
def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(title: str, header: list[str], rows: list[list[str]], notes: list[str] | None = None) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["", title]
    for n, r in enumerate([header, *rows]):
        lines.append("  ".join(c.ljust(w) if i == 0 or i == len(header) - 1 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if n == 0:
            lines.append("-" * len(lines[-1]))
    return lines + (notes or [])


def _mark(value: float | None, target: float | None, lower: bool = False) -> str:
    if value is None or target is None:
        return ""
    met = value <= target if lower else value >= target
    return "met" if met else "MISSED"


def _cores(util: dict[str, float] | None) -> str:
    if not util:
        return ""
    return " ".join(f"{k} {v:.2f}" for k, v in util.items())


def _tasks_rows(label: str, block: dict[str, Any], backend: str | None) -> list[list[str]]:
    rows = []
    rt = block.get("idle_latency", {}).get("round_trip", {})
    p50_target = TARGET_IDLE_P50_MS.get(backend or "")
    rows.append([f"{label}: idle (sequential)", _f(rt.get("n")), "-", _f(rt.get("p50_ms")), _f(rt.get("p99_ms")),
                 "" if p50_target is None else f"p50 ≤ {p50_target:g} ms: {_mark(rt.get('p50_ms'), p50_target, True)}"])
    bd = block.get("idle_latency", {}).get("breakdown", {})
    rows.append([f"{label}:   submit→claimed / →finished / →seen (p50)", "", "",
                 " / ".join(_f(bd.get(k, {}).get("p50_ms")) for k in ("submit_to_claimed", "claimed_to_finished",
                                                                      "finished_to_seen")), "", ""])
    tps_target = TARGET_TASKS_PER_SECOND.get(backend or "")
    for thr in _runs(block):
        lat = thr.get("latency_under_load", {})
        note = f"{thr['tasks_finished']:,}/{thr['tasks_requested']:,} done"
        if thr.get("errors"):
            sample = (thr.get("error_samples") or [""])[0]
            note += f", {thr['errors']:,} ERRORS ({sample[:70]})"
        if thr.get("truncated_by_budget"):
            note += ", stopped by the time budget"
        if tps_target:
            note += f"; ≥ {tps_target:,}/s: {_mark(thr['tasks_per_second'], tps_target)}"
        rows.append([f"{label}: {thr['inflight']} in flight", _f(lat.get("n")), _f(thr["tasks_per_second"], 0),
                     _f(lat.get("p50_ms")), _f(lat.get("p99_ms")), note])
    return rows


def _peer_desc(name: str, block: dict[str, Any]) -> str:
    cfg = dict(block.get("config") or {})
    if name == "celery":
        return f"2 workers, pool={cfg.get('pool')} concurrency={cfg.get('concurrency')}"
    if name == "huey":
        return f"2 workers, {cfg.get('threads_per_consumer')} threads/consumer"
    for k in ("venv", "python", "workers"):
        cfg.pop(k, None)
    return "; ".join(f"{k} {v}" for k, v in cfg.items())


def _shape_rows(label: str, block: dict[str, Any]) -> list[list[str]]:
    rows = []
    for shape in ("window", "waiters"):
        for thr in shape_runs(block, shape):
            lat = thr.get("latency_under_load", {})
            note = f"{thr['tasks_finished']:,}/{thr['tasks_requested']:,} done"
            if thr.get("errors"):
                note += f", {thr['errors']:,} ERRORS ({(thr.get('error_samples') or [''])[0][:60]})"
            if thr.get("truncated_by_budget"):
                note += ", stopped by the time budget"
            if thr.get("cpu_ms_per_task") is not None:
                note += f"; CPU {_f(thr.get('cpu_ms_per_task'), 3)} ms/task"
            rows.append([f"{label}: {thr['inflight']} in flight, {shape}", _f(lat.get("n")),
                         _f(thr["tasks_per_second"], 0), _f(lat.get("p50_ms")), _f(lat.get("p99_ms")), note])
    return rows


def _peers_table(data: dict[str, Any], header: list[str]) -> list[str]:
    """Every peer and the mesh on Redis, both shapes, then mesh ÷ the best peer per level and for idle p50."""
    peer_section = data.get("peers") or {}
    if not peer_section:
        return []
    rows: list[list[str]] = []
    notes: list[str] = []
    mesh = (data.get("tasks") or {}).get("redis")
    if mesh and "error" not in mesh:
        rt = mesh.get("idle_latency", {}).get("round_trip", {})
        rows.append(["mesh (redis): idle (sequential)", _f(rt.get("n")), "-", _f(rt.get("p50_ms")),
                     _f(rt.get("p99_ms")), "2 worker processes"])
        rows += _shape_rows("mesh (redis)", mesh) or _tasks_rows("mesh (redis)", mesh, None)[2:]
    for name, block in peer_blocks(peer_section).items():
        if "skipped" in block:
            rows.append([name, "-", "-", "-", "-", f"left out: {block['skipped']}"])
            continue
        if "error" in block:
            rows.append([name, "-", "-", "-", "-", f"FAILED: {block['error'][:200]}"])
            continue
        rt = block["idle_latency"]["round_trip"]
        rows.append([f"{name}: idle (sequential)", _f(rt.get("n")), "-", _f(rt.get("p50_ms")), _f(rt.get("p99_ms")),
                     _peer_desc(name, block)])
        rows += _shape_rows(name, block)
        for shape in ("window", "waiters"):
            for thr in shape_runs(block, shape):
                notes.append(f"  {name} {thr['inflight']} in flight, {shape}: CPU (cores) "
                             f"{_cores(thr.get('cpu_utilisation'))}")
    r = ratios(data)
    if "mesh_vs_huey_best_tasks_per_second" in r:
        notes.append(f"  target mesh ≥ {TARGET_VS_HUEY:g}× Huey (best vs best, window): "
                     f"{_mark(r['mesh_vs_huey_best_tasks_per_second'], TARGET_VS_HUEY)}")
    lines = _table("Peers on the same redis-server (1 submitter + 2 worker processes each; window: one submitter, "
                   "oldest result first; waiters: N concurrent waiters)", header, rows, notes)
    best = best_peer_ratios(data)
    brows: list[list[str]] = []
    if "idle_p50" in best:
        b = best["idle_p50"]
        brows.append(["idle p50 ms (lower is better)", b["best"], _f(b["peer"]), _f(b["mesh"]), f"{b['ratio']:.2f}"])
    for shape in ("window", "waiters"):
        for k, b in sorted((best.get(shape) or {}).items()):
            brows.append([f"{k} in flight, {shape}: tasks/s", b["best"], _f(b["peer"], 0), _f(b["mesh"], 0),
                          f"{b['ratio']:.2f}"])
    lines += _table("Mesh ÷ best peer (issue #14: ≥ 3× at every level from 64 up; idle p50 ≤ 0.8×)",
                    ["measure", "best peer", "peer", "mesh", "mesh ÷ best"], brows)
    return lines


def _grpc_table(data: dict[str, Any], header: list[str]) -> list[str]:
    refs = data.get("grpcpeers") or {}
    rows: list[list[str]] = []
    notes: list[str] = []
    mesh = (data.get("tasks") or {}).get("grpc")
    if refs and mesh and "error" not in mesh:
        rows += _tasks_rows("mesh (grpc)", mesh, None)
    for name in GRPC_REFERENCES:
        block = refs.get(name)
        if not block:
            continue
        if "error" in block:
            rows.append([name, "-", "-", "-", "-", f"FAILED: {block['error']}"])
            continue
        lat = block["idle_latency"]
        rt = lat["round_trip"]
        cfg = block.get("config", {})
        rows.append([f"{name}: idle (sequential)", _f(rt.get("n")), "-", _f(rt.get("p50_ms")), _f(rt.get("p99_ms")),
                     f"CPU {_f(lat.get('cpu_ms_per_task'), 3)} ms/request; grpcio {cfg.get('grpcio')}"])
        for thr in _runs(block):
            load = thr["latency_under_load"]
            rows.append([f"{name}: {thr['inflight']} in flight", _f(load.get("n")), _f(thr["tasks_per_second"], 0),
                         _f(load.get("p50_ms")), _f(load.get("p99_ms")),
                         f"CPU {_f(thr.get('cpu_ms_per_task'), 3)} ms/request; "
                         f"{thr['tasks_finished']:,}/{thr['tasks_requested']:,} done"
                         + (f", {thr['errors']:,} ERRORS ({(thr.get('error_samples') or [''])[0][:60]})"
                            if thr.get("errors") else "")
                         + (", stopped by the time budget" if thr.get("truncated_by_budget") else "")])
            per_round = thr.get("tasks_per_second_per_round")
            rounds = (f"; median of {len(per_round)} rounds: " + " / ".join(f"{v:,.0f}" for v in per_round)
                      + " per s") if per_round else ""
            notes.append(f"  {name} {thr['inflight']} in flight: CPU (cores) {_cores(thr.get('cpu_utilisation'))}"
                         + rounds)
    cost = refs.get("mtls_cost")
    if cost:
        levels = ", ".join(f"{k.split('_')[3]}: {v:g}%" for k, v in cost.items()
                           if k.startswith("throughput_loss_pct_"))
        notes.append(f"  mutual TLS costs the raw echo: throughput {levels} (best vs best "
                     f"{cost.get('best_throughput_loss_pct')}%), idle p50 {cost.get('idle_p50_ms_added'):+g} ms")
    r = grpc_ratios(data)
    if r:
        notes.append("  ratios (mesh ÷ reference; tasks/s higher is better for the mesh, idle p50 and CPU lower): "
                     + ", ".join(f"{k.removeprefix('mesh_vs_')} {v:g}" for k, v in r.items()))
    targets = grpc_targets(data)
    if targets:
        notes.append("  targets (issue #12): " + ", ".join(
            f"{k.replace('_', ' ')}: {'-' if v is None else 'met' if v else 'MISSED'}" for k, v in targets.items()))
    return _table("gRPC references (1 submitter + 2 worker processes each, no-op echo; CPU of all their processes)",
                  header, rows, notes)


TARGET_SCALE_GROWTH = 2.0  # per-node membership cost at the largest size ÷ at the smallest (issue #14)


def _scale_table(data: dict[str, Any]) -> list[str]:
    sc = data.get("scale") or {}
    rows: list[list[str]] = []
    notes: list[str] = []
    for kind, backend in [(k, b) for k in ("members", "mesh") for b in ("sqlite", "redis")]:
        block = (sc.get(kind) or {}).get(backend) or {}
        for r in block.values():
            if not isinstance(r, dict) or "nodes" not in r:
                continue
            if "error" in r:
                rows.append([f"{kind} {backend}: {r['nodes']} idle nodes", "-", "-", "-", "-", f"FAILED: {r['error']}"])
                continue
            unsettled = "" if r.get("settled", r["nodes"]) == r["nodes"] else f", {r.get('settled')} settled"
            rows.append([f"{kind} {backend}: {r['nodes']} idle nodes ({r['processes']} processes{unsettled})",
                         _f(r.get("redis_commands_per_node_s"), 1), _f(r.get("cpu_per_node_s"), 4),
                         _f(r.get("false_suspicions")), _f(r.get("false_deaths")),
                         f"cut off {r.get('cut_off')}; redis-server CPU/node/s {_f(r.get('redis_cpu_per_node_s'), 5)}"
                         if backend == "redis" else f"cut off {r.get('cut_off')}"])
        growth = block.get("growth_first_to_last") or {}
        if growth:
            notes.append(f"  {kind} {backend}: per-node cost, largest ÷ smallest size: " + ", ".join(
                f"{k} {v:g} (≤ {TARGET_SCALE_GROWTH:g}: {_mark(v, TARGET_SCALE_GROWTH, True)})"
                for k, v in growth.items()))
    if not rows:
        return []
    return _table("Membership cost per node, idle mesh (default timings: heartbeat 1 s, suspect 2 s, dead 3 s; "
                  "members: the membership path alone, mesh: whole nodes)",
                  ["measure", "redis cmds/node/s", "CPU s/node/s", "false suspect", "false dead", "notes"],
                  rows, notes)


def _swim_table(data: dict[str, Any]) -> list[str]:
    sw = data.get("swim") or {}
    rows: list[list[str]] = []
    notes: list[str] = []
    det = sw.get("detection") or {}
    if det:
        ok = "" if det.get("all_dead_max_s") is None else (
            f"max ≤ {TARGET_DETECTION_S:g} s: {_mark(det.get('all_dead_max_s'), TARGET_DETECTION_S, True)}")
        rows.append([f"kill -9 → dead, first survivor ({det['nodes']} nodes)", _f(det.get("kills")),
                     _f(det.get("first_dead_mean_s"), 3), _f(det.get("first_dead_max_s"), 3), ""])
        rows.append(["kill -9 → dead, every survivor", _f(det.get("kills")), _f(det.get("all_dead_mean_s"), 3),
                     _f(det.get("all_dead_max_s"), 3), f"{det.get('missed')} missed; {ok}"])
        notes.append("  per kill (every survivor, s): " + ", ".join(
            _f(k.get("all_dead_s"), 2) for k in det.get("per_kill", [])) + "; first suspect (s): " + ", ".join(
            _f(k.get("first_suspect_s"), 2) for k in det.get("per_kill", [])))
    soak = sw.get("false_deaths") or {}
    if soak:
        lat = soak.get("latency", {})
        rows.append([f"false deaths, {soak['nodes']} nodes, {soak['minutes']:g} min under load",
                     _f(soak.get("false_deaths")), "-", "-",
                     f"{soak.get('false_suspicions')} false suspicions; {soak.get('tasks_done', 0):,} tasks "
                     f"({soak.get('tasks_per_second')}/s, {soak.get('load_inflight')} in flight, p50 "
                     f"{lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms), {soak.get('errors')} errors"])
        if soak.get("nodes_falsely_dead"):
            notes.append(f"  falsely declared dead: {', '.join(soak['nodes_falsely_dead'])}")
        if soak.get("cpu_utilisation"):
            notes.append(f"  soak CPU (cores) {_cores(soak.get('cpu_utilisation'))}")
    return _table("Membership on grpc_mesh (SWIM, default timings; times from the nodes' own log lines)",
                  ["measure", "n", "mean s", "max s", "notes"], rows, notes)


def render(data: dict[str, Any]) -> str:
    info = data.get("machine", {})
    lines = [f"Agent Mesh bench ({data.get('mode')}) on {info.get('cpu_count')} CPUs ({info.get('cpu_model')}), "
             f"Python {info.get('python')}, SQLite {info.get('sqlite')}, "
             f"redis-server {(data.get('redis_server') or {}).get('version', '-')} "
             f"({(data.get('redis_server') or {}).get('binary', '-')}); "
             f"load average at start {info.get('load_average')}, end {data.get('load_average_end')}; "
             f"pace at start {info.get('pace_us', '-')}, end {data.get('pace_us_end', '-')} µs per unit "
             f"(lower: a faster machine, see report.machine_pace); "
             f"{data.get('total_seconds')} s in all"]
    header = ["measure", "n", "tasks/s", "p50 ms", "p99 ms", "notes"]

    rows: list[list[str]] = []
    notes: list[str] = []
    for key, block in (data.get("tasks") or {}).items():
        if "error" in block:
            rows.append([f"tasks {key}", "-", "-", "-", "-", f"FAILED: {block['error']}"])
            continue
        backend = key if key in TARGET_TASKS_PER_SECOND else None
        label = key
        rows += _tasks_rows(label, block, backend)
        rc = (block.get("idle_latency") or {}).get("redis_commands") or {}
        if rc:
            each = ", ".join(f"{name} {c['calls_per_task']}× {c['usec_per_call']:g} µs"
                             for name, c in (rc.get("commands") or {}).items() if c.get("calls_per_task"))
            notes.append(f"  {label} idle: redis {rc.get('calls_per_task')} commands/task, "
                         f"{rc.get('server_usec_per_task')} µs server time/task ({each})")
        for thr in _runs(block):
            rc = thr.get("redis_commands") or {}
            extra = (f"; redis: {rc.get('calls_per_task')} commands/task, {rc.get('server_usec_per_task')} µs "
                     "server time/task") if rc else ""
            notes.append(f"  {label} {thr['inflight']} in flight: CPU (cores) {_cores(thr.get('cpu_utilisation'))}"
                         f"{extra}")
    lines += _table("Tasks: no-op echo, 1 submitter + 2 workers (submit→result)", header, rows, notes)

    algos = (data.get("algorithms") or {}).get("runs") or {}
    rows, notes = [], []
    for name, block in algos.items():
        if "error" in block:
            rows.append([name, "-", "-", "-", "-", f"FAILED: {block['error']}"])
            continue
        rt = block["idle_latency"]["round_trip"]
        rows.append([f"{name}: idle", _f(rt.get("n")), "-", _f(rt.get("p50_ms")), _f(rt.get("p99_ms")), ""])
        for thr in _runs(block):
            lat = thr["latency_under_load"]
            split = thr.get("breakdown", {}).get("tasks_per_worker", {})
            rnd = f" (round {thr['round']})" if "round" in thr else ""
            rows.append([f"{name}: {thr['inflight']} in flight{rnd}", _f(lat.get("n")), _f(thr["tasks_per_second"], 0),
                         _f(lat.get("p50_ms")), _f(lat.get("p99_ms")),
                         "per worker " + ", ".join(f"{k} {v:,}" for k, v in sorted(split.items()))
                         + (f"; {thr['errors']:,} ERRORS" if thr.get("errors") else "")])
        if "mean_tasks_per_second" in block:
            notes.append(f"  {name}: mean {block['mean_tasks_per_second']:,.0f} tasks/s over "
                         f"{len(block['best_tasks_per_second_per_round'])} round(s)")
    backend = (data.get("algorithms") or {}).get("backend", "sqlite")
    lines += _table(f"Load-balancing algorithms on {backend} (submitter's task_distribution.load_balancing_algorithm)",
                    header, rows, notes)

    lines += _peers_table(data, header)
    lines += _grpc_table(data, header)
    lines += _swim_table(data)
    lines += _scale_table(data)

    rows, notes = [], []
    mheader = ["measure", "n", "items/s", "p50 ms", "p99 ms", "notes"]
    for backend, mem in (data.get("memory") or {}).items():
        if "error" in mem:
            rows.append([f"{backend}", "-", "-", "-", "-", f"FAILED: {mem['error']}"])
            continue
        nodes = mem.get("nodes")
        vis = mem.get("write_to_visible", {})
        target = TARGET_VISIBLE_P99_MS.get(backend)
        rows.append([f"{backend}: write→visible, each node", _f(vis.get("any_node", {}).get("n")), "-",
                     _f(vis.get("any_node", {}).get("p50_ms")), _f(vis.get("any_node", {}).get("p99_ms")), ""])
        allv = vis.get("all_nodes", {})
        rows.append([f"{backend}: write→visible on all {nodes} nodes", _f(allv.get("n")), "-", _f(allv.get("p50_ms")),
                     _f(allv.get("p99_ms")),
                     "" if target is None else f"p99 ≤ {target:g} ms: {_mark(allv.get('p99_ms'), target, True)}"])
        rows.append([f"{backend}: sync_memory_item call", _f(vis.get("write_call", {}).get("n")), "-",
                     _f(vis.get("write_call", {}).get("p50_ms")), _f(vis.get("write_call", {}).get("p99_ms")), ""])
        for phase, what in (("burst", "burst"), ("sustained", "sustained"), ("sustained_batched", "sustained")):
            b = mem.get(phase)
            if not b:
                continue
            lag = b.get("lag", {}).get("all_nodes", {})
            size = f"batches of {b['batch']}, " if b.get("batch", 1) > 1 else ""
            inflight = b.get("inflight", mem["options"].get("burst_inflight"))
            rows.append([f"{backend}: {what} ({size}{inflight} in flight)",
                         _f(b.get("items")), _f(b.get("applied_items_per_second"), 0), _f(lag.get("p50_ms")),
                         _f(lag.get("p99_ms")),
                         f"written {_f(b.get('writes_per_second'), 0)}/s; applied on all {nodes} nodes (slowest); "
                         "lag = write→visible on all nodes"])
        catch_ups = (("catch_up", "catch-up after pause", "paused together: applied per node (slowest)"),
                     ("catch_up_one", "catch-up of one paused node", "the others live"),
                     ("catch_up_away", "catch-up of one node back from dead", "away"))
        for phase, what, note in catch_ups:
            c = mem.get(phase)
            if c:
                if phase == "catch_up_away":
                    note = (f"away {c.get('paused_seconds')} s (declared dead after "
                            f"{c.get('declared_dead_after_seconds')} s)")
                rows.append([f"{backend}: {what}", _f(c.get("items")), _f(c.get("applied_items_per_second"), 0),
                             "-", "-", note])
        for phase in ("burst", "sustained", "sustained_batched"):
            if mem.get(phase):
                notes.append(f"  {backend} {phase}: CPU (cores) {_cores(mem[phase].get('cpu_utilisation'))}")
    lines += _table("Memory: write→visible and items/s", mheader, rows, notes)

    machine = []
    for section in ("tasks", "peers", "algorithms", "grpcpeers", "swim", "scale", "memory"):
        block = data.get(section) or {}
        items = [(section, block)] if "machine" in block else [(f"{section}[{k}]", v) for k, v in block.items()
                                                                 if isinstance(v, dict) and "machine" in v]
        for label, b in items:
            m = b["machine"]
            machine.append(f"  {label}: {b.get('seconds')} s; load average {m['load_average_start']} → "
                           f"{m['load_average_end']}; machine busy {m['busy_cores']} of {m['cpus']} cores, this run "
                           f"{m['this_run_cores']}, other processes {m['other_cores']}")
    if machine:
        lines += ["", "Machine load per part", *machine]
    for label in failures(data):
        lines.append(f"FAILED: {label}")
    return "\n".join(lines)
