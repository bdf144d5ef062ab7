"""The metrics endpoint's edges and its config; the Grafana dashboard names only metrics a node serves."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh_core import AgentMeshManager
from mesh_core.config import MetricsConfig, load_config
from mesh_core.errors import ConfigError
from mesh_core.metrics import NodeMetrics, Readings
from mesh_core.metrics_server import MAX_CONNECTIONS, MAX_REQUEST_BYTES
from mesh_core.model import Task

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_metrics_config_is_off_by_default_and_checked() -> None:
    assert load_config(env={}, use_default_file=False).metrics == MetricsConfig(None, "127.0.0.1")
    env = {"MESH_METRICS_PORT": "9464", "MESH_METRICS_HOST": "0.0.0.0"}
    assert load_config(env=env, use_default_file=False).metrics == MetricsConfig(9464, "0.0.0.0")
    assert load_config(env=env, overrides={"metrics.port": 9465}, use_default_file=False).metrics.port == 9465
    with pytest.raises(ConfigError, match=r"agent_mesh\.metrics\.port = 70000 is not allowed"):
        load_config(env={}, overrides={"metrics.port": 70000}, use_default_file=False)
    with pytest.raises(ConfigError, match=r"agent_mesh\.metrics\.host = 'a b' is not allowed"):
        load_config(env={}, overrides={"metrics.host": "a b"}, use_default_file=False)


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)  # the server closes after one answer
    except ConnectionResetError:
        return b""  # closed unanswered, with our request unread
    finally:
        writer.close()


async def test_the_endpoint_answers_one_request_per_connection_and_refuses_the_rest(tmp_path: Path) -> None:
    config = load_config(env={}, use_default_file=False, overrides={
        "state_dir": str(tmp_path / "state"), "sqlite_db_path": str(tmp_path / "mesh.db"), "metrics.port": 0})
    async with AgentMeshManager(config) as mesh:
        assert mesh.metrics_address is not None
        host, port = mesh.metrics_address
        assert host == "127.0.0.1" and port > 0
        ok = await _exchange(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = ok.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
        assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) == len(body)  # type: ignore[union-attr]
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"mesh_node_info", "mesh_tasks", "mesh_nodes", "mesh_problems", "mesh_backend_up"} <= names
        assert (await _exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _exchange(port, b"GET /other HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _exchange(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert await _exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * MAX_REQUEST_BYTES + b"\r\n\r\n") == b""
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        await asyncio.sleep(0.1)
        assert await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n") == b""  # over the cap: closed unanswered
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.1)
        assert (await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
    with pytest.raises(OSError):  # stopped with the node
        await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")


async def test_the_grafana_dashboard_names_only_metrics_a_node_serves(tmp_path: Path) -> None:
    dashboard = json.loads((REPO_ROOT / "docs" / "grafana-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["panels"] and dashboard["schemaVersion"] >= 30
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bmesh_[a-z_]+", target["expr"])}
    config = load_config(env={}, use_default_file=False, overrides={
        "state_dir": str(tmp_path / "state"), "sqlite_db_path": str(tmp_path / "mesh.db"), "metrics.port": 0})
    async with AgentMeshManager(config) as mesh:
        await mesh.wait_for(await mesh.submit_task("echo", 1), 10)
        mesh.counters["example_problem"] += 1
        _, port = mesh.metrics_address or ("", 0)
        body = (await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")).partition(b"\r\n\r\n")[2].decode()
    served = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    assert used and used <= served, used - served


async def test_a_task_type_without_a_handler_here_is_labelled_other(tmp_path: Path) -> None:
    config = load_config(env={}, use_default_file=False, overrides={
        "state_dir": str(tmp_path / "state"), "sqlite_db_path": str(tmp_path / "mesh.db")})
    async with AgentMeshManager(config) as mesh:
        metrics = NodeMetrics(mesh)
        for task_type in ("echo", "no-such-type-1", "no-such-type-2"):
            metrics.observe(Task(task_id="t", task_type=task_type, submitted_at=10.0, started_at=10.5), "failed", 0.2)
        text = metrics.render(Readings({"failed": 3}, None)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("mesh_tasks_total", (("outcome", "failed"), ("task_type", "echo")))] == 1
    assert samples[("mesh_tasks_total", (("outcome", "failed"), ("task_type", "other")))] == 2
    assert samples[("mesh_task_queue_wait_seconds_sum", (("task_type", "other"),))] == 1.0
    assert samples[("mesh_tasks_in_mesh", (("status", "failed"),))] == 3
    assert not [k for k in samples if "no-such-type" in str(k)]
