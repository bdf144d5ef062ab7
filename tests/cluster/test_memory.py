"""Memory acceptance on real processes (issue 3)."""

from __future__ import annotations

import json

import pytest

from .conftest import Cluster, until

pytestmark = pytest.mark.slow


def _config(cluster: Cluster, name: str, settings: dict | None = None, **memory_sync) -> str:
    """A config file for this mesh with these ``memory_sync`` settings (and top-level ``settings``)."""
    memory = {"conflict_resolution_strategy": "manual", **memory_sync}
    return str(cluster.variant(name, **(settings or {}), memory_sync=memory))


def test_manual_conflict_survives_restarts_and_is_resolved_from_the_cli(cluster: Cluster) -> None:
    manual = _config(cluster, "manual.yaml")
    deaf = _config(cluster, "deaf.yaml", enabled=False)  # b does not pull, so its write is concurrent
    a = cluster.start("a", "--config", manual)
    b = cluster.start("b", "--config", deaf)
    assert a.command('/mesh_remember plan {"owner": "alice"}')["ok"]
    assert b.command('/mesh_remember plan {"owner": "bob"}')["ok"]
    assert b.terminate() == 0
    b = cluster.start("b", "--config", manual)
    for node in (a, b):
        until(lambda node=node: node.command("/mesh_conflicts")["data"], timeout=10)
    ids = {node.command("/mesh_conflicts")["data"][0]["conflict_id"] for node in (a, b)}
    assert len(ids) == 1  # the same conflict on every replica
    conflict_id = ids.pop()
    assert a.terminate() == 0 and b.terminate() == 0
    a = cluster.start("a", "--config", manual)
    b = cluster.start("b", "--config", manual)
    for node in (a, b):
        assert [c["conflict_id"] for c in node.command("/mesh_conflicts")["data"]] == [conflict_id]
    listed = cluster.cli("--config", manual, "conflicts", "--json")
    assert [c["conflict_id"] for c in json.loads(listed.stdout)] == [conflict_id], listed.stderr
    done = cluster.cli("--config", manual, "resolve", conflict_id[:8], '{"owner": "both"}')
    assert done.returncode == 0, done.stderr
    for node in (a, b):
        until(lambda node=node: node.command("/mesh_recall plan")["data"]["value"] == {"owner": "both"}, timeout=10)
        assert node.command("/mesh_recall plan")["data"]["siblings"] == []
        assert node.command("/mesh_conflicts")["data"] == []
    recalled = cluster.cli("--config", manual, "recall", "plan", "--json")
    assert json.loads(recalled.stdout)["value"] == {"owner": "both"}
    assert json.loads(recalled.stdout)["siblings"] == []


def test_node_stopped_during_writes_converges_after_restart(cluster: Cluster) -> None:
    a = cluster.start("a")
    b = cluster.start("b")
    until(lambda: a.view() == {"a": "active", "b": "active"}, timeout=5)
    assert b.terminate() == 0
    for i in range(500):
        assert a.command(f"/mesh_remember k{i} {i}")["ok"]
    b = cluster.start("b")
    until(lambda: b.command("/mesh_memory k*")["data"] and len(b.command("/mesh_memory k*")["data"]) == 500,
          timeout=10)
    assert b.command("/mesh_recall k499")["data"]["value"] == 499


def test_strong_write_waits_for_every_node_and_names_a_stopped_one(cluster: Cluster) -> None:
    import signal

    strong = _config(cluster, "strong.yaml", strategy="strong", strong_timeout_seconds=0.8,
                     conflict_resolution_strategy="latest_wins")
    a, b, c = (cluster.start(name, "--config", strong) for name in ("a", "b", "c"))
    until(lambda: a.view() == {"a": "active", "b": "active", "c": "active"}, timeout=5)
    assert a.command('/mesh_remember first "everyone has it"')["ok"]
    for node in (b, c):  # applied before the write returned: no waiting here
        assert node.command("/mesh_recall first")["data"]["value"] == "everyone has it"
    c.kill(signal.SIGSTOP)
    reply = a.command('/mesh_remember second "c was asleep"')
    assert not reply["ok"] and "not applied" in reply["text"] and ": c" in reply["text"], reply
    assert b.command("/mesh_recall second")["data"]["value"] == "c was asleep"
    c.kill(signal.SIGCONT)
    until(lambda: (c.command("/mesh_recall second")["data"] or {}).get("value") == "c was asleep", timeout=5)


def test_master_slave_fails_over_when_the_primary_is_killed(cluster: Cluster) -> None:
    import signal

    ms = _config(cluster, "ms.yaml", strategy="master_slave", conflict_resolution_strategy="latest_wins")
    nodes = {name: cluster.start(name, "--config", ms) for name in ("p1", "p2", "p3")}
    ids = {node.node_id: name for name, node in nodes.items()}
    primary_id, _ = until(lambda: {n.status()["local"]["memory_primary"] for n in nodes.values()} == {
        nodes["p1"].status()["local"]["memory_primary"]} and nodes["p1"].status()["local"]["memory_primary"],
        timeout=10)
    primary = nodes[ids[primary_id]]
    follower, other = [n for n in nodes.values() if n is not primary]
    for i in range(20):
        assert follower.command(f"/mesh_remember before-{i} {i}")["ok"]
    primary.kill(signal.SIGKILL)
    for i in range(10):
        reply = follower.command(f"/mesh_remember after-{i} {i}", timeout=30)
        assert reply["ok"], reply
    for node in (follower, other):
        for i in range(20):
            until(lambda node=node, i=i: (node.command(f"/mesh_recall before-{i}")["data"] or {}).get("value") == i,
                  timeout=10)
        for i in range(10):
            until(lambda node=node, i=i: (node.command(f"/mesh_recall after-{i}")["data"] or {}).get("value") == i,
                  timeout=10)
    assert {n.status()["local"]["memory_primary"] for n in (follower, other)} != {primary_id}
