"""A throw-away mesh: one SQLite file (or one cluster name on a Redis server) and the nodes on it.

Nodes come two ways, both reading the same config file (``cluster.config``):
``start()``/``spawn()`` run real ``mesh-tui --no-ui`` processes (kill -9,
SIGSTOP, restart by name, JSON log lines, stdin commands), and ``node()``/
``client()`` start in-process ``AgentMeshManager``s in the caller's event loop
(``crash()`` stops one the way kill -9 would). ``cli()`` runs one-shot
``mesh-tui`` commands against the mesh. ``close()`` (async) stops everything;
``stop()`` stops the processes from sync code.
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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mesh_core.config import MeshConfig, load_config
from mesh_core.manager import AgentMeshManager
from mesh_core.model import NodeRole, NodeStatus
from mesh_testing.process import NodeProcess, clean_env
from mesh_testing.redis_server import free_port

# Every parametrised suite runs on each medium; MESH_TEST_GRPC=0 leaves grpc_mesh out (a quicker local run).
# mesh_testing.Cluster accepts it either way.
BACKENDS = ("sqlite", "redis", *(() if os.environ.get("MESH_TEST_GRPC", "1") == "0" else ("grpc",)))
KNOWN_BACKENDS = ("sqlite", "redis", "grpc")

_LIVE: list[Cluster] = []  # clusters with node processes not stopped yet, for the exit hook


@atexit.register
def _stop_leftovers() -> None:
    """Last line of defence: no node process outlives the harness (normal exit or unhandled error)."""
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop()


class ClusterError(RuntimeError):
    """The cluster could not do what was asked: a node process exited, nodes never became active."""


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole at once: a node starting meanwhile reads the old file or the new one, never half.
    Private (0600), as a config holding an api_key or a password must be (nodes warn of one others can read)."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(text)
    fresh.chmod(0o600)
    os.replace(fresh, path)


async def crash(mesh: AgentMeshManager) -> None:
    """Stop an in-process node the way kill -9 would: no leave, no hand-back, leases left to lapse."""
    await mesh.stop(graceful=False)


class Cluster:
    """One mesh in the folder ``root`` (a fresh temporary one when None), on ``backend`` "sqlite" or "redis".

    ``settings`` is the ``agent_mesh:`` section every node reads (timings,
    ``concurrency``, ...); the cluster adds where the mesh lives: the SQLite file
    ``root/mesh.db``, or the Redis server ``redis_url`` (or the Sentinel set or Redis Cluster that
    ``settings["redis"]`` names with ``sentinels`` or ``cluster_nodes``) under the cluster name
    ``root.name`` (keys ``mesh:{name}:...``, so meshes sharing a server never
    meet), and the state folder ``root/state``. Node process output goes to
    ``root/logs/``. ``stop_grace``: seconds a node process gets to leave
    (SIGTERM) when the cluster stops, before kill -9; 0 kills at once. A folder
    the cluster made is removed when it stops, unless ``keep``.
    """

    def __init__(self, root: Path | None = None, backend: str = "sqlite", redis_url: str | None = None, *,
                 settings: Mapping[str, Any] | None = None, stop_grace: float = 0.0, keep: bool = False) -> None:
        if backend not in KNOWN_BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (allowed: {', '.join(KNOWN_BACKENDS)})")
        ha = {k: v for k, v in dict((settings or {}).get("redis") or {}).items() if k in ("sentinels", "cluster_nodes")}
        if backend == "redis" and not redis_url and not any(ha.values()):
            raise ValueError("the redis backend needs a redis-server url (or redis.sentinels or redis.cluster_nodes)")
        self.made_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="mesh-cluster-")) if root is None else Path(root)
        self.backend = backend
        self.redis_url = redis_url
        self.stop_grace = stop_grace
        self.keep = keep
        self.name = self.root.name
        self.db = self.root / "mesh.db"
        self.state = self.root / "state"
        self.logs = self.root / "logs"
        self.config = self.root / "mesh.yaml"
        self.env = clean_env()
        self.processes: list[NodeProcess] = []
        self.nodes: list[AgentMeshManager] = []
        self._starts: dict[str, int] = {}
        # grpc: where the nodes listen (every one is a seed for the next), and each process's fixed port
        self.seeds: list[str] = []
        self.ports: dict[str, int] = {}
        self.settings: dict[str, Any] = dict(settings or {})
        self._variants: dict[Path, dict[str, Any]] = {}  # other config files of this mesh: their overrides
        self.write_config(self.settings)

    def write_config(self, settings: Mapping[str, Any]) -> None:
        """(Re)write the config file every node reads: ``settings`` plus where this mesh lives."""
        self.settings = dict(settings)
        section: dict[str, Any] = {**settings, "state_dir": str(self.state)}
        if self.backend == "grpc":
            section["protocol"] = "grpc_mesh"
            section["grpc"] = {"host": "127.0.0.1", "port": 0, **section.get("grpc", {}), "seeds": list(self.seeds)}
        elif self.backend == "redis":
            section["protocol"] = "redis_distributed"
            section["redis"] = {**section.get("redis", {}), "cluster": self.name}
            if self.redis_url:
                section["redis"]["url"] = self.redis_url
        else:
            section.update({"protocol": "sqlite_local", "sqlite_db_path": str(self.db)})
        _replace(self.config, yaml.safe_dump({"agent_mesh": section}))
        for path, overrides in self._variants.items():
            _replace(path, yaml.safe_dump({"agent_mesh": {**section, **overrides}}))

    def variant(self, filename: str, **overrides: Any) -> Path:
        """Another config file for this mesh (``root/filename``): the cluster's, with ``overrides`` replacing keys
        of its ``agent_mesh:`` section. It is rewritten with the cluster's, so on grpc it names every node started
        since as a seed too (a copy made once would leave later nodes, started with it, alone in a mesh of one)."""
        path = self.root / filename
        self._variants[path] = dict(overrides)
        self.write_config(self.settings)
        return path

    # -- node processes ----------------------------------------------------------------------
    def global_args(self) -> list[str]:
        """The ``mesh-tui`` arguments that put a command on this mesh."""
        return ["--config", str(self.config)]

    def spawn(self, name: str, *args: str, prefix: Sequence[str] = (), host: str | None = None) -> NodeProcess:
        """Launch ``mesh-tui --no-ui --name NAME`` (JSON log lines unless ``args`` say otherwise); do not wait.

        ``prefix``: a command that runs the node (``ip netns exec NS``, ``faketime +300s``). ``host`` (grpc):
        the address its server binds and the others dial (a network namespace's own), instead of 127.0.0.1.
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        self._starts[name] = n = self._starts.get(name, 0) + 1
        log_path = self.logs / (f"{name}.log" if n == 1 else f"{name}.{n}.log")
        cmd = [*prefix, sys.executable, "-m", "mesh_tui", *self.global_args(), "--name", name, "--log-format", "json",
               "--no-ui", *args]
        if host is not None and self.backend == "grpc":
            cmd += ["--grpc-host", host]
        if self not in _LIVE:
            _LIVE.append(self)
        env = self.env
        if self.backend == "grpc":
            if name not in self.ports:
                self.ports[name] = free_port()
                self.add_seed(f"{host or '127.0.0.1'}:{self.ports[name]}")
            env = {**env, "MESH_GRPC_PORT": str(self.ports[name])}
        node = NodeProcess(name, cmd, cwd=self.root, env=env, log_path=log_path)
        self.processes.append(node)
        return node

    def start(self, name: str, *args: str, prefix: Sequence[str] = (), host: str | None = None) -> NodeProcess:
        """Launch a node process and wait until it has started (its ``NodeStarted`` line)."""
        return self.spawn(name, *args, prefix=prefix, host=host).wait_started()

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A one-shot ``mesh-tui`` command against this mesh."""
        return subprocess.run([sys.executable, "-m", "mesh_tui", *self.global_args(), *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env, cwd=self.root)

    def cli_json(self, *args: str, timeout: float = 30) -> Any:
        """A one-shot ``mesh-tui ... --json`` command that must succeed; its parsed output."""
        done = self.cli(*args, "--json", timeout=timeout)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def check_alive(self) -> None:
        """Raise ``ClusterError`` (with its last log lines) if a node process has exited."""
        for node in self.processes:
            if not node.alive:
                raise ClusterError(f"node {node.name} exited with code {node.proc.returncode}; "
                                   f"last log lines:\n{node.log_tail()}")

    def pause(self) -> None:
        """SIGSTOP every node process (work queues up; they catch up on ``resume()``)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: int) -> None:
        for node in self.processes:
            node.kill(sig)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds each node process has used so far, by name."""
        return {node.name: node.cpu_seconds() for node in self.processes}

    # -- in-process nodes --------------------------------------------------------------------
    def node_config(self, name: str | None = None, node_type: str | None = None, **extra: Any) -> MeshConfig:
        """The config of an in-process node: the cluster's file, then ``extra`` (dotted keys allowed)."""
        overrides = {"node_name": name, "node_type": node_type, **extra}
        return load_config(self.config, overrides=overrides, env={})

    async def node(self, name: str | None = None, node_type: str | None = None, *,
                   role: NodeRole = NodeRole.WORKER, **extra: Any) -> AgentMeshManager:
        """A started in-process node; stopped by ``close()``."""
        mesh = AgentMeshManager(self.node_config(name, node_type, **extra), role=role)
        await mesh.start()
        self.nodes.append(mesh)
        if self.backend == "grpc":  # a client is a member too: a later node may join through it
            self.add_seed(mesh.backend_info().get("address", ""))
        return mesh

    def add_seed(self, address: str) -> None:
        """grpc: one more address later nodes (and one-shot commands) may join through."""
        if address and address not in self.seeds:
            self.seeds.append(address)
            self.write_config(self.settings)

    async def client(self, **extra: Any) -> AgentMeshManager:
        """A started in-process client (submits and reads, runs no tasks)."""
        return await self.node(role=NodeRole.CLIENT, **extra)

    async def crash(self, mesh: AgentMeshManager) -> None:
        """Stop ``mesh`` as kill -9 would: no leave, no hand-back, leases left to lapse."""
        await crash(mesh)
        if mesh in self.nodes:
            self.nodes.remove(mesh)

    async def wait_active(self, watcher: AgentMeshManager, names: Iterable[str] | None = None,
                          timeout: float = 30.0) -> float:
        """Poll ``watcher``'s view until the named worker nodes (default: every node process) are active.

        Learns the node processes' ids on the way; returns the seconds it took.
        """
        want = set(names) if names is not None else {node.name for node in self.processes}
        started = time.monotonic()
        while True:
            self.check_alive()
            view = await watcher.mesh_view()
            active = {m.info.name: m.info.node_id for m in view["members"]
                      if m.status is NodeStatus.ACTIVE and m.info.role is NodeRole.WORKER and not m.info.left}
            if want <= set(active):
                for node in self.processes:
                    node.node_id = active.get(node.name, node.node_id)
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                tail = self.processes[0].log_tail() if self.processes else ""
                raise ClusterError(f"nodes not active after {timeout:g} s: have {sorted(active)}, want "
                                   f"{sorted(want)}; last log lines:\n{tail}")
            await asyncio.sleep(0.1)

    # -- the end -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every node process (SIGTERM and ``stop_grace`` s to leave, then kill -9); tidy the folder.

        In-process nodes need ``await close()``.
        """
        try:
            if self.stop_grace > 0:
                for node in self.processes:
                    node.kill(signal.SIGCONT)  # a frozen node would not act on SIGTERM
                    node.kill(signal.SIGTERM)
                deadline = time.monotonic() + self.stop_grace
                for node in self.processes:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        node.proc.wait(max(0.05, deadline - time.monotonic()))
            for node in self.processes:
                node.close()
        finally:
            if self in _LIVE:
                _LIVE.remove(self)
            if self.made_root and not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    async def close(self) -> None:
        """Stop the in-process nodes (newest first), then ``stop()`` the processes."""
        for mesh in reversed(self.nodes):
            with contextlib.suppress(Exception):
                await mesh.stop()
        self.nodes.clear()
        self.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

