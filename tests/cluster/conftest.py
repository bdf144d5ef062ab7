"""Real ``mesh-tui --no-ui`` processes on a temporary SQLite mesh, killed with -9 and SIGSTOPped."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

HEARTBEAT = 0.5
SUSPECT = 1.0
TIMEOUT = 2.0


class NodeProcess:
    """One node process; its JSON log lines are collected, and commands go to its stdin."""

    def __init__(self, cluster: Cluster, name: str, extra: list[str]) -> None:
        self.cluster = cluster
        self.name = name
        cmd = [sys.executable, "-m", "mesh_tui", *cluster.global_args(), "--name", name, "--log-format", "json",
               "--no-ui", *extra]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, env=cluster.env, cwd=cluster.root)
        self.lines: list[dict[str, Any]] = []
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        started = self.wait_event(lambda e: e.get("event") == "NodeStarted", timeout=20)
        self.node_id: str = started["node_id"]
        self.incarnation: int = started["incarnation"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if "command" in line:
                self.replies.put(line)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw)

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        exited_seen = False
        with self._cond:
            while True:
                for line in self.lines:
                    if match(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or exited_seen:
                    raise AssertionError(f"{self.name}: no matching event within {timeout} s "
                                         f"(exit {self.proc.poll()}); stderr={''.join(self.stderr)[-2000:]!r}")
                if self.proc.poll() is not None:
                    exited_seen = True  # one more look after the reader drains
                    self._cond.wait(min(left, 0.3))
                    continue
                self._cond.wait(min(left, 0.5))

    def command(self, line: str, timeout: float = 10) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no reply to {line!r} within {timeout} s") from None

    def status(self) -> dict[str, Any]:
        reply = self.command("/mesh_status")
        assert reply["ok"], reply
        return reply["data"]

    def view(self) -> dict[str, str]:
        """This node's own judgement of every node: name → status."""
        return {n["name"]: n["status"] for n in self.status()["nodes"]}

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait(10)


class Cluster:
    def __init__(self, root: Path, backend: str = "sqlite", redis_url: str | None = None) -> None:
        self.root = root
        self.backend = backend
        self.db = root / "mesh.db"
        self.state = root / "state"
        self.config = root / "mesh.yaml"
        settings: dict[str, Any] = {
            "heartbeat_interval_seconds": HEARTBEAT, "suspect_after_seconds": SUSPECT,
            "node_timeout_seconds": TIMEOUT, "shutdown_grace_seconds": 1.0,
            "task_distribution": {"retry_backoff_seconds": 0.05},
        }
        if backend == "redis":
            settings.update({"protocol": "redis_distributed", "redis": {"url": redis_url, "cluster": root.name}})
        self.config.write_text(yaml.safe_dump({"agent_mesh": settings}))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "MERNSTA_"))}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.nodes: list[NodeProcess] = []

    def global_args(self) -> list[str]:
        return ["--config", str(self.config), "--db", str(self.db), "--state-dir", str(self.state)]

    def start(self, name: str, *extra: str) -> NodeProcess:
        node = NodeProcess(self, name, list(extra))
        self.nodes.append(node)
        return node

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A one-shot ``mesh-tui`` command against this mesh."""
        return subprocess.run([sys.executable, "-m", "mesh_tui", *self.global_args(), *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env, cwd=self.root)

    def cli_json(self, *args: str, timeout: float = 30) -> Any:
        done = self.cli(*args, "--json", timeout=timeout)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@pytest.fixture(params=["sqlite", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    c = Cluster(tmp_path, request.param, url)
    try:
        yield c
    finally:
        c.close()


def until(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> tuple[Any, float]:
    """Poll ``check`` until truthy; return its value and the seconds it took."""
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        last = check()
        if last:
            return last, time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout} s (last: {last!r})")
