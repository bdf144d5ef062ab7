"""A node whose own clock runs 300 s ahead fences itself, and scheduling times are on the medium's clock.

Issue #11, defect 10. The skewed node runs under libfaketime (Debian package ``faketime``; skipped with that reason
where it is missing): it measures its own wall clock against the medium's (Redis ``TIME``; on SQLite the kernel's
boot time plus uptime, which libfaketime does not fake), refuses to stamp memory writes and shows itself degraded.
Task leases and retry times are stamped by the medium, so its wrong wall clock neither takes running work away
(as the SQLite sweeper) nor holds a retry it scheduled back by 300 s.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from mesh_testing.chaos import parse_executions
from mesh_testing.chaos_probe import EXECUTION_LOG_ENV
from mesh_testing.faults import faketime_missing, skewed_clock

from .conftest import TIMEOUT, Cluster, NodeProcess, until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(faketime_missing() is not None, reason=str(faketime_missing()))]

SKEW = 300.0
# The offset as measured: against Redis TIME or the kernel's boot time it is 300.0; grpc_mesh measures it against
# its peers over the network (the error is half a round trip), so "+299.9" is as right as "+300.0".
REFUSAL = re.compile(r"this node's clock is \+(\d+\.\d) s off")


def _refused(text: str) -> bool:
    found = REFUSAL.search(text)
    return found is not None and SKEW - 30 < float(found.group(1)) < SKEW + 30


def _with_id(cluster: Cluster, name: str, node_id: str) -> None:
    """Give node ``name`` a chosen id before it first starts (the sweeper is the active node with the lowest id)."""
    folder = cluster.state / "nodes" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "node.json").write_text(json.dumps({"node_id": node_id, "name": name, "incarnation": 0}))


def _fenced(node: NodeProcess) -> dict[str, Any] | None:
    local = node.status()["local"]
    offset = local.get("clock_offset_s")
    return local if offset is not None and SKEW - 30 < offset < SKEW + 30 else None


def test_a_node_300_s_ahead_refuses_its_own_writes_and_shows_itself_degraded(cluster: Cluster) -> None:
    n1 = cluster.start("n1")
    skewed = cluster.start("skewed", prefix=skewed_clock(SKEW))
    until(lambda: n1.view().get("skewed") == "active" and skewed.view().get("n1") == "active", timeout=15)
    local, _ = until(lambda: _fenced(skewed), timeout=15)
    assert local["healthy"] is False

    # n1 writes first; the skewed node's later write (stamped 300 s ahead, it would win latest_wins) is refused.
    assert n1.command('/mesh_remember shared "from-n1"')["ok"]
    until(lambda: skewed.command("/mesh_recall shared").get("ok"), timeout=15)
    reply = skewed.command('/mesh_remember shared "from-the-future"')
    assert not reply["ok"] and _refused(reply["text"]) and "writes refused" in reply["text"], reply
    assert "\n" not in reply["text"].strip()
    assert skewed.status()["counters"]["clock_skew_refused"] >= 1

    # A one-shot client on the skewed clock: the one line, exit 1.
    plain = cluster.env
    cluster.env = {**(plain or os.environ), **dict(kv.split("=", 1) for kv in skewed_clock(SKEW)[1:])}
    try:
        done = cluster.cli("remember", "shared", '"from-a-skewed-client"')
    finally:
        cluster.env = plain
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and _refused(done.stderr), done.stderr

    # Its status, text and JSON, and its heartbeat (so every other node) show the skew.
    text = skewed.command("/mesh_status")
    assert text["ok"]
    rendered = cluster.cli("status").stdout
    shown = re.search(r"clock skewed \(\+(\d+) s\)", rendered)
    assert "skewed" in rendered and shown and SKEW - 30 < float(shown.group(1)) < SKEW + 30, rendered
    ahead = {n["name"]: n.get("clock_ahead_s") for n in n1.status()["nodes"]}
    assert ahead["skewed"] is not None and SKEW - 30 < ahead["skewed"] < SKEW + 30

    time.sleep(1.0)  # anything the skewed node might still ship would have arrived
    for node in (n1, skewed):
        assert node.command("/mesh_recall shared")["data"]["value"] == "from-n1"
    assert cluster.cli_json("recall", "shared")["value"] == "from-n1"


def test_a_skewed_sqlite_sweeper_does_not_rerun_running_tasks(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    log = tmp_path / "executions.log"
    cluster.env = {**(cluster.env or os.environ), EXECUTION_LOG_ENV: str(log)}
    try:
        _with_id(cluster, "skewed", "0" * 32)  # the lowest id: it sweeps
        _with_id(cluster, "n1", "f" * 32)
        # planning_only serves no probe: the long task runs on n1 while the skewed node judges its lease.
        skewed = cluster.start("skewed", "--node-type", "planning_only", prefix=skewed_clock(SKEW))
        n1 = cluster.start("n1", "--handlers", "mesh_testing.chaos_probe")
        until(lambda: skewed.view().get("n1") == "active" and n1.view().get("skewed") == "active", timeout=15)
        done = cluster.cli_json("submit", "chaos_probe", "--payload", json.dumps({"seconds": 3 * TIMEOUT + 2}),
                                "--wait", "--timeout", "60", timeout=90)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        runs = parse_executions(log.read_text())
        assert [(r.task_id, r.attempt, r.node) for r in runs] == [(done["task_id"], 1, "n1")]
        assert skewed.status()["counters"].get("rerouted", 0) == 0
    finally:
        cluster.stop()


def test_a_retry_scheduled_by_a_skewed_node_runs_after_its_delay(cluster: Cluster) -> None:
    skewed = cluster.start("skewed", "--node-type", "coordination_hub", prefix=skewed_clock(SKEW))
    n1 = cluster.start("n1")
    until(lambda: skewed.view().get("n1") == "active" and n1.view().get("skewed") == "active", timeout=15)
    # The first attempt fails on the skewed node (preferred), which schedules the retry elsewhere.
    started = time.monotonic()
    done = cluster.cli_json("submit", "fail", "--payload", '{"times": 1}', "--prefer", "coordination_hub",
                            "--wait", "--timeout", "60", timeout=90)
    took = time.monotonic() - started
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["node_name"] == "n1", done
    assert took < 20, f"the retry waited {took:.0f} s"
