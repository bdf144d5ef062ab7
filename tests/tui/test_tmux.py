"""The real ``mesh-tui`` binary in a real terminal (tmux): it starts, shows the panes, runs a command, quits as left."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# In CI (.ci/run installs tmux) a missing tmux is a failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None and not os.environ.get("CI"),
                                reason="tmux is not installed (apt-get install tmux)")


def tmux(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10)


def wait(check: Callable[[], bool], timeout: float, what: str, screen: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout} s; screen:\n{screen()}")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"mesh-tui-test-{uuid.uuid4().hex[:8]}"
    command = " ".join(shlex.quote(a) for a in (
        sys.executable, "-m", "mesh_tui", "--db", str(tmp_path / "mesh.db"), "--state-dir", str(tmp_path / "state"),
        "--name", "tmux-node"))
    # COLUMNS/LINES: the tmux server inherits the test's environment, which may carry an 80x24 size.
    env = ("COLUMNS=160 LINES=48 MESH_HEARTBEAT_INTERVAL_SECONDS=0.3 MESH_SUSPECT_AFTER_SECONDS=1 "
           "MESH_NODE_TIMEOUT_SECONDS=2")
    started = tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "48", f"env TERM=xterm-256color {env} "
                   f"{command}; sleep 30")
    assert started.returncode == 0, started.stderr
    try:
        yield name, tmp_path
    finally:
        tmux("kill-session", "-t", name)


def test_the_binary_starts_shows_the_panes_takes_a_command_and_quits_as_left(session: tuple[str, Path]) -> None:
    name, root = session

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", name).stdout

    wait(lambda: all(p in screen() for p in ("This node", "Nodes (1)", "Tasks", "Conflicts", "Events", "tmux-node")),
         20, "the four panes and the node", screen)
    # Typed as in a chat, from a fresh start (no ':' first): the first key opens the command line with itself.
    tmux("send-keys", "-t", name, "-l", "/mesh_status")
    tmux("send-keys", "-t", name, "Enter")
    wait(lambda: "Command output" in screen() and "› /mesh_status" in screen() and "Agent Mesh Status" in screen(),
         10, "the /mesh_status block in the output panel", screen)
    assert "Nodes (1)" not in screen()  # the output is shown over the panes
    tmux("send-keys", "-t", name, "Escape")
    wait(lambda: "Nodes (1)" in screen() and "Command output" not in screen(), 10, "the panes back", screen)
    tmux("send-keys", "-t", name, "q")
    # The app exits and the shell runs `sleep`: the node is gone from the screen.
    wait(lambda: "This node" not in screen(), 15, "the app quitting", screen)
    status = subprocess.run(
        [sys.executable, "-m", "mesh_tui", "status", "--json", "--db", str(root / "mesh.db"), "--state-dir",
         str(root / "state")], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    nodes = {n["name"]: n["status"] for n in json.loads(status.stdout)["nodes"]}
    assert nodes.get("tmux-node") == "left"
