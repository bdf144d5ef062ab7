"""SQLite: a worker sends each submitter its new result-feed entries in the wake-up, after the commit, and the
submitter answers its waiters from them with no read of the feed. A wake-up lost, garbage or too small for the
result costs a read, never the result; an outcome recorded elsewhere (a failure given up) still comes."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from mesh_core import AgentMeshManager, codec
from mesh_core.backends.sqlite.finishing import RESULT_IN_WAKEUP_BYTES, SqliteFinishing
from mesh_core.backends.sqlite.store import FINISHED, _wake_address
from mesh_core.errors import TaskFailed
from mesh_core.model import TaskStatus
from mesh_testing import Cluster, eventually


async def _mesh(tmp_path: Path) -> tuple[Cluster, AgentMeshManager, AgentMeshManager]:
    cluster = Cluster(tmp_path, "sqlite")
    await cluster.__aenter__()
    worker = await cluster.node("w1")

    async def fails(payload: Any) -> Any:
        raise RuntimeError("no")

    async def sized(payload: Any) -> Any:
        return "x" * payload["bytes"]

    worker.register_handler("fails", fails)
    worker.register_handler("sized", sized)
    client = await cluster.client()

    def known() -> bool:
        member = client.services.members.table.get(worker.node_id)
        return member is not None and "sized" in member.info.task_types
    await eventually(known, timeout=5)
    return cluster, worker, client


@pytest.fixture
async def mesh(tmp_path: Path) -> Any:
    cluster, worker, client = await _mesh(tmp_path)
    try:
        yield cluster, worker, client
    finally:
        await cluster.__aexit__(None, None, None)


async def test_results_come_in_wakeups_and_the_feed_is_not_read(mesh: Any) -> None:
    _, _, client = mesh
    await client.wait_task(await client.submit_task("echo", {"warm": 1}), timeout=5)  # the first is read (at open)
    before = client.backend_info()
    for n in range(20):
        task = await client.wait_task(await client.submit_task("echo", {"n": n}), timeout=5)
        assert task.status is TaskStatus.SUCCEEDED and task.result == {"n": n} and task.node_name == "w1"
        assert task.finished_at and task.attempt == 1
    after = client.backend_info()
    assert after["results_in_wakeups"] - before["results_in_wakeups"] == 20
    assert after["result_feed_reads"] == before["result_feed_reads"]


async def test_a_lost_result_wakeup_costs_a_read_not_the_result(mesh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, client = mesh
    real = SqliteFinishing._send_part
    lost: list[Any] = []

    def lose_first(self: SqliteFinishing, submitter_id: str, rows: list[list[Any]]) -> set[str]:
        if not lost:
            lost.append(rows)
            return set()  # as if sent: it never arrives, and no bare wake-up goes either
        return real(self, submitter_id, rows)
    monkeypatch.setattr(SqliteFinishing, "_send_part", lose_first)
    first = await client.submit_task("echo", {"n": 1})
    await eventually(lambda: lost, timeout=5)
    second = await client.submit_task("echo", {"n": 2})  # its wake-up comes, and shows the gap before it
    done = await asyncio.gather(client.wait_task(first, timeout=5), client.wait_task(second, timeout=5))
    assert [t.result for t in done] == [{"n": 1}, {"n": 2}]
    assert client.backend_info()["result_feed_reads"] >= 1


async def test_an_outcome_recorded_without_a_wakeup_entry_still_reaches_its_waiter(mesh: Any) -> None:
    _, _, client = mesh
    ok = await client.submit_task("echo", {"n": 1})
    bad = await client.submit_task("fails", {}, max_retries=0)  # given up by a move: a bare wake-up
    assert (await client.wait_task(ok, timeout=5)).result == {"n": 1}
    with pytest.raises(TaskFailed, match="no"):
        await client.wait_for(bad, timeout=5)


async def test_a_result_too_large_for_the_wakeup_is_read_from_the_task(mesh: Any) -> None:
    _, _, client = mesh
    size = RESULT_IN_WAKEUP_BYTES * 2
    task = await client.wait_task(await client.submit_task("sized", {"bytes": size}), timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.result == "x" * size
    small = await client.wait_task(await client.submit_task("sized", {"bytes": 10}), timeout=5)
    assert small.result == "x" * 10


ENTRY = [0, 1, "t", "succeeded", 1, None, None, 0.0, None, None, True]  # prev, seq, the feed's fields, complete
GARBAGE = [b"", b"r", b"r\xc1", b"r" + codec.pack([1, 2]), b"r" + codec.pack([ENTRY[:-1]]),
           b"r" + codec.pack([["0", *ENTRY[1:]]]), b"r" + codec.pack([[*ENTRY[:3], "bogus", *ENTRY[4:]]]),
           b"r" + codec.pack([[*ENTRY[:-1], "yes"]]), b"r" + codec.pack([[*ENTRY[:4], "one", *ENTRY[5:]]])]


@pytest.mark.parametrize("junk", GARBAGE)
async def test_a_garbage_result_wakeup_is_counted_and_the_feed_is_read(mesh: Any, junk: bytes) -> None:
    cluster, _, client = mesh
    await client.wait_task(await client.submit_task("echo", {"warm": 1}), timeout=5)
    before = client.backend_info()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(FINISHED + junk, _wake_address(str(cluster.db), client.node_id))
    await eventually(lambda: client.backend_info()["refused_records"] > before["refused_records"], timeout=5)
    task = await client.wait_task(await client.submit_task("echo", {"still": "fine"}), timeout=5)
    assert task.result == {"still": "fine"}
