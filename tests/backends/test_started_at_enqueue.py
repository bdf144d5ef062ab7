"""A task for an idle worker starts at enqueue (SQLite and Redis): its lease is granted there and the task is the
worker's wake-up, so the worker's first contact is running it; a wake-up that is lost, late or garbage costs a
second, not the task."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from mesh_core import AgentMeshManager, codec
from mesh_core.backends.redis.tasks import RedisTasks
from mesh_core.backends.shared import TASK_FIELDS
from mesh_core.backends.sqlite.clock import machine_clock
from mesh_core.backends.sqlite.started import TASK_COLUMNS
from mesh_core.backends.sqlite.store import _wake_address
from mesh_core.backends.sqlite.tasks import SqliteTasks
from mesh_core.backends.started import unanswered_after
from mesh_core.model import TaskStatus
from mesh_testing import eventually
from mesh_testing.users import NOBODY, send_as

from ..conftest import require_another_user
from .conftest import STORE_BACKENDS, Cluster, cluster_for

GARBAGE = (b"", b"\xc1\xc1", b"\x92\xa1x\x01", b"\x93\xa1x\x90\x90", b"\x92\xa1x\x91\x01",
           b"\x92\xa1x\x92\xa6status\x01", b"\x91\x93\x01\x02\x03")


@pytest.fixture(params=STORE_BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Cluster]:
    async with cluster_for(request, tmp_path) as c:
        yield c


async def _slots_said(cluster: Cluster, node_id: str, *, anew: bool = False) -> None:
    """Wait until the worker's claim has told the medium what it can take (it does on every claim). ``anew``: a claim
    made after this call did, so the word is good for about ``GRANT_FRESH`` from now (an older one may be about to
    lapse, and a task submitted then is queued, not started, on a loaded machine)."""
    if cluster.backend == "redis":
        raw = aioredis.Redis.from_url(cluster.redis_url or "")
        key = f"mesh:{{{cluster.root.name}}}:grants"
        try:
            before = await raw.hget(key, node_id) if anew else None

            async def said_anew() -> bool:
                return (await raw.hget(key, node_id)) not in (None, before)
            await eventually(said_anew, timeout=5)
        finally:
            await raw.aclose()
        return

    def word() -> Any:
        with sqlite3.connect(cluster.db) as conn:
            return conn.execute("SELECT fresh_until FROM grants WHERE node_id=?", (node_id,)).fetchone()
    before = word() if anew else None
    await eventually(lambda: word() not in (None, before), timeout=5)


async def _serves(client: AgentMeshManager, worker: AgentMeshManager, task_type: str) -> None:
    def known() -> bool:
        member = client.services.members.table.get(worker.node_id)
        return member is not None and task_type in member.info.task_types
    await eventually(known, timeout=5)


async def _send_started(cluster: Cluster, node_id: str, body: bytes) -> None:
    """A started-task wake-up with ``body`` as its content, sent to ``node_id`` as the medium sends one."""
    if cluster.backend == "redis":
        raw = aioredis.Redis.from_url(cluster.redis_url or "")
        try:
            await raw.publish(f"mesh:{{{cluster.root.name}}}:wake:{node_id}", b"T" + body)
        finally:
            await raw.aclose()
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"T" + body, _wake_address(str(cluster.db), node_id))


def _hold_wakeups(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[Any, bytes]], Any]:
    """Started-task wake-ups the medium sends are held back (as if lost, or late); returns them and the real
    receiver, to hand one over later."""
    medium = RedisTasks if cluster.backend == "redis" else SqliteTasks
    held: list[tuple[Any, bytes]] = []
    deliver = medium._started_here
    monkeypatch.setattr(medium, "_started_here", lambda self, packed: held.append((self, packed)))
    return held, deliver


async def _counting_mesh(cluster: Cluster) -> tuple[AgentMeshManager, AgentMeshManager, list[int]]:
    """A worker serving ``counted`` (each run appends its ``n``, in the order they ran), a client that knows it,
    and the runs; the worker has told the medium what it can take."""
    worker = await cluster.node("w1")
    runs: list[int] = []

    async def counted(payload: Any) -> Any:
        runs.append(payload["n"])
        return payload

    worker.register_handler("counted", counted)
    client = await cluster.client()
    await _slots_said(cluster, worker.node_id)
    await _serves(client, worker, "counted")
    return worker, client, runs


async def test_an_idle_worker_runs_the_task_from_its_wakeup(cluster: Cluster) -> None:
    w1 = await cluster.node("w1")
    client = await cluster.client()
    await _slots_said(cluster, w1.node_id)
    await _serves(client, w1, "echo")
    for n in range(3):
        await _slots_said(cluster, w1.node_id, anew=True)
        task = await client.wait_task(await client.submit_task("echo", {"n": n}), timeout=5)
        assert task.status is TaskStatus.SUCCEEDED and task.result == {"n": n} and task.attempt == 1
        assert task.node_name == "w1" and task.finished_at
    full = await client.get_task(task.task_id)
    assert [(a.attempt, a.node_name) for a in full.attempts] == [(1, "w1")] and full.started_at
    info = w1.backend_info()
    assert info["tasks_started_in_wakeups"] == 3 and info["tasks_handed_again"] == 0


async def test_a_started_task_runs_as_its_wakeup_is_read_not_on_the_claim_loops_next_pass(cluster: Cluster) -> None:
    """The worker takes a started task where its wake-up is read: with the claim loop stopped (as if its pass
    were late), the task still runs at once from the wake-up, and nothing is handed on."""
    w1, client, runs = await _counting_mesh(cluster)
    for loop in w1.services.ctx.loops:
        if loop.get_name() == "claim":
            loop.cancel()  # the grant its last claim wrote stays good a while (GRANT_FRESH): a task's time, at once
    task = await client.wait_task(await client.submit_task("counted", {"n": 7}), timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.attempt == 1 and task.node_name == "w1"
    assert runs == [7]
    info = w1.backend_info()
    assert info["tasks_started_in_wakeups"] == 1 and info["tasks_handed_again"] == 0


async def test_a_busy_worker_gets_no_more_than_its_slots_the_rest_queue(cluster: Cluster) -> None:
    w1 = await cluster.node("w1", concurrency=1)
    gate = asyncio.Event()
    runs: list[int] = []

    async def gated(payload: Any) -> Any:
        runs.append(payload["n"])
        await gate.wait()
        return payload

    w1.register_handler("gated", gated)
    client = await cluster.client()
    await _slots_said(cluster, w1.node_id)
    await _serves(client, w1, "gated")
    first = await client.submit_task("gated", {"n": 1})
    await eventually(lambda: runs == [1], timeout=5)
    second = await client.submit_task("gated", {"n": 2})
    await asyncio.sleep(0.3)
    assert (await client.get_task(second)).status is TaskStatus.ASSIGNED and runs == [1]
    gate.set()
    for task_id in (first, second):
        assert (await client.wait_task(task_id, timeout=5)).status is TaskStatus.SUCCEEDED
    assert runs == [1, 2] and w1.backend_info()["tasks_started_in_wakeups"] == 1


async def test_a_started_task_that_outlives_the_unanswered_time_is_not_counted_as_handed_again(
        cluster: Cluster) -> None:
    """A task taken from its wake-up and still running when the worker's claim finds it unanswered (the medium
    answers a started task when it ends) is handed back to the worker that runs it: no news, not counted as a
    lost or late wake-up, and it runs once."""
    w1, client, runs = await _counting_mesh(cluster)
    gate = asyncio.Event()

    async def long(payload: Any) -> Any:
        runs.append(payload["n"])
        await gate.wait()
        return payload

    w1.register_handler("long", long)
    await _serves(client, w1, "long")
    task_id = await client.submit_task("long", {"n": 1})
    await eventually(lambda: runs == [1], timeout=5)
    await asyncio.sleep(unanswered_after(w1.services.ctx.timings.task_lease_s) + 1.0)  # claims pass it by
    gate.set()
    task = await client.wait_task(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.attempt == 1 and runs == [1]
    info = w1.backend_info()
    assert info["tasks_started_in_wakeups"] == 1 and info["tasks_handed_again"] == 0


async def test_a_lost_wakeup_is_made_good_by_a_claim_and_a_late_one_runs_nothing_twice(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    held, deliver = _hold_wakeups(cluster, monkeypatch)
    w1, client, runs = await _counting_mesh(cluster)
    task_id = await client.submit_task("counted", {"n": 7})
    task = await client.wait_task(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.attempt == 1 and len(held) == 1
    assert w1.backend_info()["tasks_handed_again"] == 1 and w1.backend_info()["tasks_started_in_wakeups"] == 0
    backend, packed = held[0]
    deliver(backend, packed)  # the late wake-up comes after all
    await asyncio.sleep(0.6)  # a claim round hands it to the worker if it is taken
    assert runs == [7]
    assert (await client.get_task(task_id)).status is TaskStatus.SUCCEEDED


async def test_a_garbage_started_wakeup_is_refused_counted_and_work_goes_on(cluster: Cluster) -> None:
    w1 = await cluster.node("w1")
    client = await cluster.client()
    await _slots_said(cluster, w1.node_id)
    for junk in GARBAGE:
        await _send_started(cluster, w1.node_id, junk)
    await eventually(lambda: w1.backend_info()["refused_records"] >= len(GARBAGE), timeout=5)
    task = await client.wait_task(await client.submit_task("echo", {"still": "fine"}), timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.result == {"still": "fine"}


async def test_a_started_task_wakeup_from_a_process_that_may_not_use_the_file_is_refused(tmp_path: Any) -> None:
    """Linux's abstract sockets have no file mode: without the sender check, any local user could make a worker
    run a task by sending it a started-task wake-up, while the database file (mode 0600) keeps them out."""
    require_another_user()
    async with Cluster(tmp_path, "sqlite") as cluster:
        w1, client, runs = await _counting_mesh(cluster)
        done = await client.wait_task(await client.submit_task("counted", {"n": 1}), timeout=5)
        assert done.status is TaskStatus.SUCCEEDED
        with sqlite3.connect(cluster.db) as conn:  # a real started-task row, made into a task nobody submitted
            row = list(conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id=?", (done.task_id,)).fetchone())
        fields = {name: at for at, name in enumerate(TASK_FIELDS)}
        row[fields["task_id"]] = uuid.uuid4().hex
        row[fields["payload"]] = codec.encode({"n": 99}, codec.CodecLimits())
        row[fields["status"]], row[fields["result"]], row[fields["finished_at"]] = "running", None, None

        def forged() -> bytes:  # granted now: a wake-up older than its lease allows is not run from (it is late)
            return b"T" + codec.pack([machine_clock(), [row]])
        address = _wake_address(str(cluster.db), w1.node_id)
        assert isinstance(address, bytes)
        send_as(NOBODY, address, forged())
        await eventually(lambda: w1.backend_info()["wakeups_refused"] == 1, timeout=5)
        await asyncio.sleep(0.3)
        assert runs == [1]  # not run
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # the same from a process that may use
            sock.sendto(forged(), address)                              # the file (as it could store the task)
        await eventually(lambda: runs == [1, 99], timeout=5)
        assert w1.backend_info()["wakeups_refused"] == 1


async def test_a_task_cancelled_before_its_late_wakeup_never_runs(cluster: Cluster,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker was stopped (here: its wake-up held back) when its task was started and then cancelled: the
    cancel cannot end a running task at once, but the task never runs. The claim that would hand it on ends it
    cancelled, and the wake-up that comes late is not run."""
    held, deliver = _hold_wakeups(cluster, monkeypatch)
    w1, client, runs = await _counting_mesh(cluster)
    task_id = await client.submit_task("counted", {"n": 1})
    await eventually(lambda: held, timeout=5)
    assert (await client.cancel_task(task_id))[task_id] == "cancelling"  # started at enqueue: running, as far as known
    task = await client.wait_task(task_id, timeout=5)
    assert task.status is TaskStatus.CANCELLED and task.error == "cancelled before it ran"
    backend, packed = held[0]
    deliver(backend, packed)
    await asyncio.sleep(0.6)
    assert runs == [] and w1.backend_info()["started_wakeups_late"] == 1


async def test_a_burst_of_large_tasks_all_start_from_wakeups(cluster: Cluster) -> None:
    """Started tasks to one node are cut into wake-ups that each fit (a SQLite datagram has a size limit), and no more
    are started by one enqueue than the node's socket holds: none is lost on the way, the rest wait in the inbox."""
    w1 = await cluster.node("w1", concurrency=12)
    client = await cluster.client()
    await _slots_said(cluster, w1.node_id)
    await _serves(client, w1, "echo")
    blobs = [os.urandom(20_000).hex() for _ in range(12)]
    ids = await asyncio.gather(*(client.submit_task("echo", {"blob": b}) for b in blobs))
    for task_id, blob in zip(ids, blobs, strict=True):
        task = await client.wait_task(task_id, timeout=10)
        assert task.status is TaskStatus.SUCCEEDED and task.result == {"blob": blob}
    info = w1.backend_info()
    assert info["tasks_started_in_wakeups"] >= 3 and info["tasks_handed_again"] == 0
