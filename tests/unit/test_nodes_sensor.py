"""The sensor node: rule parsing and judging, source readings, the ring buffer, and alerts end to end
against a stand-in manager (events and shared-memory writes recorded)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from mesh_core.errors import ConfigError
from mesh_core.handlers import TaskContext
from mesh_core.model import Task
from mesh_core.nodes.sensor_connected import (
    AlertCleared,
    AlertRaised,
    Rule,
    RuleState,
    SensorNode,
    judge,
    parse_reading,
    parse_rule,
    parse_source,
    tail_file,
)


def test_rule_text_is_parsed() -> None:
    rule = parse_rule("cpu_percent > 90 for 10s")
    assert (rule.metric, rule.op, rule.threshold, rule.for_seconds) == ("cpu_percent", ">", 90.0, 10.0)
    assert parse_rule("room.temp <= -5.5 for 2m").for_seconds == 120.0
    assert parse_rule("load_1 >= 4").for_seconds == 0.0
    named = parse_rule({"name": "hot", "metric": "room.temp", "op": ">", "threshold": 30, "severity": "critical"})
    assert (named.name, named.severity) == ("hot", "critical")
    for bad in ("cpu is high", "cpu_percent >> 3", {"metric": "x"}, {"metric": "x", "threshold": 1, "op": "~"}, 7):
        with pytest.raises(ConfigError):
            parse_rule(bad)


def test_judge_raises_after_the_window_and_clears_on_recovery() -> None:
    rule = Rule("r", "cpu", ">", 90.0, 10.0)
    state = RuleState()
    assert judge(rule, state, 95, now=0.0) is None      # holding, window not over
    assert judge(rule, state, 96, now=9.9) is None
    assert judge(rule, state, None, now=10.0) is None   # a missing reading changes nothing
    assert judge(rule, state, 97, now=10.0) == "raise"
    assert judge(rule, state, 99, now=20.0) is None     # raised once
    assert judge(rule, state, 50, now=21.0) == "clear"
    assert judge(rule, state, 50, now=22.0) is None
    assert judge(rule, state, 95, now=23.0) is None     # the window starts again
    assert judge(rule, state, 20, now=24.0) is None     # dipped before the window: never raised
    assert judge(Rule("r", "x", "<", 1, 0), RuleState(), 0, now=0) == "raise"


def test_readings() -> None:
    assert parse_reading("42") == 42.0
    assert parse_reading("temp=21.5C") == 21.5
    assert parse_reading('{"temp": 3, "fan": {"rpm": 1200}, "label": "x"}') == {"temp": 3.0, "fan.rpm": 1200.0}
    assert parse_reading("t=1 h=55", re.compile(r"h=(\d+)")) == 55.0
    assert parse_reading("no number here") is None


def test_file_tail_follows_appends_and_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "reading.log"
    source = parse_source({"name": "x", "kind": "file", "path": str(path)})
    path.write_text("10\n20\n")
    assert tail_file(source) == "20"
    with path.open("a") as f:
        f.write("30\n4")                                 # "4" is a line still being written
    assert tail_file(source) == "30"
    with path.open("a") as f:
        f.write("0\n")
    assert tail_file(source) == "40"
    path.write_text("95")                                # rewritten in place, as /sys files are
    os.utime(path, ns=(1, 1))
    assert tail_file(source) == "95"


@pytest.mark.parametrize(("raw", "message"), [
    ({"name": "x", "kind": "ftp", "path": "/"}, "kind"),
    ({"name": "x y", "kind": "file", "path": "/"}, "must be a word"),
    ({"name": "x", "kind": "file"}, "needs path"),
    ({"name": "x", "kind": "http", "url": "file:///etc/passwd"}, "http"),
    ({"name": "x", "kind": "command", "command": "true", "timeout": 0}, "timeout"),
])
def test_bad_sources_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_source(raw)


class FakeMesh:
    """What the sensor needs from its node: a name, an id, publish and sync_memory_item."""

    name = "sensor-1"
    node_id = "n" * 32

    def __init__(self) -> None:
        self.published: list[Any] = []
        self.memory: dict[str, Any] = {}

    def publish(self, event: Any) -> None:
        self.published.append(event)

    async def sync_memory_item(self, memory_type: str, memory_data: Any, priority: int = 5,
                               key: str | None = None) -> str:
        assert key is not None
        self.memory[key] = (memory_type, memory_data, priority)
        return key


async def test_machine_sample_and_bounded_history() -> None:
    sensor = SensorNode({"history_size": 3, "top_processes": 3, "top_processes_every": 1})
    for _ in range(5):
        sample = await sensor.sample_once()
    assert len(sensor.history) == 3 and sensor.samples_taken == 5
    for key in ("cpu_percent", "memory_percent", "memory_used_mb", "disk_percent"):
        assert key in sample, key
    assert 0.0 <= sample["cpu_percent"] <= 100.0
    assert "net_sent_bytes_per_s" in sample or sys.platform != "linux"
    assert len(sensor.machine.top_processes) == 3


async def test_threshold_rule_on_a_file_source_raises_and_clears(tmp_path: Path) -> None:
    path = tmp_path / "temp"
    path.write_text("20\n")
    sensor = SensorNode({"rules": ["room > 50 for 0.2s"], "sources": [{"name": "room", "kind": "file",
                                                                           "path": str(path)}]})
    mesh = FakeMesh()
    sensor._node = mesh  # type: ignore[assignment]  # a stand-in port that records what it is given
    await sensor.sample_once()
    assert sensor.history[-1]["room"] == 20.0 and not mesh.published
    with path.open("a") as f:
        f.write("80\n")
    await sensor.sample_once()                           # holding, but not yet for 0.2 s
    assert not mesh.published
    await asyncio.sleep(0.25)
    await sensor.sample_once()
    raised = mesh.published[-1]
    assert isinstance(raised, AlertRaised) and raised.value == 80.0 and raised.key == "alert:sensor-1:room_50_for_0.2s"
    memory_type, record, priority = mesh.memory[raised.key]
    assert (memory_type, record["active"], record["value"], priority) == ("alert", True, 80.0, 9)
    assert [a["rule"] for a in sensor.active_alerts()] == ["room > 50 for 0.2s"]
    with path.open("a") as f:
        f.write("30\n")
    await sensor.sample_once()
    cleared = mesh.published[-1]
    assert isinstance(cleared, AlertCleared) and cleared.key == raised.key and cleared.value == 30.0
    assert mesh.memory[raised.key][1]["active"] is False and mesh.memory[raised.key][1]["recovered_value"] == 30.0
    assert sensor.active_alerts() == [] and len(sensor.recent_alerts) == 2


async def test_command_source_and_a_failing_source(tmp_path: Path) -> None:
    sensor = SensorNode({"sources": [
        {"name": "answer", "kind": "command", "command": [sys.executable, "-c", "print('x'); print(42)"]},
        {"name": "broken", "kind": "command", "command": [sys.executable, "-c", "import sys; sys.exit(3)"]},
        {"name": "gone", "kind": "file", "path": str(tmp_path / "missing")},
    ]})
    sample = await sensor.sample_once()
    assert sample["answer"] == 42.0 and "broken" not in sample and "gone" not in sample
    assert "exit 3" in sensor.source_errors["broken"] and "gone" in sensor.source_errors


async def test_http_source_on_loopback_only() -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b'{"queue": {"depth": 17}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/status"
        sensor = SensorNode({"sources": [{"name": "svc", "kind": "http", "url": url},
                                         # refused before any connection is tried
                                         {"name": "far", "kind": "http", "url": "http://8.8.8.8/x"}]})
        sample = await sensor.sample_once()
        assert sample["svc.queue.depth"] == 17.0
        assert "not on the local network" in sensor.source_errors["far"]
    finally:
        server.shutdown()


async def test_handlers_and_lifecycle(tmp_path: Path) -> None:
    sensor = SensorNode({"sample_interval_seconds": 0.05, "rules": ["cpu_percent >= 0"]})
    mesh = FakeMesh()
    await sensor.on_start(mesh)
    await sensor.on_start(mesh)                          # idempotent
    try:
        for _ in range(100):
            if sensor.samples_taken >= 3:
                break
            await asyncio.sleep(0.02)
        ctx = TaskContext(Task("t1", "sensor_snapshot"), mesh)  # type: ignore[arg-type]
        snap = await sensor.handle_snapshot({"fresh": True}, ctx)
        assert "cpu_percent" in snap["sample"] and snap["active_alerts"]
        history = await sensor.handle_history({"metric": "memory_percent", "limit": 2}, ctx)
        assert history["count"] == 2 and history["min"] <= history["max"]
        alerts = await sensor.handle_alerts(None, ctx)
        assert alerts["active"][0]["rule"] == "cpu_percent >= 0" and alerts["rules"][0]["active"]
        assert sensor.metrics()["sensor"]["active_alerts"] == 1
    finally:
        await sensor.on_stop(mesh)
    taken = sensor.samples_taken
    await asyncio.sleep(0.12)
    assert sensor.samples_taken == taken                 # stopped
