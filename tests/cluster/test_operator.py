"""The operator's view of a mesh: Prometheus metrics scraped over HTTP, an observer that runs nothing,
and ``mesh-tui events`` for scripts (issue 15, points 2, 3 and 5)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh_core import AgentMeshManager
from mesh_core.events import TaskUpdated
from mesh_core.metrics import CONTENT_TYPE
from mesh_core.model import NodeRole, short_id
from mesh_testing import eventually, free_port
from mesh_tui.engine import EngineSource

from .conftest import Cluster, until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(host: str, port: int) -> tuple[str, Samples, dict[str, str]]:
    """GET /metrics: the content type, every sample by (name, labels), and each family's type."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        ctype = reply.headers["Content-Type"]
        text = reply.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return ctype, samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: v for (n, key), v in samples.items() if n == name}


async def boom(payload: Any) -> Any:
    raise ValueError("boom")


@pytest.mark.slow
async def test_metrics_of_a_process_and_an_in_process_node_are_what_ran_there(tmp_path: Path) -> None:
    c = Cluster(tmp_path, "sqlite")
    try:
        port = free_port()
        n1 = c.start("n1", "--metrics-port", str(port))
        started = n1.wait_event(lambda e: e.get("event") == "NodeStarted")
        assert started["metrics"] == f"http://127.0.0.1:{port}/metrics"
        a = await c.node("a", **{"metrics.port": 0})
        a.register_handler("boom", boom)
        client = await c.client()
        await c.wait_active(client, ["n1", "a"])
        await eventually(lambda: {m.info.name for m in a.members()} >= {"n1", "a"}, 10)
        ran: Counter[str] = Counter()
        for i in range(24):
            task = await client.wait_task(await client.submit_task("echo", {"i": i}), 10)
            assert task.status.value == "succeeded"
            ran[task.node_name or ""] += 1
        assert set(ran) <= {"n1", "a"} and sum(ran.values()) == 24
        await eventually(lambda: any("boom" in m.info.task_types for m in client.members()), 10)
        failed = await client.wait_task(await client.submit_task("boom", max_retries=0), 10)
        assert failed.status.value == "dead_letter" and failed.node_name == "a"

        a_host, a_port = a.metrics_address or ("", 0)
        for name, host, at in (("n1", "127.0.0.1", port), ("a", a_host, a_port)):
            ctype, samples, types = await asyncio.to_thread(scrape, host, at)
            assert ctype == CONTENT_TYPE and ctype.startswith("text/plain; version=")
            assert types["mesh_tasks"] == "counter" and types["mesh_task_duration_seconds"] == "histogram"
            assert types["mesh_problems"] == "counter" and types["mesh_nodes"] == "gauge"
            echo = value(samples, "mesh_tasks_total", task_type="echo", outcome="succeeded") or 0.0
            assert echo == ran[name], (name, ran)  # exactly what ran there (0 is absent when none did)
            if ran[name]:
                assert value(samples, "mesh_task_duration_seconds_count", task_type="echo") == ran[name]
                assert value(samples, "mesh_task_queue_wait_seconds_count", task_type="echo") == ran[name]
                assert value(samples, "mesh_task_duration_seconds_bucket", task_type="echo", le="+Inf") == ran[name]
            assert labelled(samples, "mesh_tasks_in_mesh", "status")["succeeded"] == 24
            assert labelled(samples, "mesh_tasks_in_mesh", "status")["dead_letter"] == 1
            assert labelled(samples, "mesh_nodes", "status") == {"active": 2, "suspect": 0, "dead": 0, "left": 0}
            assert value(samples, "mesh_backend_up") == 1 and value(samples, "mesh_node_degraded") == 0
            assert value(samples, "mesh_tasks_running") == 0
            info = [dict(k) for (n, k), v in samples.items() if n == "mesh_node_info" and v == 1]
            assert [(i["name"], i["node_type"], i["protocol"], i["role"]) for i in info] == \
                [(name, "general", "sqlite_local", "worker")]
            loops = labelled(samples, "mesh_loop_restarts_total", "loop")
            assert {"heartbeat", "claim", "view", "results"} <= set(loops) and set(loops.values()) == {0}
        _, samples, _ = await asyncio.to_thread(scrape, a_host, a_port)
        assert value(samples, "mesh_tasks_total", task_type="boom", outcome="dead_letter") == 1
        assert labelled(samples, "mesh_problems_total", "kind") == dict(a.counters)  # every counter, as counted
        assert info[0]["node_id"] == a.node_id
        await a.sync_memory_item("fact", {"x": 1}, key="k1")
        _, samples, _ = await asyncio.to_thread(scrape, a_host, a_port)
        assert value(samples, "mesh_memory_items") == a.memory_count() == 1
        assert value(samples, "mesh_memory_conflicts_open") == 0

        with pytest.raises(urllib.error.HTTPError) as missing:  # any other path
            await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/", None, 10)
        assert missing.value.code == 404
        # a peer that sends an endless request head is cut off; the endpoint still answers the next scrape
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 20_000)
        await writer.drain()
        writer.close()
        assert (await asyncio.to_thread(scrape, "127.0.0.1", port))[0].startswith("text/plain")

        # the port is taken: a second node says so, names the port, and does not join
        taken = subprocess.run([sys.executable, "-m", "mesh_tui", *c.global_args(), "--name", "n2", "--no-ui",
                                "--metrics-port", str(port)], capture_output=True, text=True, timeout=30,
                               env=c.env, cwd=c.root)
        assert taken.returncode == 2
        assert f"metrics: port {port} on 127.0.0.1 is already in use" in taken.stderr
        assert "n2" not in {m.info.name for m in a.members()}
        # a one-shot command in the same environment serves no metrics: MESH_METRICS_PORT is the node's port
        oneshot = subprocess.run([sys.executable, "-m", "mesh_tui", *c.global_args(), "status", "--json"],
                                 capture_output=True, text=True, timeout=30, cwd=c.root,
                                 env={**c.env, "MESH_METRICS_PORT": str(port)})
        assert oneshot.returncode == 0, oneshot.stderr
    finally:
        await c.close()


async def test_an_observer_sees_a_workers_tasks_runs_none_and_is_not_a_worker(cluster: Cluster) -> None:
    worker = await cluster.node("w")
    observer = AgentMeshManager(cluster.node_config("obs"), role=NodeRole.CLIENT)
    source = EngineSource(observer)
    seen: list[TaskUpdated] = []

    async def watch() -> None:
        async for event in source.events():
            if isinstance(event, TaskUpdated):
                seen.append(event)

    watcher = asyncio.get_running_loop().create_task(watch())
    await asyncio.sleep(0)
    await source.start()
    try:
        assert source.title.startswith("Agent Mesh · obs") and source.title.endswith(" (observer)")
        client = await cluster.client()
        await cluster.wait_active(client, ["w"])
        await asyncio.sleep(0.6)  # the observer's first read of the tasks is its baseline
        ids = [await client.submit_task("echo", {"i": i}) for i in range(5)]
        for task_id in ids:
            assert (await client.wait_task(task_id, 10)).node_name == "w"
        await eventually(lambda: set(ids) <= {e.task_id for e in seen if e.status == "succeeded"}, 10)
        done = {e.task_id: e for e in seen if e.status == "succeeded"}
        assert {done[t].node_name for t in ids} == {"w"}
        state = await source.state()
        assert set(ids) <= {t.task_id for t in state.tasks["done"]}
        assert state.local["role"] == "client" and [n["name"] for n in state.nodes] == ["w"]
        assert observer.running_tasks() == [] and observer.services.worker.running == {}
        assert "obs" not in {m.info.name for m in worker.members()}  # not listed as a worker anywhere
        assert observer.node_id not in {m.info.node_id for m in client.members()}
        for task_id in ids:  # and routed none of them
            assert (await client.get_task(task_id)).node_id == worker.node_id
        assert {h["name"] for h in observer.loops()} == {"view", "results", "watch"}
    finally:
        await source.stop()
        watcher.cancel()
        await cluster.close()  # the in-process nodes (the fixture stops only processes)


@pytest.mark.slow
def test_events_prints_the_mesh_then_exits_and_follow_streams_until_sigterm(tmp_path: Path) -> None:
    c = Cluster(tmp_path, "sqlite")
    try:
        c.start("w1")
        observer = c.start("obs", "--observe")  # the headless observer: its lines are events too
        started = observer.wait_event(lambda e: e.get("event") == "NodeStarted")
        assert started["role"] == "observer"

        once = c.cli("events", "--json", "--settle", "1.5")
        assert once.returncode == 0, once.stderr
        lines = [json.loads(line) for line in once.stdout.splitlines()]
        assert [(e["event"], e["name"]) for e in lines if e["event"] == "NodeJoined"] == [("NodeJoined", "w1")]
        text = c.cli("events", "--settle", "1")
        assert text.returncode == 0 and " NodeJoined " in text.stdout and " name=w1 " in text.stdout

        follow, follow_text = (
            subprocess.Popen([sys.executable, "-m", "mesh_tui", *c.global_args(), "events", "--follow", *json_flag],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=c.env, cwd=c.root)
            for json_flag in (["--json"], []))
        try:
            time.sleep(2.5)  # joined, and its first read of the tasks made
            done = c.cli_json("submit", "echo", "--payload", '{"hi": 1}', "--wait")
            task_id = done["task_id"]
            until(lambda: any(e.get("event") == "TaskUpdated" and e.get("task_id") == task_id
                              and e.get("status") == "succeeded" for e in observer.lines), timeout=10)
            time.sleep(1.0)
            follow.send_signal(signal.SIGTERM)
            follow_text.send_signal(signal.SIGINT)
            out, err = follow.communicate(timeout=15)
            text_out, text_err = follow_text.communicate(timeout=15)
        finally:
            for proc in (follow, follow_text):
                if proc.poll() is None:
                    proc.kill()
        assert follow.returncode == 0, err
        assert follow_text.returncode == 0 and not text_err, text_err  # Ctrl-C: a clean exit, no traceback
        assert f"TaskUpdated task_id={short_id(task_id)} task_type=echo status=succeeded" in " ".join(text_out.split())
        events = [json.loads(line) for line in out.splitlines()]
        finished = [e for e in events if e["event"] == "TaskUpdated" and e["task_id"] == task_id]
        assert [e["status"] for e in finished][-1] == "succeeded" and finished[-1]["node_name"] == "w1"
        assert not [e for e in observer.lines if e.get("event") == "TaskUpdated" and e.get("node_name") == "obs"]
        assert "obs" not in c.cli_json("agents").__repr__()
    finally:
        c.stop()
