"""Bad input at the command line: one clear line, the right exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "MERNSTA_"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "mesh_tui", "--db", str(tmp_path / "m.db"),
                           "--state-dir", str(tmp_path / "s"), *args],
                          capture_output=True, text=True, timeout=timeout, env=base, cwd=tmp_path)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_invalid_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent_mesh:\n  protocol: [unclosed\n")
    done = run(tmp_path, "--config", str(bad), "status")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "bad.yaml" in line and "line" in line


def test_unknown_protocol_flag(tmp_path: Path) -> None:
    done = run(tmp_path, "--protocol", "carrier_pigeon", "status")
    assert done.returncode == 2
    assert "carrier_pigeon" in one_line_error(done)


@pytest.mark.parametrize("var", ["MESH_PROTOCOL", "MERNSTA_MESH_PROTOCOL"])
def test_unknown_protocol_env(tmp_path: Path, var: str) -> None:
    done = run(tmp_path, "status", env={var: "carrier_pigeon"})
    assert done.returncode == 2
    line = one_line_error(done)
    assert "agent_mesh.protocol" in line and "carrier_pigeon" in line and "sqlite_local" in line


def test_negative_timeout_in_config(tmp_path: Path) -> None:
    cfg = tmp_path / "neg.yaml"
    cfg.write_text("agent_mesh:\n  node_timeout_seconds: -5\n")
    done = run(tmp_path, "--config", str(cfg), "--no-ui")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "agent_mesh.node_timeout_seconds" in line and "-5" in line and "above 0" in line


def test_unknown_key_is_a_warning(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("agent_mesh:\n  heartbeat_intervall_seconds: 1\n")
    done = run(tmp_path, "--config", str(cfg), "status", "--json")
    assert done.returncode == 0, done.stderr
    assert "unknown config key agent_mesh.heartbeat_intervall_seconds" in done.stderr


def test_unknown_task_type_exits_3(tmp_path: Path) -> None:
    done = run(tmp_path, "submit", "no_such_task", "--wait")
    assert done.returncode == 3
    assert "no_such_task" in one_line_error(done)


def test_malformed_payload_json_exits_2(tmp_path: Path) -> None:
    done = run(tmp_path, "submit", "echo", "--payload", "{not json")
    assert done.returncode == 2
    assert "--payload is not valid JSON" in one_line_error(done)


def test_malformed_memory_value_exits_2(tmp_path: Path) -> None:
    done = run(tmp_path, "remember", "k", "{oops")
    assert done.returncode == 2
    assert "VALUE_JSON is not valid JSON" in one_line_error(done)


def test_recall_of_missing_key_exits_1(tmp_path: Path) -> None:
    done = run(tmp_path, "recall", "nothing-here")
    assert done.returncode == 1
    assert "nothing-here" in one_line_error(done)


def test_name_already_running_is_refused(tmp_path: Path) -> None:
    first = subprocess.Popen([sys.executable, "-m", "mesh_tui", "--no-ui", "--db", str(tmp_path / "m.db"),
                              "--state-dir", str(tmp_path / "s"), "--name", "solo"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        assert "NodeStarted" in first.stdout.readline()
        done = run(tmp_path, "--no-ui", "--name", "solo")
        assert done.returncode == 2
        assert "already running" in one_line_error(done)
    finally:
        first.terminate()
        assert first.wait(15) == 0


def test_not_a_database_file(tmp_path: Path) -> None:
    (tmp_path / "m.db").write_bytes(b"this is not sqlite" * 100)
    done = run(tmp_path, "status")
    assert done.returncode == 1
    assert "m.db" in one_line_error(done)


# -- issue #11 defect 6: each of these printed a traceback (or exited 1) before -----------------------------

def test_config_file_of_random_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "noise.yaml"
    bad.write_bytes(bytes(range(128, 256)) * 4)
    done = run(tmp_path, "--config", str(bad), "status")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "noise.yaml" in line and "UTF-8" in line


@pytest.mark.parametrize(("url", "why"), [
    ("htp:/x", "redis://"),
    ("redis://localhost:99999/0", "port"),
    ("redis://localhost:six/0", "port"),
    ("unix://", "socket path"),
])
@pytest.mark.parametrize("protocol", ["redis_distributed", "sqlite_local"])
def test_bad_redis_url(tmp_path: Path, url: str, why: str, protocol: str) -> None:
    done = run(tmp_path, "--protocol", protocol, "--redis-url", url, "status")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "agent_mesh.redis.url" in line and why in line


def test_bad_redis_url_keeps_its_password_out_of_the_message(tmp_path: Path) -> None:
    done = run(tmp_path, "--redis-url", "redis://u:hunter2@host:70000/0", "status")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "hunter2" not in line and "***" in line


def test_redis_url_of_the_wrong_type_in_a_file(tmp_path: Path) -> None:
    cfg = tmp_path / "url.yaml"
    cfg.write_text("agent_mesh:\n  protocol: redis_distributed\n  redis:\n    url: 5\n")
    done = run(tmp_path, "--config", str(cfg), "status")
    assert done.returncode == 2
    assert "agent_mesh.redis.url" in one_line_error(done)


@pytest.mark.parametrize(("args", "env", "needle"), [
    (("--config", "missing.yaml", "status"), {}, "missing.yaml"),
    (("--config", ".", "status"), {}, "cannot read"),
    (("--capacity", "lots", "status"), {}, "--capacity"),
    (("status",), {"MESH_MAX_CAPACITY": "lots"}, "agent_mesh.max_capacity"),
    (("status",), {"MESH_HEARTBEAT_INTERVAL_SECONDS": "nan"}, "finite"),
    (("status",), {"MESH_LOAD_BALANCING_ALGORITHM": "psychic"}, "psychic"),
    (("status",), {"MESH_CONFLICT_STRATEGY": "coin_flip"}, "coin_flip"),
    (("submit", "echo", "--priority", "urgentest"), {}, "urgentest"),
    (("submit", "echo", "--timeout", "-1"), {}, "--timeout"),
    (("submit", "echo", "--timeout", "soon"), {}, "soon"),
    (("submit", "echo", "--payload", "[1,"), {}, "--payload"),
    (("tasks", "--limit", "-4"), {}, "--limit"),
    (("rollback", "k", "latest"), {}, "version"),
    (("--state-dir", "/dev/null/s", "--no-ui"), {}, "state folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], env: dict[str, str],
                                          needle: str) -> None:
    done = run(tmp_path, *args, env=env)
    assert done.returncode == 2, done.stderr
    assert needle in one_line_error(done)


@pytest.mark.parametrize("text", [
    "agent_mesh:\n  security: {allowlist: {a: 1}}\n",
    "agent_mesh:\n  node_configs: [1, 2]\n",
    "agent_mesh: [1]\n",
    "- just a list\n",
    "agent_mesh:\n  grpc: {seeds: [[1]]}\n",
    "agent_mesh:\n  memory_sync: {strategies: {fact: [1]}}\n",
    "agent_mesh: !!python/object:os.system {}\n",
])
def test_bad_config_shapes(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "shape.yaml"
    cfg.write_text(text)
    done = run(tmp_path, "--config", str(cfg), "status")
    assert done.returncode == 2
    assert "config:" in one_line_error(done)
