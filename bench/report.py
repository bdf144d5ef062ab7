"""Machine description, the printed table, and the JSON file in ``bench/results/``."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_TASKS_PER_SECOND = 5000
TARGET_IDLE_P50_MS = 2.0


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
    }
    info.update(_git())
    return info


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


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat, for quick comparison between result files."""
    out: dict[str, Any] = {}
    tasks = data.get("tasks") or {}
    if "idle_latency" in tasks:
        rt = tasks["idle_latency"]["round_trip"]
        out.update(idle_p50_ms=rt.get("p50_ms"), idle_p99_ms=rt.get("p99_ms"), idle_mean_ms=rt.get("mean_ms"))
    for thr in _runs(tasks):
        k = thr["inflight"]
        out[f"tasks_per_second_{k}_inflight"] = thr["tasks_per_second"]
        out[f"load_p50_ms_{k}_inflight"] = thr["latency_under_load"].get("p50_ms")
        out[f"load_p99_ms_{k}_inflight"] = thr["latency_under_load"].get("p99_ms")
    if "best_tasks_per_second" in tasks:
        out["best_tasks_per_second"] = tasks["best_tasks_per_second"]
        out["target_tasks_per_second_met"] = tasks["best_tasks_per_second"] >= TARGET_TASKS_PER_SECOND
    if "idle_p50_ms" in out:
        out["target_idle_p50_met"] = out["idle_p50_ms"] <= TARGET_IDLE_P50_MS
    mem = data.get("memory") or {}
    if "write_to_visible" in mem:
        vis = mem["write_to_visible"]
        out.update(memory_visible_p50_ms=vis["any_node"].get("p50_ms"), memory_visible_p99_ms=vis["any_node"].get(
            "p99_ms"), memory_visible_all_nodes_p50_ms=vis["all_nodes"].get("p50_ms"),
            memory_visible_all_nodes_p99_ms=vis["all_nodes"].get("p99_ms"))
    if "burst" in mem:
        out["memory_burst_items_per_second"] = mem["burst"]["applied_items_per_second"]
        out["memory_burst_writes_per_second"] = mem["burst"]["writes_per_second"]
    if "catch_up" in mem:
        out["memory_catch_up_items_per_second"] = mem["catch_up"]["applied_items_per_second"]
    return out


def _ms(block: dict[str, Any] | None, key: str) -> str:
    if not block or key not in block:
        return "-"
    return f"{block[key]:.2f}"


def _row(label: str, block: dict[str, Any] | None, extra: str = "") -> list[str]:
    return [label, str(block.get("n", "-")) if block else "-", _ms(block, "p50_ms"), _ms(block, "p99_ms"),
            _ms(block, "mean_ms"), _ms(block, "max_ms"), extra]


def render(data: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    tasks = data.get("tasks")
    if tasks and "error" not in tasks:
        idle = tasks.get("idle_latency", {})
        rows.append(_row("tasks: idle round trip", idle.get("round_trip"),
                         _target(idle.get("round_trip", {}).get("p50_ms"), TARGET_IDLE_P50_MS, "p50 ≤", " ms",
                                 lower=True)))
        rows.append(_row("  submit call (idle)", idle.get("submit_call")))
        bd = idle.get("breakdown", {})
        rows.append(_row("  submit→claimed (idle)", bd.get("submit_to_claimed")))
        rows.append(_row("  claimed→finished (idle)", bd.get("claimed_to_finished")))
        rows.append(_row("  finished→seen (idle)", bd.get("finished_to_seen")))
        for thr in _runs(tasks):
            k = thr.get("inflight")
            bd = thr.get("breakdown", {})
            rows.append(_row(f"tasks: submit→result, {k} in flight", thr.get("latency_under_load"),
                             f"{thr.get('tasks_per_second', 0):,.0f} tasks/s "
                             + _target(thr.get("tasks_per_second"), TARGET_TASKS_PER_SECOND, "≥", "/s")))
            rows.append(_row(f"  submit call ({k})", thr.get("submit_call_under_load")))
            rows.append(_row(f"  submit→claimed ({k})", bd.get("submit_to_claimed")))
            rows.append(_row(f"  claimed→finished ({k})", bd.get("claimed_to_finished")))
            rows.append(_row(f"  finished→seen ({k})", bd.get("finished_to_seen")))
    mem = data.get("memory")
    if mem and "error" not in mem:
        vis, burst = mem.get("write_to_visible", {}), mem.get("burst", {})
        rows.append(_row("memory: write→visible (each node)", vis.get("any_node")))
        rows.append(_row("  write→visible on all 3 nodes", vis.get("all_nodes")))
        rows.append(_row("  sync_memory_item call", vis.get("write_call")))
        rows.append(_row("memory: burst write→visible", burst.get("lag", {}).get("any_node"),
                         f"{burst.get('applied_items_per_second', 0):,.0f} items/s applied on all nodes "
                         f"({burst.get('writes_per_second', 0):,.0f} writes/s)"))
        catch = mem.get("catch_up")
        if catch:
            rows.append(["memory: catch-up after pause", str(catch["items"]), "-", "-", "-", "-",
                         f"{catch['applied_items_per_second']:,.0f} items/s applied per node (slowest)"])
    header = ["measure", "n", "p50 ms", "p99 ms", "mean ms", "max ms", "notes"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                           strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    info = data.get("machine", {})
    lines.insert(0, f"Agent Mesh bench ({data.get('mode')}) on {info.get('cpu_count')} CPUs, "
                    f"Python {info.get('python')}, SQLite {info.get('sqlite')}, {info.get('platform')}; "
                    f"load average at start {info.get('load_average')}, end {data.get('load_average_end')}")
    for thr in _runs(tasks):
        lines.append(f"throughput ({thr['inflight']} in flight): "
                     f"{thr['tasks_finished']}/{thr['tasks_requested']} tasks in "
                     f"{thr['wall_seconds']} s, {thr['failed']} failed, {thr['errors']} errors"
                     + (" (stopped by the time budget)" if thr.get("truncated_by_budget") else "")
                     + f"; CPU use (cores): {thr.get('cpu_utilisation')}")
    if mem and "burst" in mem:
        lines.append(f"memory burst: {mem['burst']['items']} items; per node: "
                     + ", ".join(f"{k} {v['items_per_second']:,.0f}/s" for k, v in mem['burst']['per_node'].items())
                     + f"; CPU use (cores): {mem['burst'].get('cpu_utilisation')}")
    for part in ("tasks", "memory"):
        if data.get(part, {}).get("error"):
            lines.append(f"{part}: FAILED: {data[part]['error']}")
    return "\n".join(lines)


def _runs(tasks: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not tasks or "error" in tasks:
        return []
    runs = tasks.get("throughput") or []
    return runs if isinstance(runs, list) else [runs]


def _target(value: float | None, target: float, word: str, unit: str, lower: bool = False) -> str:
    if value is None:
        return ""
    met = value <= target if lower else value >= target
    return f"[target {word} {target:g}{unit}: {'met' if met else 'missed'}]"
