"""grpc_mesh tasks: a node answers a peer that wrote to it even before SWIM has told it of that peer.

A client that joined through one seed may route its first submission to a worker that gossip has not
reached yet; the worker stores the task, and its answer must reach the client (at the address the
client's stream ``Hello`` gave), or the client gives up after ``SUBMIT_TIMEOUT`` with the task stored.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import deque
from typing import Any

import pytest

from mesh_core.backends.contracts import Assignment, Completion, Enqueued
from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc.wire import Peer
from mesh_core.errors import BackendUnavailable
from mesh_core.model import Task, TaskStatus

from ..backends.conftest import Cluster, eventually
from .conftest import backend_of


async def test_a_submission_from_a_peer_swim_has_not_named_yet_is_answered(cluster: Cluster) -> None:
    worker = await cluster.node("w")
    client = await cluster.client()
    wb, cb = backend_of(worker), backend_of(client)
    stranger = "f" * 32  # a sender id the worker's SWIM has never heard of, at the client's real address
    assert wb.address_of(stranger) is None
    request = 987_654
    answer = cb._expect(("submit", request), wb.node_id)
    task = Task(task_id=uuid.uuid4().hex, task_type="echo", payload={"x": 1}, submitter_id=stranger,
                submitted_at=time.time())
    submission = pb.Submission(request_id=request, task=cb._task_frame(task), node_id=wb.node_id, node_name="w",
                               capacity=1000)
    wb._on_tasks(Peer(stranger, "newcomer", client.backend_info()["address"], 1, True),
                 pb.TaskMessage(submits=[submission]))
    outcome, error = await asyncio.wait_for(answer, 5.0)
    assert error == ""
    assert outcome == Enqueued.STORED
    stored = await wb.store.get_tasks([task.task_id])
    assert [t.task_id for t in stored] == [task.task_id]


async def test_a_lease_renewal_during_the_recording_of_an_outcome_keeps_the_task(cluster: Cluster) -> None:
    """A worker renews the leases of what it runs while one of them is being recorded (the outcome stored,
    the backup copy and the push to the submitter under way): that task is still held. Before, the renewal
    said it was gone, the worker cancelled the recording, and the submitter never heard of the outcome (its
    waiter found it only by the periodic sweep, 5 s later)."""
    owner = await cluster.node("owner")
    backup = await cluster.node("backup")
    ob, bb = backend_of(owner), backend_of(backup)
    _stand_in_for_the_worker(owner)  # this test claims, renews and completes in the worker's place
    await eventually(lambda: ob._backup_peer() == bb.node_id)
    task = Task(task_id=uuid.uuid4().hex, task_type="echo", payload={"x": 2}, submitter_id=ob.node_id,
                submitted_at=time.time())
    assert await ob.enqueue([Assignment(task, ob.node_id, "owner", "test", 1000)]) == [Enqueued.STORED]
    bb.wire.on_stream("tasks", lambda peer, env: None)  # the backup stops answering: the recording waits for it
    [claimed] = await ob.claim(ob.node_id, 1, 30.0)
    recording = asyncio.ensure_future(ob.complete([Completion(task.task_id, claimed.attempt, ob.node_id,
                                                              TaskStatus.SUCCEEDED, None)]))
    await eventually(lambda: _final(ob, task.task_id))  # stored; the backup copy is awaited
    assert not recording.done()
    assert await ob.renew(ob.node_id, [(task.task_id, claimed.attempt)], 30.0) == {task.task_id}
    assert await recording == [True]
    assert await ob.renew(ob.node_id, [(task.task_id, claimed.attempt)], 30.0) == set()  # recorded: gone now


def _stand_in_for_the_worker(node: Any) -> None:
    """The node's worker takes no task (not even one started for it at enqueue), and its claim and heartbeat loops
    are stopped: the test claims, renews and completes in their place."""
    node.services.worker.accepting = False
    for loop_task in node.services.ctx.loops:
        if loop_task.get_name() in ("claim", "heartbeat"):
            loop_task.cancel()


async def _final(backend: Any, task_id: str) -> bool:
    states = await backend.store.task_states([task_id])
    return states.get(task_id) is TaskStatus.SUCCEEDED


async def test_a_client_reads_the_results_after_its_cursor_from_the_feed(cluster: Cluster) -> None:
    """``finished_for`` hands a client every entry after its cursor, in order, and nothing older; entries the
    bounded feed already let go of are gone (the periodic sweep answers for those)."""
    await cluster.node("w")
    cb = backend_of(await cluster.client())
    cb._feed = deque(maxlen=5)
    assert await cb.finished_for(cb.node_id, None) == ([], 0)
    for seq in range(1, 9):
        cb._feed_seq = seq
        cb._feed.append((seq, f"entry {seq}"))
    assert await cb.finished_for(cb.node_id, None) == ([], 8)
    assert await cb.finished_for(cb.node_id, 8) == ([], 8)
    assert await cb.finished_for(cb.node_id, 6) == (["entry 7", "entry 8"], 8)
    assert await cb.finished_for(cb.node_id, 4) == ([f"entry {i}" for i in range(5, 9)], 8)
    assert await cb.finished_for(cb.node_id, 0) == ([f"entry {i}" for i in range(4, 9)], 8)  # 1-3 let go
    assert await cb.finished_for(cb.node_id, 9) == ([], 8)


async def test_a_renewal_with_a_bad_progress_renews_the_lease_and_ignores_the_report(cluster: Cluster) -> None:
    """Progress from a peer is validated at the edge: out of range → counted and dropped, the lease renewed."""
    owner = await cluster.node("owner")
    ob = backend_of(owner)
    _stand_in_for_the_worker(owner)  # this test claims and renews in the worker's place
    task = Task(task_id=uuid.uuid4().hex, task_type="echo", payload={"x": 3}, submitter_id=ob.node_id,
                submitted_at=time.time())
    assert await ob.enqueue([Assignment(task, ob.node_id, "owner", "test", 1000)]) == [Enqueued.STORED]
    [claimed] = await ob.claim(ob.node_id, 1, 30.0)
    me = Peer(ob.node_id, "owner", "127.0.0.1:1", 1, True)  # the worker is the owner itself here: its own store
    for bad in (7.5, float("nan")):
        held = pb.HeldAttempt(task_id=task.task_id, attempt=claimed.attempt, progress=bad, progress_message="x")
        await ob._handle(me, pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=1, held=[held], lease_seconds=30)]))
    good = pb.HeldAttempt(task_id=task.task_id, attempt=claimed.attempt, progress=0.5, progress_message="half")
    await ob._handle(me, pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=2, held=[good], lease_seconds=30)]))
    assert ob.counters["refused_progress"] == 2
    assert ob.counters["tasks_stale_renewals"] == 0  # each renewal still held the lease
    stored = (await ob.store.get_tasks([task.task_id]))[0]
    assert stored.progress == 0.5 and stored.progress_message == "half"


async def test_an_envelope_that_lands_as_the_node_closes_does_not_hold_up_the_close(cluster: Cluster) -> None:
    """A peer's envelope is taken off its queue in the very event-loop pass in which the node closes (a crash
    under load: its peers keep writing to it). Before, the peer's drain waited with ``asyncio.wait_for``, which on
    Python 3.11 returns the envelope and drops the cancel when both come at once; the drain then waited out its
    60 s idle bound on the empty queue, and ``close`` (which waits for every background task) with it."""
    worker = await cluster.node("w")
    wb = backend_of(worker)
    await worker.services.ctx.stop_loops()  # as a crash does before the backend closes
    peer = Peer("e" * 32, "peer", "127.0.0.1:1", 1, False)
    wb._on_tasks(peer, pb.TaskMessage())
    await eventually(lambda: peer.node_id in wb._inbound and wb._inbound[peer.node_id].empty())
    await asyncio.sleep(0.05)  # the drain handled the first envelope and waits for the next
    wb._on_tasks(peer, pb.TaskMessage())
    await asyncio.sleep(0)  # the queue hands the drain that envelope; the drain itself has not resumed yet
    closing = asyncio.ensure_future(wb.close())
    done, _ = await asyncio.wait({closing}, timeout=10)  # a stall waits 60 s
    assert closing in done, "close still waits for the peer's drain after 10 s"
    assert peer.node_id not in wb._inbound


async def test_a_caller_that_gives_up_on_a_hung_close_is_answered_and_the_port_is_let_go(cluster: Cluster) -> None:
    """A background task that does not end when cancelled (a handler stuck in a call that ignores the cancel)
    held ``close`` for as long as it ran, and a caller's own timeout could not cut it short: the wait for the
    background work swallowed the caller's cancel. Now the caller's timeout reaches it at once, and the node's
    port and files are let go all the same."""
    worker = await cluster.node("w")
    wb = backend_of(worker)
    await worker.services.ctx.stop_loops()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores every cancel until released

    wb.spawn(stubborn(), "stubborn")
    await asyncio.sleep(0.01)  # it runs (a task cancelled before it starts never gets to ignore the cancel)
    port = int(wb.wire.address.rsplit(":", 1)[1])
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await wb.close()
        assert time.monotonic() - started < 3, "the caller's timeout did not cut the close short"
        with socket.socket() as s:  # the server stopped: its port can be bound again
            s.bind(("127.0.0.1", port))
    finally:
        release.set()


async def test_a_submission_nobody_answers_fails_once_its_deadline_passes(cluster: Cluster,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No timer per submission: the reoffer loop answers each one unanswered past its deadline (SUBMIT_TIMEOUT after
    it was asked) with "not stored", and forgets it."""
    monkeypatch.setattr("mesh_core.backends.grpc.tasks.submit.SUBMIT_TIMEOUT", 0.3)
    worker = await cluster.node("w")
    client = await cluster.client()
    wb, cb = backend_of(worker), backend_of(client)
    await eventually(lambda: any(n.node_id == wb.node_id and "echo" in n.task_types
                                 for n in client.services.members.workers()))
    wb.wire.on_stream("tasks", lambda peer, env: None)  # the worker hears no submission
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="no worker answered a submission within 0.3 s"):
        await client.submit_task("echo", {"x": 3})
    assert 0.3 <= time.monotonic() - started < 5.0
    assert not cb._submit_deadlines and not [key for key in cb._waiting if key[0] == "submit"]
