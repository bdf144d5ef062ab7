"""A seeded demo mesh on a temporary SQLite file: real nodes, real tasks, every state on screen.

Nothing here is faked: the peers are ``AgentMeshManager`` nodes in this
process, two more run as real ``mesh-tui --no-ui`` processes so one can be
killed -9 (🔴 dead) and one paused with SIGSTOP (🟡 suspect), one leaves
gracefully (⚪ left), and the tasks run through the real router and handlers:
echo (done), sleep (running and queued), fail (failed and dead letter).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh_core.config import MeshConfig, load_config
from mesh_core.errors import MeshError
from mesh_core.manager import AgentMeshManager
from mesh_core.model import NodeStatus, TaskStatus

# Quick failure detection so the demo shows suspect and dead nodes within seconds.
TIMING: dict[str, Any] = {
    "heartbeat_interval_seconds": 0.3,
    "suspect_after_seconds": 1.5,
    "node_timeout_seconds": 6.0,
    "shutdown_grace_seconds": 0.3,
    "max_capacity": 8,  # small queues, so a few tasks show as load
    # Concurrent writes to these types wait in the conflict inbox for a person.
    "memory_sync": {"strategies": {"important_fact": "manual", "preference": "manual"}},
}

PEERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("hub-01", "coordination_hub", {}),
    ("lang-01", "language_expert", {}),
    ("lang-02", "language_expert", {}),
    ("plan-01", "planning_only", {}),
    ("sensor-01", "sensor_connected", {"task_distribution": {"retry_failed_tasks": False}}),
    ("gen-01", "general", {"concurrency": 1}),
    ("gone-01", "general", {}),
)


def config_for(root: Path, name: str, node_type: str = "general", **extra: Any) -> MeshConfig:
    """A node's config on the demo's shared SQLite file."""
    overrides: dict[str, Any] = {"protocol": "sqlite_local", "sqlite_db_path": str(root / "mesh.db"),
                                 "state_dir": str(root / "state"), "node_name": name, "node_type": node_type,
                                 **TIMING}
    overrides.update(extra)
    return load_config(overrides=overrides, use_default_file=False)


@dataclass
class DemoMesh:
    root: Path
    peers: dict[str, AgentMeshManager] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    task_ids: dict[str, list[str]] = field(default_factory=dict)

    def cockpit_config(self, name: str = "cockpit") -> MeshConfig:
        """The config for the node the app runs (it starts and stops it)."""
        return config_for(self.root, name, "general")

    async def start_process(self, name: str, node_type: str) -> None:
        """A real ``mesh-tui --no-ui`` node, to be killed or paused later."""
        env = dict(os.environ, MESH_HEARTBEAT_INTERVAL_SECONDS="0.3")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mesh_tui", "--no-ui", "--db", str(self.root / "mesh.db"), "--state-dir",
             str(self.root / "state"), "--name", name, "--node-type", node_type],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.processes[name] = proc
        await self.wait_for_status(name, NodeStatus.ACTIVE)

    async def wait_for_status(self, name: str, status: NodeStatus, timeout: float = 20.0) -> None:
        watcher = next(iter(self.peers.values()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = await watcher.mesh_view()
            if any(m.info.name == name and m.status is status for m in view["members"]):
                return
            await asyncio.sleep(0.1)
        raise MeshError(f"demo: node {name} did not become {status.value} within {timeout:g} s")

    def kill(self, name: str) -> None:
        """kill -9: no leave, no hand-back; the failure detector turns it dead."""
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(10)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process lives but stops heartbeating; it turns suspect, then dead."""
        self.processes[name].send_signal(signal.SIGSTOP)

    async def close(self) -> None:
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(10)
        for mesh in reversed(list(self.peers.values())):
            with contextlib.suppress(Exception):
                await mesh.stop()


async def start_demo(root: Path, *, processes: bool = True) -> DemoMesh:
    """Start the peers, seed tasks in every state and some memory; returns once the mesh has settled."""
    demo = DemoMesh(root)
    try:
        for name, node_type, extra in PEERS:
            mesh = AgentMeshManager(config_for(root, name, node_type, **extra))
            await mesh.start()
            demo.peers[name] = mesh
        if processes:
            await demo.start_process("crash-01", "sensor_connected")
            await demo.start_process("paused-01", "planning_only")
        await seed_tasks(demo)
        await seed_memory(demo)
        await demo.peers.pop("gone-01").stop()  # leaves gracefully: ⚪ left
        if processes:
            demo.kill("crash-01")
    except BaseException:
        await demo.close()
        raise
    return demo


async def seed_tasks(demo: DemoMesh) -> None:
    hub = demo.peers["hub-01"]
    ids = demo.task_ids
    ctx = {"caller": "demo", "purpose": "screenshots"}
    priorities = ("low", "normal", "high", "critical")
    ids["done"] = [await hub.submit_task("echo", {"text": f"hello {i}", "n": i}, priority=priorities[i % 4],
                                         context=ctx) for i in range(12)]
    ids["running"] = [await hub.submit_task("sleep", {"seconds": 3600}, priority="high",
                                            preferred_node_types=["language_expert"], context=ctx)
                      for _ in range(2)]
    # gen-01 runs one task at a time: the first sleep runs, the rest wait in its queue.
    ids["queued"] = [await hub.submit_task("sleep", {"seconds": 3600}, priority=p, preferred_node_types=["general"],
                                           context=ctx) for p in ("normal", "critical", "low")]
    ids["failed"] = [await hub.submit_task("fail", {"message": "sensor offline"}, max_retries=0,
                                           preferred_node_types=["sensor_connected"], context=ctx)]
    ids["dead"] = [await hub.submit_task("fail", {"message": "planner gave up"}, max_retries=1,
                                         preferred_node_types=["planning_only"], context=ctx),
                   await hub.submit_task("fail", {"message": "no route to tool"}, max_retries=0, context=ctx)]
    for task_id in ids["done"] + ids["failed"] + ids["dead"]:
        with contextlib.suppress(MeshError):
            await hub.wait_task(task_id, timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [(await hub.get_task(t)).status for t in ids["running"] + ids["queued"]]
        if states.count(TaskStatus.RUNNING) >= 3:
            break
        await asyncio.sleep(0.1)


async def seed_memory(demo: DemoMesh) -> None:
    hub, lang = demo.peers["hub-01"], demo.peers["lang-01"]
    await hub.sync_memory_item("fact", {"fact": "the mesh runs on SQLite", "source": "hub"}, key="backend")
    # Two nodes write one key at once: concurrent versions, which the manual strategy keeps for a person.
    plan, lang2 = demo.peers["plan-01"], demo.peers["lang-02"]
    await asyncio.gather(
        hub.sync_memory_item("important_fact", {"owner": "hub-01", "region": "eu", "tags": ["prod"]}, key="cluster"),
        plan.sync_memory_item("important_fact", {"owner": "plan-01", "region": "eu", "tags": ["prod", "gpu"]},
                              key="cluster"))
    await asyncio.gather(
        lang.sync_memory_item("preference", {"language": "en", "tone": "plain"}, key="style"),
        lang2.sync_memory_item("preference", {"language": "en", "emoji": False}, key="style"))
