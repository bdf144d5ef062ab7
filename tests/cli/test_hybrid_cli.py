"""hybrid and the grpc flags from the command line: real ``mesh-tui`` processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mesh_testing import free_port


def mesh_tui(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mesh_tui", "--db", str(tmp_path / "m.db"), "--state-dir", str(tmp_path / "s"),
            *args]


def test_a_headless_hybrid_node_says_what_it_chose_and_why_on_its_start_line(tmp_path: Path) -> None:
    redis_port, seed_port = free_port(), free_port()  # nothing listens on either
    proc = subprocess.Popen(mesh_tui(tmp_path, "--no-ui", "--log-format", "json", "--protocol", "hybrid",
                                     "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                                     "--seeds", f"127.0.0.1:{seed_port}"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
    assert started["event"] == "NodeStarted" and started["protocol"] == "sqlite_local"
    assert started["why"] == (f"hybrid chose sqlite_local: redis://127.0.0.1:{redis_port}/0 did not answer "
                              f"(connection refused); seed 127.0.0.1:{seed_port} did not answer (connection refused)")


def test_status_of_a_hybrid_mesh_prints_the_reason_as_one_line(tmp_path: Path) -> None:
    done = subprocess.run(mesh_tui(tmp_path, "status", "--protocol", "hybrid"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  • Protocol: hybrid→sqlite_local" in lines
    assert "  • Backend: hybrid chose sqlite_local: no redis.url or grpc.seeds configured" in lines


def test_a_bad_seed_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(mesh_tui(tmp_path, "status", "--seeds", "10.0.0.5:9901,hub1"), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mesh-tui: config: agent_mesh.grpc.seeds[1] = 'hub1' is not allowed "
        "(allowed: host:port with a port from 1 to 65535, an IPv6 address in brackets)"]
