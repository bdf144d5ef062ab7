"""``grpcpeers``: the references for the mesh's peer-to-peer gRPC backend, in the shape of ``bench tasks``.

Each reference has 1 submitter and 2 worker processes on 127.0.0.1 and runs no-op
requests: warm-up, idle latency (``latency_n`` sequential round trips), then one
throughput run per in-flight level (``windows``; send until that many are
outstanding, collect the oldest, send the next). CPU is read with psutil from
every process of the reference, per phase, and given per finished request.

* ``raw``: the ceiling. Plain ``grpc.aio``: one long-lived bidirectional stream per
  worker process, 100-byte messages echoed back as they are and matched by a
  sequence number (``peer_grpc_raw.py``). The submitter is this process.
* ``raw-tls``: the same with mutual TLS (a throw-away CA made with ``cryptography``).
* ``autogen``: AutoGen's distributed runtime (``autogen-ext[grpc]``): a
  ``GrpcWorkerAgentRuntimeHost``, two ``GrpcWorkerAgentRuntime`` workers with one echo
  agent type each, and a client runtime calling ``send_message`` (``peer_autogen.py``).
  It runs in its own virtual environment, ``bench/peers/.venv-autogen``, made here on
  first use. Four processes: the host (AutoGen's broker, on every request's path), 2
  workers and the client, which is the submitter; the CPU of all four counts.

:func:`run_grpc_references` returns ``{name: block}`` where each block has the keys of a
``bench tasks`` result (``idle_latency``, ``throughput`` [per level], ``best_tasks_per_second``),
plus ``cpu_ms_per_task`` per phase, and ``mtls_cost`` when both raw runs ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil

from mesh_testing import clean_env

from . import peer_grpc_raw, window
from .cluster import BenchError
from .peers import ROOT, PeerProcs, ensure_venv

REFERENCES = ("raw", "raw-tls", "autogen")
AUTOGEN_VENV = ROOT / "bench" / "peers" / ".venv-autogen"
AUTOGEN_PACKAGES = ("autogen-ext[grpc]", "autogen-core", "psutil")
AUTOGEN_SCRIPT = ROOT / "bench" / "peer_autogen.py"

Log = Callable[[str], Any]


@dataclass(frozen=True)
class GrpcRefOptions:
    latency_n: int = 300
    n: int = 5000  # requests per window level
    windows: tuple[int, ...] = (64, 256, 1024)
    budget_s: float = 20.0  # per level: stop sending after this long
    warmup: int = 50
    timeout: float = 30.0  # per request
    which: tuple[str, ...] = REFERENCES
    rounds: int = 1  # each reference this many times, order alternating; per level the median round counts
    keep_dir: bool = False


def _env() -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _ready_values(procs: PeerProcs, marker: str) -> list[str]:
    """What follows ``marker`` on each worker's log line (a port, an address)."""
    out = []
    for text in procs.logs():
        m = re.search(re.escape(marker) + r"(\S+)", text)
        if m is None:
            raise BenchError(f"{procs.name}: no '{marker}' line in a worker log:\n{text[-1500:]}")
        out.append(m.group(1))
    return out


# -- raw grpc.aio echo ---------------------------------------------------------------------------------
async def run_raw(opts: GrpcRefOptions, log: Log, tls: bool, stop: Callable[[], bool]) -> dict[str, Any]:
    """Two echo worker processes and this process as the submitter; mutual TLS when ``tls``."""
    name = "raw-tls" if tls else "raw"
    procs = PeerProcs(f"grpc-{name}")
    client: peer_grpc_raw.EchoClient | None = None
    try:
        files = peer_grpc_raw.make_certs(Path(procs.dir) / "tls") if tls else None
        cmd = [sys.executable, "-m", "bench.peer_grpc_raw", "worker"]
        if files is not None:
            cmd += ["--tls-dir", str(files.folder)]
        procs.start([cmd, cmd], _env())
        await asyncio.to_thread(procs.wait_logs, peer_grpc_raw.READY, 30)
        ports = _ready_values(procs, peer_grpc_raw.READY)
        client = await peer_grpc_raw.EchoClient([f"127.0.0.1:{p}" for p in ports], files).open()
        me = psutil.Process()

        def cpu() -> dict[str, float]:
            t = me.cpu_times()
            return {"submitter": t.user + t.system, "workers": procs.cpu_seconds()}

        out = await window.measure(f"grpcpeers: {name}", client.send, cpu, latency_n=opts.latency_n, n=opts.n,
                                   windows=opts.windows, budget_s=opts.budget_s, timeout=opts.timeout,
                                   warmup=opts.warmup, log=log, check=procs.check_alive, stop=stop)
        out["unmatched_echoes"] = client.unmatched

        out["config"] = {"workers": 2, "streams": "1 bidirectional stream per worker, long-lived",
                         "message_bytes": peer_grpc_raw.MESSAGE_BYTES, "grpcio": grpc.__version__,
                         "tls": "mutual TLS, ECDSA P-256 certificates from a throw-away CA" if tls else "none",
                         "worker": "echoes the bytes back (generic handler, nothing decoded)"}
        return out
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        await asyncio.to_thread(procs.stop)
        procs.cleanup(opts.keep_dir)


# -- AutoGen -------------------------------------------------------------------------------------------
def ensure_autogen_venv(log: Log, venv: Path = AUTOGEN_VENV) -> Path:
    """The Python of AutoGen's own virtual environment, made (network install) on first use."""
    return ensure_venv("autogen", AUTOGEN_PACKAGES, "import autogen_core, autogen_ext.runtimes.grpc, psutil", log,
                       venv=venv, prefix="grpcpeers")


async def run_autogen(opts: GrpcRefOptions, log: Log, stop: Callable[[], bool]) -> dict[str, Any]:
    """AutoGen's host and two workers as processes here; its client, a fourth process, measures and reports."""
    python = await asyncio.to_thread(ensure_autogen_venv, log)
    host = PeerProcs("autogen-host")
    workers = PeerProcs("autogen-worker")
    env = _env()
    try:
        host.start([[str(python), str(AUTOGEN_SCRIPT), "host"]], env)
        await asyncio.to_thread(host.wait_logs, "autogen host ready on ", 60)
        address = _ready_values(host, "autogen host ready on ")[0]
        types = ("echo1", "echo2")
        workers.start([[str(python), str(AUTOGEN_SCRIPT), "worker", "--host", address, "--agent-type", t]
                       for t in types], env)
        await asyncio.to_thread(workers.wait_logs, "autogen worker ready: ", 60)
        pids = {"host": host.procs[0][0].pid, **{f"worker{i}": p.pid for i, (p, _, _) in enumerate(workers.procs, 1)}}
        cmd = [str(python), str(AUTOGEN_SCRIPT), "client", "--host", address, "--agent-types", ",".join(types),
               "--pids", ",".join(f"{k}={v}" for k, v in pids.items()), "--latency-n", str(opts.latency_n),
               "--n", str(opts.n), "--windows", ",".join(map(str, opts.windows)), "--budget", str(opts.budget_s),
               "--timeout", str(opts.timeout), "--warmup", str(opts.warmup)]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
        tail: list[str] = []

        async def relay() -> None:  # the client's progress lines, as ours
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                tail.append(line)
                del tail[:-40]
                log(f"grpcpeers: {line}" if line.startswith("autogen:") else f"grpcpeers: autogen client: {line}")

        relay_task = asyncio.create_task(relay())
        try:
            assert proc.stdout is not None
            stdout = await proc.stdout.read()
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await relay_task
        host.check_alive()
        workers.check_alive()
        if proc.returncode != 0:
            raise BenchError(f"autogen client exited with code {proc.returncode}:\n" + "\n".join(tail[-20:]))
        try:
            out: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise BenchError(f"autogen client printed no JSON result: {stdout[-500:]!r}") from exc
        out["config"]["workers"] = 2
        out["config"]["processes"] = "host + 2 workers + client (the client is the submitter)"
        return out
    finally:
        await asyncio.to_thread(workers.stop)
        await asyncio.to_thread(host.stop)
        workers.cleanup(opts.keep_dir)
        host.cleanup(opts.keep_dir)


# -- all of them -----------------------------------------------------------------------------------------
def mtls_cost(raw: dict[str, Any], tls: dict[str, Any]) -> dict[str, Any]:
    """What mutual TLS costs the raw echo: throughput lost per level (%), idle p50 and CPU added."""
    out: dict[str, Any] = {}
    by_level = {r["inflight"]: r for r in raw.get("throughput", [])}
    for r in tls.get("throughput", []):
        base = by_level.get(r["inflight"])
        if base and base["tasks_per_second"]:
            out[f"throughput_loss_pct_{r['inflight']}_inflight"] = round(
                100.0 * (1.0 - r["tasks_per_second"] / base["tasks_per_second"]), 1)
            if base.get("cpu_ms_per_task") and r.get("cpu_ms_per_task"):
                out[f"cpu_ms_per_task_added_{r['inflight']}_inflight"] = round(
                    r["cpu_ms_per_task"] - base["cpu_ms_per_task"], 4)
    if raw.get("best_tasks_per_second"):
        out["best_throughput_loss_pct"] = round(
            100.0 * (1.0 - tls.get("best_tasks_per_second", 0.0) / raw["best_tasks_per_second"]), 1)
    p50 = raw.get("idle_latency", {}).get("round_trip", {}).get("p50_ms")
    p50_tls = tls.get("idle_latency", {}).get("round_trip", {}).get("p50_ms")
    if p50 is not None and p50_tls is not None:
        out["idle_p50_ms_added"] = round(p50_tls - p50, 3)
    return out


def median_of_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One block from several rounds of a reference: per level, the round with the median tasks/s (a real run,
    not an average), idem the idle run with the median p50; every round's figures are kept beside them."""
    def pick(items: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
        return sorted(items, key=key)[(len(items) - 1) // 2]

    out = dict(rounds[0])
    out.pop("shapes", None)  # round 0's runs by shape: the median runs below are in ``throughput``
    out["idle_latency"] = dict(pick([r["idle_latency"] for r in rounds],
                                    lambda b: b["round_trip"].get("p50_ms", float("inf"))))
    out["idle_latency"]["p50_ms_per_round"] = [r["idle_latency"]["round_trip"].get("p50_ms") for r in rounds]
    levels = [t["inflight"] for t in rounds[0]["throughput"]]
    runs = []
    for level in levels:
        at = [t for r in rounds for t in r["throughput"] if t["inflight"] == level]
        run = dict(pick(at, lambda t: t["tasks_per_second"]))
        run["tasks_per_second_per_round"] = [t["tasks_per_second"] for t in at]
        run["cpu_ms_per_task_per_round"] = [t.get("cpu_ms_per_task") for t in at]
        runs.append(run)
    out["throughput"] = runs
    out["best_tasks_per_second"] = max((r["tasks_per_second"] for r in runs), default=0.0)
    out["rounds"] = len(rounds)
    return out


async def run_grpc_references(opts: GrpcRefOptions, log: Log = print,
                              stop: threading.Event | None = None) -> dict[str, Any]:
    """Every reference in ``opts.which``, ``opts.rounds`` times in alternating order (the machine drifts);
    a failing one is reported and the others still run."""
    stopped = (stop or threading.Event()).is_set
    out: dict[str, Any] = {"options": {**opts.__dict__, "windows": list(opts.windows), "which": list(opts.which)}}
    runners: dict[str, Callable[[], Any]] = {
        "raw": lambda: run_raw(opts, log, False, stopped),
        "raw-tls": lambda: run_raw(opts, log, True, stopped),
        "autogen": lambda: run_autogen(opts, log, stopped),
    }
    chosen = [name for name in REFERENCES if name in opts.which]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    seconds = dict.fromkeys(chosen, 0.0)
    for round_no in range(max(1, opts.rounds)):
        for name in chosen if round_no % 2 == 0 else chosen[::-1]:
            if stopped() or "error" in out.get(name, {}):
                continue
            if opts.rounds > 1:
                log(f"grpcpeers: {name}: round {round_no + 1} of {opts.rounds}")
            started = time.monotonic()
            try:
                results[name].append(await runners[name]())
            except (BenchError, OSError, RuntimeError, ValueError, ImportError, TimeoutError,
                    subprocess.SubprocessError) as exc:
                log(f"grpcpeers: {name}: FAILED: {exc}")
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            seconds[name] += time.monotonic() - started
    for name in chosen:
        if name not in out and results[name]:
            out[name] = results[name][0] if len(results[name]) == 1 else median_of_rounds(results[name])
        if name in out:
            out[name]["seconds"] = round(seconds[name], 2)
    raw, tls = out.get("raw"), out.get("raw-tls")
    if raw and tls and "error" not in raw and "error" not in tls:
        out["mtls_cost"] = mtls_cost(raw, tls)
    return out
