"""Specialised node types on real ``mesh-tui --no-ui`` processes (issue 7).

A general, a language_expert and a planning_only node share one SQLite mesh:
text analysis submitted by the general node runs on the language node; the
planner's ``execute_plan`` runs a 6-step plan on the other nodes in dependency
order; the planner never receives an ``echo``. A sensor node raises and clears
an alert from a file it tails, and another node reads the alert from its own
memory replica.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mesh_core.model import NodeType, TaskStatus

from .conftest import Cluster, NodeProcess, until
from .test_cluster import _client

pytestmark = [pytest.mark.slow, pytest.mark.untimed]  # judged by outcome, not by time: run with the fast part

RELAY_PLUGIN = textwrap.dedent('''
    """Lets a test make the general node itself submit a task and wait for it."""
    from mesh_core.handlers import handler

    @handler("relay", capabilities={"relay"})
    async def relay(payload, ctx):
        task_id = await ctx.submit(payload["task_type"], payload.get("payload"))
        return {"task_id": task_id, "result": await ctx.wait(task_id, timeout=30)}
''')

TEXT = ("The new solar farm opened on Monday and the whole town loves it. Solar panels now power three hundred "
        "homes. Engineers say the solar farm will double next year.")

SIX_STEPS: list[dict[str, Any]] = [
    {"id": "fetch", "duration": 1, "task_type": "echo", "payload": {"document": TEXT}},
    {"id": "analyse", "duration": 2, "after": ["fetch"], "task_type": "text_analysis",
     "payload": {"text": TEXT}, "requires": ["nlp"]},
    {"id": "stats", "duration": 1, "after": ["fetch"], "task_type": "analysis", "payload": [3, 1, 4, 1, 5, 9]},
    {"id": "wait", "duration": 1, "after": ["analyse", "stats"], "task_type": "sleep", "payload": {"seconds": 0.2}},
    {"id": "summary", "duration": 1, "after": ["wait"], "task_type": "summarize",
     "payload": {"text": TEXT, "sentences": 1}},
    {"id": "report", "duration": 1, "after": ["summary", "stats"], "task_type": "echo",
     "payload": {"stats": {"$result": "stats"}, "summary": {"$result": "summary"}}},
]


def _trio(cluster: Cluster) -> tuple[NodeProcess, NodeProcess, NodeProcess]:
    plugin_dir = cluster.root / "plugins"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "relay_plugin.py").write_text(RELAY_PLUGIN)
    env = dict(cluster.env)
    cluster.env["PYTHONPATH"] = str(plugin_dir)
    try:
        general = cluster.start("gen", "--handlers", "relay_plugin")
    finally:
        cluster.env = env
    lang = cluster.start("lang", "--node-type", "language_expert")
    planner = cluster.start("planner", "--node-type", "planning_only")
    everyone = {"gen": "active", "lang": "active", "planner": "active"}
    until(lambda: general.view() == everyone and planner.view() == everyone, timeout=10)
    return general, lang, planner


def test_language_node_runs_text_analysis_and_the_planner_runs_a_six_step_plan(cluster: Cluster) -> None:
    general, lang, planner = _trio(cluster)
    agents = {n["name"]: n for n in planner.command("/mesh_agents")["data"]}
    assert "echo" not in agents["planner"]["task_types"] and "execute_plan" in agents["planner"]["task_types"]
    assert "text_analysis" in agents["lang"]["task_types"]
    asyncio.run(_scenario(cluster, general, lang, planner))


async def _scenario(cluster: Cluster, general: NodeProcess, lang: NodeProcess, planner: NodeProcess) -> None:
    async with _client(cluster) as mesh:
        # text_analysis submitted by the general node (through its relay handler) runs on the language node.
        relayed = await mesh.wait_for(await mesh.submit_task("relay", {"task_type": "text_analysis",
                                                                       "payload": {"text": TEXT}}), timeout=30)
        inner = await mesh.get_task(relayed["task_id"])
        assert inner.submitter_id == general.node_id and inner.node_id == lang.node_id
        assert relayed["result"]["language"] == "en" and relayed["result"]["sentiment"]["label"] == "positive"
        assert any("solar" in k.lower() for k in relayed["result"]["keywords"])

        # execute_plan: the planner coordinates, the general and language nodes execute, in dependency order.
        plan_id = await mesh.submit_task("execute_plan", {"goal": "solar report", "steps": SIX_STEPS}, timeout_s=60)
        report = await mesh.wait_for(plan_id, timeout=60)
        assert (await mesh.get_task(plan_id)).node_id == planner.node_id
        assert report["ok"], report
        assert set(report["results"]) == {s["id"] for s in SIX_STEPS}
        assert report["critical_path"] == ["fetch", "analyse", "wait", "summary", "report"]
        assert report["results"]["fetch"] == {"document": TEXT}
        assert report["results"]["analyse"]["language"] == "en"
        assert report["results"]["stats"]["mean"] == pytest.approx(23 / 6)
        assert report["results"]["wait"] == {"slept": 0.2}
        assert report["results"]["summary"]["sentences_out"] == 1
        assert report["results"]["report"] == {"stats": report["results"]["stats"],
                                               "summary": report["results"]["summary"]}
        tasks = {sid: await mesh.get_task(step["task_id"]) for sid, step in report["steps"].items()}
        for sid, task in tasks.items():
            assert task.status is TaskStatus.SUCCEEDED and task.parent_id == plan_id
            assert task.node_id in (general.node_id, lang.node_id), (sid, task.node_name)
        assert tasks["analyse"].node_id == lang.node_id and tasks["summary"].node_id == lang.node_id
        for step in SIX_STEPS:
            for dep in step.get("after", []):
                before, after = tasks[dep], tasks[step["id"]]
                assert before.finished_at is not None and after.started_at is not None
                assert before.finished_at <= after.started_at, (dep, step["id"])
                assert report["submitted_order"].index(dep) < report["submitted_order"].index(step["id"])

        # The planner never receives an echo, not even when asked to prefer it.
        ids = [await mesh.submit_task("echo", {"i": i}) for i in range(20)]
        ids.append(await mesh.submit_task("echo", {"i": "prefers planner"},
                                          preferred_node_types=[NodeType.PLANNING_ONLY]))
        for task_id in ids:
            await mesh.wait_for(task_id, timeout=20)
        done = await mesh.get_tasks(ids)
        assert len(done) == 21 and all(t.node_id != planner.node_id for t in done)
        assert {t.node_id for t in done} <= {general.node_id, lang.node_id}
    ran_on_planner = {e.get("task_type") for e in planner.lines
                      if e.get("event") == "TaskUpdated" and e.get("status") == "running"}
    assert ran_on_planner == {"execute_plan"}


def test_language_cache_hit_rate_shows_in_the_node_metrics(cluster: Cluster) -> None:
    """Needs the manager to merge ``profile.metrics()`` into its heartbeat metrics."""
    cluster.start("lang", "--node-type", "language_expert")
    until(lambda: cluster.cli_json("status")["nodes"], timeout=10)

    async def workload() -> None:
        async with _client(cluster) as mesh:
            for _ in range(3):
                for text in ("I love this.", "I hate that.", "Solar panels are great."):
                    await mesh.wait_for(await mesh.submit_task("text_analysis", {"text": text}), timeout=20)
    asyncio.run(workload())

    def cache() -> Any:
        node = next(n for n in cluster.cli_json("agents") if n["name"] == "lang")
        stats = (node["metrics"].get("language_expert") or {}).get("cache") or {}
        return stats if stats.get("hits") == 6 else None
    stats, _ = until(cache, timeout=5, interval=0.2)
    assert stats["misses"] == 3 and stats["hit_rate"] == pytest.approx(6 / 9, abs=1e-3)


def test_sensor_alert_raises_clears_and_is_read_from_another_nodes_memory(cluster: Cluster, tmp_path: Path) -> None:
    """Needs the manager to await ``profile.on_start(mesh)`` after start and ``profile.on_stop(mesh)`` on stop."""
    reading = tmp_path / "room_temperature"
    reading.write_text("21\n")
    # through the cluster's settings: on grpc the file is rewritten as each node is added as a seed
    cluster.write_config({**cluster.settings, "node_configs": {"sensor_connected": {
        "sample_interval_seconds": 0.1, "top_processes": 0,
        "rules": ["room > 50 for 0.3s"], "sources": [{"name": "room", "kind": "file", "path": str(reading)}]}}})
    sensor = cluster.start("sensor", "--node-type", "sensor_connected")
    watcher = cluster.start("watcher")
    until(lambda: watcher.view() == {"sensor": "active", "watcher": "active"}, timeout=10)
    key = "alert:sensor:room_50_for_0.3s"

    def recalled(active: bool) -> Any:
        reply = watcher.command(f"/mesh_recall {key}")
        return reply["ok"] and reply["data"]["value"]["active"] is active and reply["data"]["value"]

    with reading.open("a") as f:
        f.write("80\n")
    raised = sensor.wait_event(lambda e: e.get("event") == "AlertRaised", timeout=10)
    assert raised["key"] == key and raised["value"] == 80.0
    alert, _ = until(lambda: recalled(True), timeout=10, interval=0.1)
    assert alert["node_name"] == "sensor" and alert["threshold"] == 50.0 and alert["metric"] == "room"
    with reading.open("a") as f:
        f.write("30\n")
    cleared = sensor.wait_event(lambda e: e.get("event") == "AlertCleared", timeout=10)
    assert cleared["key"] == key and cleared["value"] == 30.0
    alert, _ = until(lambda: recalled(False), timeout=10, interval=0.1)
    assert alert["recovered_value"] == 30.0 and alert["cleared_at"] >= alert["raised_at"]
    assert json.dumps(alert)  # plain data all the way through
