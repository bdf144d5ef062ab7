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


def test_ctrl_z_suspends_to_the_shell_between_two_writes_and_fg_brings_the_cockpit_back(tmp_path: Path) -> None:
    """In a shell with job control, as a user runs it: Ctrl-Z leaves the screen to the shell and stops the process
    (through the headless node's stop at rest, tests/cluster/test_ctrl_z.py: not holding the shared file's write
    lock), ``fg`` continues it with its panes back."""
    import psutil

    from mesh_core.backends.sqlite.locks import write_lock_holder

    name = f"mesh-tui-test-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "mesh.db"
    command = " ".join(shlex.quote(a) for a in (
        sys.executable, "-m", "mesh_tui", "--db", str(db), "--state-dir", str(tmp_path / "state"), "--name", "z-node"))
    started = tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "48",
                   "env COLUMNS=160 LINES=48 TERM=xterm-256color PS1='shell$ ' bash --norc --noprofile -i")
    assert started.returncode == 0, started.stderr

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", name).stdout

    def node() -> psutil.Process | None:
        for p in psutil.process_iter(["cmdline"]):
            if "z-node" in (p.info["cmdline"] or []) and "mesh_tui" in (p.info["cmdline"] or []):
                return p
        return None

    try:
        wait(lambda: "shell$" in screen(), 10, "the shell prompt", screen)
        tmux("send-keys", "-t", name, "-l", command)
        tmux("send-keys", "-t", name, "Enter")
        wait(lambda: all(p in screen() for p in ("This node", "Nodes (1)", "z-node")), 20, "the cockpit", screen)
        proc = node()
        assert proc is not None
        for _ in range(3):
            tmux("send-keys", "-t", name, "C-z")
            wait(lambda: proc.status() == psutil.STATUS_STOPPED, 10, "the process stopped", screen)
            wait(lambda: "Stopped" in screen() and "This node" not in screen(), 10, "the shell's job notice", screen)
            holder = write_lock_holder(str(db))
            assert holder is None or holder.pid != proc.pid, "stopped holding the shared file's write lock"
            tmux("send-keys", "-t", name, "-l", "fg")
            tmux("send-keys", "-t", name, "Enter")
            wait(lambda: proc.status() != psutil.STATUS_STOPPED, 10, "the process continued", screen)
            wait(lambda: all(p in screen() for p in ("This node", "Nodes (1)")), 10, "the cockpit back", screen)
        tmux("send-keys", "-t", name, "q")
        wait(lambda: not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, 15, "the app quitting", screen)
    finally:
        tmux("kill-session", "-t", name)
