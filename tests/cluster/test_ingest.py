"""Who and what a node takes in (issue #11): idempotency keys from the CLI, and the allowlist and api_key on
every ingest path, on real processes."""

from __future__ import annotations

import json

import pytest

from .conftest import Cluster, NodeProcess, until

pytestmark = [pytest.mark.slow, pytest.mark.untimed]  # judged by outcome, not by time: run with the fast part


def test_a_task_id_names_one_request_from_the_cli(cluster: Cluster) -> None:
    cluster.start("w1")
    first = cluster.cli("submit", "echo", "--payload", '{"n": 1}', "--task-id", "job-1", "--wait", "--json")
    assert first.returncode == 0, first.stderr
    again = cluster.cli("submit", "echo", "--payload", '{"n": 1}', "--task-id", "job-1", "--wait", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["result"] == json.loads(first.stdout)["result"] == {"n": 1}
    other = cluster.cli("submit", "echo", "--payload", '{"n": 2}', "--task-id", "job-1", "--wait")
    assert other.returncode == 2
    assert "Traceback" not in other.stderr and other.stdout == ""
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "job-1" in lines[0] and "different payload" in lines[0], other.stderr
    assert len(cluster.cli_json("tasks")) == 1


def _guarded(cluster: Cluster, **security: object) -> str:
    """A config file for this mesh with a ``security:`` section (and anti-entropy every second)."""
    return str(cluster.variant("guarded.yaml", security=security, sync_interval_seconds=1))


def _counter(node: NodeProcess, name: str) -> int:
    return int(node.status()["counters"].get(name, 0))


def _holds(node: NodeProcess, key: str) -> bool:
    return bool(node.command(f"/mesh_recall {key}")["ok"])


def test_the_allowlist_covers_memory_tasks_and_deletions(cluster: Cluster) -> None:
    guarded = _guarded(cluster, allowlist=["trusted-*"])
    # Only the trusted nodes run "inside" (the module is found in the nodes' working folder, the cluster's).
    (cluster.root / "inside.py").write_text("from mesh_core import handler\n\n"
                                            "@handler('inside')\nasync def inside(payload):\n    return payload\n")
    t1 = cluster.start("trusted-1", "--config", guarded, "--handlers", "inside")
    t2 = cluster.start("trusted-2", "--config", guarded, "--handlers", "inside")
    # No allowlist of its own (it trusts everyone); its anti-entropy, every second too, sends its writes again.
    outsider = cluster.start("outsider", "--config", str(cluster.variant("open.yaml", sync_interval_seconds=1)))
    assert t1.command('/mesh_remember genuine "from inside"')["ok"]
    until(lambda: _holds(outsider, "genuine") and _holds(t2, "genuine"), timeout=15)

    # Its write, its deletion of a trusted fact, and its task: the allowlisted nodes take none of them.
    assert outsider.command('/mesh_remember secret "from outside"')["ok"]
    assert outsider.command("/mesh_forget genuine")["ok"]
    for node in (t1, t2):
        until(lambda node=node: _counter(node, "refused_memory") >= 2, timeout=15)
    ran = outsider.command("/mesh_submit inside --payload 1 --wait", timeout=20)
    assert not ran["ok"] and "allowlist" in json.dumps(ran), ran
    assert _counter(t1, "refused_tasks") + _counter(t2, "refused_tasks") == 1
    # The outsider's anti-entropy sends its writes again every second: still refused, never applied.
    for node in (t1, t2):
        seen = _counter(node, "refused_memory")
        until(lambda node=node, seen=seen: _counter(node, "refused_memory") > seen, timeout=15)
        assert not _holds(node, "secret") and _holds(node, "genuine")
    # A node that joins later (bootstrap from every key's newest entries) and a one-shot client refuse it too.
    t3 = cluster.start("trusted-3", "--config", guarded)
    until(lambda: _holds(t3, "genuine"), timeout=15)
    assert not _holds(t3, "secret") and _counter(t3, "refused_memory") >= 1
    recalled = cluster.cli("--config", guarded, "--name", "trusted-cli", "recall", "secret")
    assert recalled.returncode == 1 and "secret" in recalled.stderr
    assert all(node.alive for node in (t1, t2, t3, outsider))
    lines = [line for line in (cluster.logs / "trusted-1.log").read_text().splitlines()
             if '"counter":"refused_memory"' in line]
    assert len(lines) == 1, lines  # logged once per origin, however often refused
