"""A loop that fails is restarted, counted and shown; a command that fails never ends the headless reader.

Faults are injected by the test (a claim call that raises once, a command that raises), not by a bad record:
bad records are quarantined by the backends, and the supervisor must hold whatever else goes wrong.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mesh_core.commands import run_command
from mesh_core.model import Task
from mesh_testing import eventually

from .conftest import Cluster, NodeProcess, until

pytestmark = pytest.mark.slow


# -- in process: a real node on a real SQLite file, its claim call made to raise once -----------------------

async def test_a_claim_loop_that_raises_keeps_claiming_after_its_restart(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        worker = await cluster.node("w")
        client = await cluster.client()
        transport = worker.services.worker.transport
        real_claim = transport.claim
        calls: list[int] = []

        async def claim_raising_once(node_id: str, limit: int, lease_seconds: float) -> list[Task]:
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("invalid literal for int() with base 10: 'x'")  # not a BackendError
            return await real_claim(node_id, limit, lease_seconds)

        transport.claim = claim_raising_once  # type: ignore[method-assign]
        await eventually(lambda: len(calls) >= 2, timeout=10)  # it claims again after its restart
        task_id = await client.submit_task("echo", {"n": 1})
        assert await client.wait_for(task_id, timeout=20) == {"n": 1}
        assert worker.counters["loop_restarts"] == 1 and worker.counters["loop_restarts_claim"] == 1
        claim = next(loop for loop in worker.loops() if loop["name"] == "claim")
        assert claim["state"] == "running" and claim["restarts"] == 1
        assert claim["last_error"] == "ValueError: invalid literal for int() with base 10: 'x'"
        assert worker.healthy
        status = await run_command(worker, "/mesh_status")
        shown = json.loads(json.dumps(status.data, default=str))
        assert any(loop["name"] == "claim" and loop["restarts"] == 1 for loop in shown["local"]["loops"])
        assert "Loop claim: running (1 restarts; last ValueError" in status.text
    finally:
        await cluster.close()


async def test_a_node_whose_claim_loop_is_down_gets_no_new_work(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        healthy = await cluster.node("w1")
        broken = await cluster.node("w2")
        client = await cluster.client()

        async def claim_always_raising(node_id: str, limit: int, lease_seconds: float) -> list[Task]:
            raise ValueError("injected: this node cannot claim")

        broken.services.worker.transport.claim = claim_always_raising  # type: ignore[method-assign]

        def claim_down_seen() -> bool:
            return any(m.info.node_id == broken.node_id and "claim" in m.info.metrics.get("loops_down", ())
                       for m in client.members())

        await eventually(claim_down_seen, timeout=20)
        ids = [await client.submit_task("echo", {"n": n}) for n in range(10)]
        for task_id in ids:  # routed to w2 they would stay assigned: it is active but cannot claim
            assert await client.wait_for(task_id, timeout=20) is not None
        done = [await client.get_task(task_id) for task_id in ids]
        assert {task.node_id for task in done} == {healthy.node_id}
    finally:
        await cluster.close()


# -- real processes: a plugin module injects the fault inside a `mesh-tui --no-ui` node ---------------------

FAULTS = '''
    """Test-only faults: the next claim raises while TRIGGER exists; /mesh_boom and /mesh_cancelled always raise."""
    import asyncio
    from pathlib import Path

    from mesh_core.backends.sqlite import SqliteBackend
    from mesh_core.commands.registry import command

    TRIGGER = Path({trigger!r})
    _claim = SqliteBackend.claim


    async def claim(self, node_id, limit, lease_seconds):
        if TRIGGER.exists():
            TRIGGER.unlink()
            raise ValueError("injected claim fault")
        return await _claim(self, node_id, limit, lease_seconds)


    SqliteBackend.claim = claim


    @command("/mesh_boom", "raises (a test-only fault)")
    async def boom(mesh, args):
        int("not a number")


    @command("/mesh_cancelled", "raises CancelledError from inside (a test-only fault)")
    async def cancelled(mesh, args):
        raise asyncio.CancelledError("an inner wait was cancelled")
'''


def _faulty_node(cluster: Cluster, name: str) -> tuple[NodeProcess, Path]:
    plugins = cluster.root / "plugins"
    plugins.mkdir(exist_ok=True)
    trigger = cluster.root / "claim-fault"
    (plugins / "mesh_faults.py").write_text(textwrap.dedent(FAULTS).format(trigger=str(trigger)))
    env = dict(cluster.env)
    # keep the PYTHONPATH the tests run with (it may point at the code under test)
    cluster.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugins), env.get("PYTHONPATH", "")) if p)
    try:
        return cluster.start(name, "--handlers", "mesh_faults"), trigger
    finally:
        cluster.env = env


@pytest.fixture
def sqlite_cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_a_node_whose_claim_loop_fails_restarts_it_and_status_shows_the_restart(sqlite_cluster: Cluster) -> None:
    cluster = sqlite_cluster
    node, trigger = _faulty_node(cluster, "w")
    trigger.touch()
    problem = node.wait_event(lambda e: e.get("event") == "Problem" and e.get("counter") == "loop_restarts",
                              timeout=20)
    assert "claim loop failed (ValueError: injected claim fault)" in problem["detail"]
    done = cluster.cli("submit", "echo", "--payload", '{"still": "claiming"}', "--wait", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"still": "claiming"}
    # the one-shot client sees the restart in the node's heartbeat
    seen: dict[str, Any] = {}

    def counted() -> bool:
        nodes = {n["name"]: n for n in cluster.cli_json("status")["nodes"]}
        seen.update(nodes.get("w", {}))
        return (seen.get("metrics") or {}).get("counters", {}).get("loop_restarts") == 1

    until(counted, timeout=20)
    # the node itself shows the loop, its restart and its last error
    local = node.status()["local"]
    (claim,) = [loop for loop in local["loops"] if loop["name"] == "claim"]
    assert claim["state"] == "running" and claim["restarts"] == 1
    assert claim["last_error"] == "ValueError: injected claim fault"
    assert local["healthy"] is True
    text = node.command("/mesh_status")["text"]
    assert "Loop claim: running (1 restarts; last ValueError: injected claim fault)" in text
    assert node.stderr.count("Traceback") == 1 and "injected claim fault" in node.stderr


def test_a_failing_command_prints_one_line_and_the_reader_goes_on(sqlite_cluster: Cluster) -> None:
    node, _ = _faulty_node(sqlite_cluster, "w")
    reply = node.command("/mesh_boom")
    assert reply["ok"] is False and "ValueError" in reply["text"]
    assert node.status()["local"]["name"] == "w"  # the next command still runs
    until(lambda: "mesh-tui: command '/mesh_boom' failed: ValueError: invalid literal" in node.stderr, timeout=10)
    failed = [line for line in node.stderr.splitlines() if "/mesh_boom" in line]
    assert len(failed) == 1 and "Traceback" not in node.stderr


def test_a_command_cancelled_from_inside_is_a_failed_command_not_the_end_of_the_reader(
        sqlite_cluster: Cluster) -> None:
    node, _ = _faulty_node(sqlite_cluster, "w")
    reply = node.command("/mesh_cancelled")
    assert reply["ok"] is False and "CancelledError" in reply["text"]
    assert node.status()["local"]["name"] == "w"  # the reader is still there
    assert node.alive
