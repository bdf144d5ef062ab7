"""``python -m bench [tasks|memory|all] [--quick]`` (``make bench ARGS="tasks --quick"``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mesh_core.errors import MeshError

from . import memory, report, tasks
from .cluster import BenchError

QUICK_TASKS = {"latency_n": 100, "throughput_n": 2000, "warmup": 20}
QUICK_MEMORY = {"writes": 50, "burst": 300, "catch_up": 300}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("which", nargs="?", choices=("tasks", "memory", "all"), default="all")
    p.add_argument("--quick", action="store_true", help="a short smoke run (100 + 2,000 tasks, 50 writes)")
    p.add_argument("--latency-n", type=int, help="sequential idle round trips (default 500, quick 100)")
    p.add_argument("--throughput-n", type=int, help="tasks in the throughput run (default 20,000, quick 2,000)")
    p.add_argument("--inflight", type=_levels, metavar="N[,N...]",
                   help="concurrent submit+wait coroutines; one throughput run per value (default 256,1024)")
    p.add_argument("--budget", type=float, help="stop each throughput run after this many seconds (default 45)")
    p.add_argument("--worker-concurrency", type=int, metavar="N",
                   help="tasks each worker runs at once (written to a worker --config file; default: engine's 16)")
    p.add_argument("--writes", type=int, help="spaced memory writes (default 300, quick 50)")
    p.add_argument("--spacing-ms", type=float, help="gap between spaced memory writes (default 5)")
    p.add_argument("--burst", type=int, help="memory burst size (default 2,000, quick 300)")
    p.add_argument("--catch-up", type=int, metavar="N",
                   help="memory items written while the workers are paused, then caught up (default 2,000, "
                        "quick 300; 0 skips)")
    p.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="folder for the JSON results")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON file")
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary folder (db, worker logs)")
    return p


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not levels or min(levels) <= 0:
        raise argparse.ArgumentTypeError("in-flight levels must be positive")
    return levels


def _options(args: argparse.Namespace) -> tuple[tasks.TasksOptions, memory.MemoryOptions]:
    t: dict[str, Any] = dict(QUICK_TASKS) if args.quick else {}
    m: dict[str, Any] = dict(QUICK_MEMORY) if args.quick else {}
    for src, dst, key in (("latency_n", t, "latency_n"), ("throughput_n", t, "throughput_n"),
                          ("budget", t, "throughput_budget_s"), ("worker_concurrency", t, "worker_concurrency"),
                          ("writes", m, "writes"), ("burst", m, "burst")):
        value = getattr(args, src)
        if value is not None:
            if value <= 0:
                raise SystemExit(f"python -m bench: --{src.replace('_', '-')} must be positive")
            dst[key] = value
    if args.catch_up is not None:
        m["catch_up"] = max(0, args.catch_up)
    if args.inflight is not None:
        t["inflight"] = args.inflight
    if args.spacing_ms is not None:
        m["spacing_s"] = max(0.0, args.spacing_ms) / 1000.0
    if args.keep_temp:
        t["keep_dir"] = m["keep_dir"] = True
    return tasks.TasksOptions(**t), memory.MemoryOptions(**m)


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def _run(which: str, topts: tasks.TasksOptions, mopts: memory.MemoryOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    me = asyncio.current_task()
    if me is not None:  # SIGTERM unwinds like Ctrl-C: every cluster stops its workers on the way out
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, me.cancel)
    parts = [("tasks", tasks.run, topts), ("memory", memory.run, mopts)]
    for name, fn, opts in parts:
        if which not in (name, "all"):
            continue
        started = time.monotonic()
        try:
            out[name] = await fn(opts, _log)  # type: ignore[operator]
        except (BenchError, MeshError, OSError, RuntimeError, ValueError) as exc:  # report it, run the other part
            _log(f"{name}: FAILED: {exc}")
            traceback.print_exc(file=sys.stderr)
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.monotonic() - started, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    topts, mopts = _options(args)
    started = time.monotonic()
    data: dict[str, Any] = {"mode": f"{args.which}{' quick' if args.quick else ''}",
                            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "machine": report.machine_info()}
    try:
        data.update(asyncio.run(_run(args.which, topts, mopts)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _log("interrupted; workers stopped, temporary folders removed")
        return 130
    data["total_seconds"] = round(time.monotonic() - started, 2)
    data["summary"] = report.summary(data)
    data["load_average_end"] = report.load_average()
    print(report.render(data))
    if not args.no_save:
        name = args.which + ("-quick" if args.quick else "")
        path = report.save(name, data, args.out)
        print(f"results: {path}")
    failed = any("error" in data.get(k, {}) for k in ("tasks", "memory"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
