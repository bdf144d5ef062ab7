"""A throw-away local mesh: N ``mesh-tui --no-ui`` worker processes on SQLite or Redis.

On SQLite the workers share one temporary database file; on Redis they join the
bench's private redis-server under a cluster name of their own (``mesh:{name}:``),
so phases that share the server never see each other's nodes or tasks.
Everything else lives in one temporary folder (state, worker logs). ``stop()``
always terminates (SIGTERM: graceful leave), then kills what is left; ``cleanup()``
removes the folder. Use it as a context manager so both happen on any error.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import psutil
import yaml

from mesh_core.config import MeshConfig, load_config
from mesh_core.manager import AgentMeshManager
from mesh_core.model import NodeRole, NodeStatus

_LIVE: list[Cluster] = []  # clusters not stopped yet, for the exit hook


@atexit.register
def _stop_leftovers() -> None:
    """Last line of defence: no worker outlives the bench process (normal exit or unhandled error)."""
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop(grace=2.0)
            cluster.cleanup()


class BenchError(RuntimeError):
    """The benchmark could not run (a worker died, the mesh never formed, ...)."""


def _clean_env() -> dict[str, str]:
    """The environment for workers: no MESH_*/MERNSTA_* settings leak into the benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "MERNSTA_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: str
    log_file: IO[bytes]
    ps: psutil.Process | None = None
    node_id: str = ""

    def cpu_seconds(self) -> float:
        if self.ps is None:
            return 0.0
        try:
            t = self.ps.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()[-8000:].decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])


BACKENDS = ("sqlite", "redis")


@dataclass
class Cluster:
    """``n`` workers on a fresh SQLite file in a temporary folder, or on a fresh cluster name in Redis."""

    n: int
    capacity: int = 100_000
    log_format: str = "text"
    prefix: str = "w"
    keep_dir: bool = False
    extra_args: tuple[str, ...] = ()
    worker_config: dict[str, Any] | None = None  # written as the workers' --config YAML (agent_mesh: section)
    backend: str = "sqlite"  # "sqlite" or "redis"
    redis_url: str | None = None  # the bench's private redis-server (backend "redis")
    extra_cpu: dict[str, Callable[[], float]] = field(default_factory=dict)  # e.g. the redis-server's CPU seconds
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r} (allowed: {', '.join(BACKENDS)})")
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("the redis backend needs the bench's redis-server url")
        self.dir = tempfile.mkdtemp(prefix="mesh-bench-")
        self.db = os.path.join(self.dir, "mesh.db")
        self.redis_cluster = f"bench-{self.prefix}-{uuid.uuid4().hex[:8]}"
        self.state = os.path.join(self.dir, "state")
        self.client_state = os.path.join(self.dir, "client-state")

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    def start(self) -> None:
        _LIVE.append(self)
        env = _clean_env()
        extra = list(self.extra_args)
        config = dict(self.worker_config or {})
        if self.backend == "redis":
            assert self.redis_url is not None
            config["redis"] = {**config.get("redis", {}), "cluster": self.redis_cluster}
            extra += ["--protocol", "redis_distributed", "--redis-url", self.redis_url]
        else:
            extra += ["--db", self.db]
        if config:
            path = os.path.join(self.dir, "worker-config.yaml")
            with open(path, "w") as f:
                yaml.safe_dump({"agent_mesh": config}, f)
            extra += ["--config", path]
        for i in range(1, self.n + 1):
            name = f"{self.prefix}{i}"
            log_path = os.path.join(self.dir, f"{name}.log")
            log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
            cmd = [sys.executable, "-m", "mesh_tui", "--no-ui", "--state-dir", self.state,
                   "--name", name, "--capacity", str(self.capacity), "--log-format", self.log_format,
                   *extra]
            # Own session: a Ctrl-C in the terminal reaches only the bench, which then stops the workers.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    cwd=self.dir, env=env, start_new_session=True)
            worker = Worker(name, proc, log_path, log_file)
            with contextlib.suppress(psutil.Error):
                worker.ps = psutil.Process(proc.pid)
            self.workers.append(worker)

    def check_alive(self) -> None:
        for w in self.workers:
            code = w.proc.poll()
            if code is not None:
                raise BenchError(f"worker {w.name} exited with code {code}; last log lines:\n{w.log_tail()}")

    def pause(self) -> None:
        """SIGSTOP every worker (to queue up work they then catch up on)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    def stop(self, grace: float = 6.0) -> None:
        """SIGTERM every worker (graceful leave), wait up to ``grace`` s, then SIGKILL the rest."""
        self.resume()  # a paused worker would not act on SIGTERM
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=5)
        for w in self.workers:
            with contextlib.suppress(OSError):
                w.log_file.close()
        if self in _LIVE:
            _LIVE.remove(self)

    def cleanup(self) -> None:
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the client side -------------------------------------------------------------
    def client_config(self, max_capacity: int | None = None, overrides: dict[str, Any] | None = None) -> MeshConfig:
        """The bench client's config; ``overrides`` are dotted keys (``task_distribution.load_balancing_algorithm``)."""
        base: dict[str, Any] = {"state_dir": self.client_state, "max_capacity": max_capacity or self.capacity}
        if self.backend == "redis":
            base.update({"protocol": "redis_distributed", "redis.url": self.redis_url,
                         "redis.cluster": self.redis_cluster})
        else:
            base["sqlite_db_path"] = self.db
        return load_config(overrides={**base, **(overrides or {})}, env={}, use_default_file=False)

    @contextlib.asynccontextmanager
    async def client(self, max_capacity: int | None = None, overrides: dict[str, Any] | None = None) -> Any:
        """The in-process client."""
        mesh = AgentMeshManager(self.client_config(max_capacity, overrides), role=NodeRole.CLIENT)
        await mesh.start()
        try:
            yield mesh
        finally:
            await mesh.stop()

    async def wait_active(self, mesh: AgentMeshManager, timeout: float = 30.0) -> float:
        """Poll the mesh until every worker is active; returns the seconds it took."""
        names = {w.name for w in self.workers}
        started = time.monotonic()
        while True:
            self.check_alive()
            view = await mesh.mesh_view()
            active = {m.info.name: m.info.node_id for m in view["members"]
                      if m.status is NodeStatus.ACTIVE and m.info.role is NodeRole.WORKER and not m.info.left}
            if names <= set(active):
                for w in self.workers:
                    w.node_id = active[w.name]
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise BenchError(f"workers not active after {timeout:g} s: have {sorted(active)}, want "
                                 f"{sorted(names)}; last log lines of {self.workers[0].name}:\n"
                                 f"{self.workers[0].log_tail()}")
            await asyncio.sleep(0.1)

    def cpu_seconds(self) -> dict[str, float]:
        data = {w.name: w.cpu_seconds() for w in self.workers}
        data.update({name: fn() for name, fn in self.extra_cpu.items()})
        return data

    def task_times(self, task_ids: Sequence[str]) -> list[tuple[str, float | None, float | None, str | None]]:
        """(task id, started_at, finished_at, node name) as the engine stored them, read after the run."""
        if self.backend == "sqlite":
            rows = _read_sqlite(self.db, "SELECT task_id, started_at, finished_at, node_name FROM tasks")
            wanted = set(task_ids)
            return [(r[0], r[1], r[2], r[3]) for r in rows if r[0] in wanted]
        import redis

        client = redis.Redis.from_url(self.redis_url or "", socket_timeout=30)
        prefix = f"mesh:{{{self.redis_cluster}}}:t:"
        out: list[tuple[str, float | None, float | None, str | None]] = []
        try:
            ids = list(task_ids)
            for start in range(0, len(ids), 2000):
                chunk = ids[start:start + 2000]
                pipe = client.pipeline(transaction=False)
                for task_id in chunk:
                    pipe.hmget(prefix + task_id, "started", "finished", "node_name")
                for task_id, (started, finished, node) in zip(chunk, pipe.execute(), strict=True):
                    out.append((task_id, float(started) if started else None, float(finished) if finished else None,
                                node.decode() if node else None))
        finally:
            client.close()
        return out


def _read_sqlite(db: str, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class CpuMeter:
    """CPU seconds used by the bench process and each worker over a section of code."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.me = psutil.Process()

    def _now(self) -> dict[str, float]:
        t = self.me.cpu_times()
        data = {"bench": t.user + t.system}
        data.update(self.cluster.cpu_seconds())
        return data

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        before, wall = self._now(), time.perf_counter()
        try:
            yield
        finally:
            wall = time.perf_counter() - wall
            after = self._now()
            used = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
            into["cpu_seconds"] = used
            into["cpu_utilisation"] = {k: round(v / wall, 3) if wall > 0 else 0.0 for k, v in used.items()}
            into["wall_seconds"] = round(wall, 3)


class LogTail:
    """Incremental reader of a worker's JSON-lines log: first ``at`` of each MemoryChanged key."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""
        self.seen: dict[str, float] = {}
        self.lines = 0
        self.bad_lines = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        self._offset += len(data)
        data = self._rest + data
        *complete, self._rest = data.split(b"\n")
        for raw in complete:
            self.lines += 1
            if b"MemoryChanged" not in raw:
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                self.bad_lines += 1
                continue
            if event.get("event") == "MemoryChanged" and isinstance(event.get("key"), str):
                self.seen.setdefault(event["key"], float(event["at"]))
