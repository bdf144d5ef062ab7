"""grpc_mesh tasks: the outcome an owner copies to its backup is its own record, as its store holds it.

An owner keeps its unfinished tasks in memory from their enqueue through their first attempt, and builds the
outcome's copy (and the push to the submitter) from that and the completion, without reading the task back.
The copy must still be exactly the stored record, whichever way the attempt ran: claimed by the owner itself,
or offered to another worker that accepted it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from mesh_core import codec
from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc.tasks import task_fields
from mesh_core.backends.grpc.wire import Peer
from mesh_core.model import NodeStatus, TaskStatus

from ..backends.conftest import Cluster, eventually
from .conftest import backend_of, owner_and_client


async def _async(value: Any) -> Any:
    return value


async def test_the_backup_holds_each_outcome_exactly_as_its_owner_stored_it(cluster: Cluster) -> None:
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    client = await cluster.client()
    b1, b2 = backend_of(w1), backend_of(w2)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    # w1 routes echo to w2 only once its view has w2's record with its handlers (a backup peer is known sooner,
    # from SWIM, and w2's first record may come before its handlers are registered)
    await eventually(lambda: _async(any(n.node_id == w2.node_id and "echo" in n.task_types
                                        for n in w1.services.members.workers())))
    ids = [await client.submit_task("echo", {"i": i}, context={"n": i}) for i in range(20)]  # each owner runs its own
    # w1 owns these, submitted at once so its queue fills and the router offers some to w2 (one at a time, each
    # done before the next, they all stay on w1: idle, with the better record for echo)
    ids += await asyncio.gather(*(w1.submit_task("echo", {"j": i}) for i in range(20)))
    finals = await asyncio.gather(*(client.wait_task(i, timeout=15) for i in ids))
    assert all(t.status is TaskStatus.SUCCEEDED for t in finals)
    ran_on = {(t.task_id in ids[20:], t.node_id) for t in finals}
    assert (True, w2.node_id) in ran_on, "no task of w1's was accepted by w2: the offer path is not covered"
    compared = 0
    for owner, holder in ((b1, b2), (b2, b1)):
        records = await owner.store.get_tasks(ids, with_attempts=True)
        rows = await holder.store._read(lambda c, o=owner: c.execute(
            "SELECT task_id, record FROM grpc_backups WHERE owner_id=?", (o.node_id,)).fetchall())
        copies = {task_id: holder._task_of(record) for task_id, record in rows}
        for record in records:
            assert record.status is TaskStatus.SUCCEEDED
            copy = copies[record.task_id]
            assert task_fields(copy, owner.limits) == task_fields(record, owner.limits), record.task_id
            compared += 1
    assert compared == len(ids)
    # every outcome's record came from memory (none was read back from the store)
    assert b1.counters["task_outcomes_read_back"] == 0 and b2.counters["task_outcomes_read_back"] == 0
    # the client heard of each of its tasks from the owner's backup, once the backup held the outcome
    assert b1.counters["task_outcomes_forwarded"] + b2.counters["task_outcomes_forwarded"] == 20


async def test_an_outcome_forwarded_for_an_owner_the_client_handed_the_task_away_from_is_refused(
        cluster: Cluster) -> None:
    """A client that held an owner dead handed its task to another worker (``_rehome``): the old owner's outcome
    is refused whether the old owner pushes it or its backup forwards it (naming it), so the task ends once."""
    backup = await cluster.node("backup")
    client = await cluster.client()
    cb = backend_of(client)
    old_owner, task_id = "0" * 32, uuid.uuid4().hex
    cb._rehomed[task_id] = old_owner
    entry = {"task_id": task_id, "status": "succeeded", "attempt": 1, "node_id": old_owner, "node_name": "old",
             "finished_at": time.time(), "result": None, "error": None}
    sender = Peer(backend_of(backup).node_id, "backup", backup.backend_info()["address"], 1, False)
    cb._take_finished(sender, [pb.FinishedTask(entry=codec.encode(entry), owner_id=old_owner)])
    assert cb.counters["stale_results_refused"] == 1 and not cb._feed
    cb._take_finished(sender, [pb.FinishedTask(entry=codec.encode(entry))])  # the new owner's own: taken
    assert cb.counters["stale_results_refused"] == 1 and len(cb._feed) == 1


def _acks_seen_by(mesh: Any) -> list[str]:
    """Spy on a node's wire: the task ids of every FinishedAck that reaches it, and "" for each empty envelope
    it sends (the receiving side drops those unseen)."""
    wire = backend_of(mesh).wire
    seen: list[str] = []
    dispatch, send = wire.dispatch, wire.send

    def spy(kind: str, peer: Peer, envelope: Any) -> None:
        if kind == "tasks":
            seen.extend(a.task_id for a in envelope.finished_acks)
        dispatch(kind, peer, envelope)

    def sending(address: str, kind: str, envelope: Any) -> bool:
        if kind == "tasks" and not envelope.ByteSize():
            seen.append("")
        return send(address, kind, envelope)
    wire.dispatch, wire.send = spy, sending
    return seen


async def test_a_client_acknowledges_an_outcome_only_when_its_owner_asks(cluster: Cluster) -> None:
    """With a backup, the backup forwards each outcome and nobody waits for the client's ack: the client sends
    none (and no node sends an empty envelope). A lone worker has no backup: it asks the client (the client's copy
    is the second one), and hears one ack per task, so it never waits the backup timeout out."""
    lone = await cluster.node("lone")
    client = await cluster.client()
    seen = _acks_seen_by(lone)
    await eventually(lambda: _async(any(n.node_id == lone.node_id and "echo" in n.task_types
                                        for n in client.services.members.workers())))
    asked = [await client.submit_task("echo", {"i": i}) for i in range(5)]
    assert all(t.status is TaskStatus.SUCCEEDED for t in [await client.wait_task(i, timeout=15) for i in asked])
    await eventually(lambda: _async(sorted(seen) == sorted(asked)))
    assert not [k for k in backend_of(lone)._waiting if k[0] == "finished"]

    other = await cluster.node("other")
    await eventually(lambda: _async(backend_of(lone)._backup_peer() == backend_of(other).node_id
                                    and backend_of(other)._backup_peer() == backend_of(lone).node_id))
    seen_other = _acks_seen_by(other)
    forwarded = [await client.submit_task("echo", {"j": i}) for i in range(10)]
    assert all(t.status is TaskStatus.SUCCEEDED for t in [await client.wait_task(i, timeout=15) for i in forwarded])
    await asyncio.sleep(0.5)  # time for any ack on its way to arrive
    assert not set(seen + seen_other) & {*forwarded, ""}
    assert (backend_of(lone).counters["task_outcomes_forwarded"]
            + backend_of(other).counters["task_outcomes_forwarded"]) == 10


def _answers_after_outcomes(mesh: Any) -> list[str]:
    """Hold each submission answer that reaches ``mesh`` until an outcome has come for it (the order the backup's
    forwarding gives now and then, its path being one hop shorter than the owner's answer), for tasks submitted
    one at a time; returns the task ids of the outcomes in the order they came. An envelope with both (merged on
    the way) goes as it is: its outcome is taken before the answer's waiter resumes."""
    wire = backend_of(mesh).wire
    dispatch = wire.dispatch
    held: list[tuple[Peer, Any]] = []
    came: list[str] = []
    answered = 0

    def reordering(kind: str, peer: Peer, envelope: Any) -> None:
        nonlocal answered
        if kind != "tasks":
            dispatch(kind, peer, envelope)
            return
        if envelope.submit_results and not envelope.finished and len(came) <= answered:
            held.append((peer, envelope))  # its outcome has not come yet
            return
        dispatch(kind, peer, envelope)
        came.extend(codec.decode(item.entry)["task_id"] for item in envelope.finished)
        answered += len(envelope.submit_results)
        while held and len(came) > answered:
            later = held.pop(0)
            answered += len(later[1].submit_results)
            dispatch(kind, *later)
    wire.dispatch = reordering
    return came


async def test_an_outcome_that_comes_before_the_submission_is_answered_leaves_nothing_to_hand_on(
        cluster: Cluster) -> None:
    """The backup forwards an outcome as soon as it holds it, so a client may hear how a task ended before its
    owner's answer to the submission. That answer must not make the task unfinished again: the client kept it
    among the submissions to hand on for ever, and handed it on (to run again) when its owner went."""
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    client = await cluster.client()
    b1, b2, cb = backend_of(w1), backend_of(w2), backend_of(client)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    await eventually(lambda: _async(any(n.node_id == w1.node_id and "echo" in n.task_types
                                        for n in client.services.members.workers())))
    came = _answers_after_outcomes(client)
    ids = []
    for i in range(10):  # one at a time: each is answered only once its outcome came
        ids.append(await client.submit_task("echo", {"i": i}))
        assert (await client.wait_task(ids[-1], timeout=15)).status is TaskStatus.SUCCEEDED
    assert came == ids  # every outcome came before (or with) its answer: the case is covered
    assert not cb._submitted and not cb._ended_unanswered
    owners = {t.node_id for t in await client.get_tasks(ids)}
    for owner in owners:  # its owner goes: nothing of this client's is handed on
        cb._rehome(owner)
    assert cb.counters["tasks_rehomed"] == 0


async def test_a_task_its_owner_runs_at_once_has_one_copy_and_its_outcome_answers_the_submission(
        cluster: Cluster, monkeypatch: Any) -> None:
    """A client's submission the owner runs itself: no provisional copy and no confirmation go to the backup,
    only the outcome's copy (one write there), and the outcome the backup forwards answers the submission. The
    window is made long here so that every task ends within it whatever the machine's load."""
    monkeypatch.setattr("mesh_core.backends.grpc.tasks.owner.FIRST_COPY_WINDOW", 10.0)
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    client = await cluster.client()
    b1, b2, cb = backend_of(w1), backend_of(w2), backend_of(client)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    await eventually(lambda: _async(all(any(n.node_id == w.node_id and "echo" in n.task_types
                                            for n in client.services.members.workers()) for w in (w1, w2))))
    copies: list[tuple[str, bool, bool, int]] = []  # (task id, provisional, confirmed or deleted, final)
    for backend in (b1, b2):
        def keeping(peer: Peer, records: Any, keep: Any = backend._keep_backups) -> Any:
            for r in records:
                final = codec.decode(r.record)["status"] if r.record else ""
                copies.append((r.task_id, r.provisional, r.confirmed or r.deleted, final))
            return keep(peer, records)
        backend._keep_backups = keeping
    # the outcome comes first as a rule (one hop against two), but not always: a backup's first forward to a
    # client waits for its stream to be dialled. Held back here, each owner's answer comes after the outcome.
    _answers_after_outcomes(client)
    ids = [await client.submit_task("echo", {"i": i}) for i in range(10)]
    finals = [await client.wait_task(i, timeout=15) for i in ids]
    assert all(t.status is TaskStatus.SUCCEEDED for t in finals)
    assert sorted(copies) == sorted((i, False, False, "succeeded") for i in ids)
    assert cb.counters["submissions_answered_by_outcome"] == len(ids)
    assert b1.counters["first_copies_as_stored"] + b2.counters["first_copies_as_stored"] == 0
    assert not (cb._submitted or cb._answering or cb._ended_unanswered or b1._first_copy or b2._first_copy)


async def test_a_client_joining_copies_nothing_again(cluster: Cluster) -> None:
    """Only a worker can be a backup: a client (each one-shot command is one) becoming active starts no re-copy of
    the tasks without a copy yet. It did, and under load it copied every task its owner ran at once (a fresh-clone
    CI run saw a running task's extra copy in the test above)."""
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    b1, b2 = backend_of(w1), backend_of(w2)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    await asyncio.sleep(0.3)  # the workers' own joins are settled
    rebackups: list[str] = []
    for backend in (b1, b2):
        backend._rebackup_soon = lambda backend=backend: rebackups.append(backend.node_id)
    client = await cluster.client()
    await eventually(lambda: _async(all(b.status_of(client.node_id) is NodeStatus.ACTIVE for b in (b1, b2))))
    await asyncio.sleep(0.3)
    assert rebackups == []
    await cluster.node("w3")  # a worker does: it may be the backup now
    await eventually(lambda: _async(len(rebackups) >= 2), timeout=5)


async def _slow_pair(cluster: Cluster, seconds: float) -> tuple[Any, Any, Any, list[tuple[str, bool, bool, str]]]:
    """w1 and w2 (each the other's backup) serving ``slow`` (a handler that takes ``seconds``), a client that knows
    both serve it, and the list of every copy either backup is sent: (task id, provisional, confirmed or deleted,
    status of the record)."""
    async def slow(payload: Any) -> Any:
        await asyncio.sleep(seconds)
        return payload

    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    for w in (w1, w2):
        w.register_handler("slow", slow)
    client = await cluster.client()
    b1, b2 = backend_of(w1), backend_of(w2)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    await eventually(lambda: _async(all(any(n.node_id == w.node_id and "slow" in n.task_types
                                            for n in client.services.members.workers()) for w in (w1, w2))))
    copies: list[tuple[str, bool, bool, str]] = []
    for backend in (b1, b2):
        def keeping(peer: Peer, records: Any, keep: Any = backend._keep_backups) -> Any:
            for r in records:
                copies.append((r.task_id, r.provisional, r.confirmed or r.deleted,
                               codec.decode(r.record)["status"] if r.record else ""))
            return keep(peer, records)
        backend._keep_backups = keeping
    return client, b1, b2, copies


async def test_a_task_its_submitter_waits_for_is_copied_once_though_it_ends_after_the_short_window(
        cluster: Cluster, monkeypatch: Any) -> None:
    """``run_task`` tells the owner that its submitter waits for the outcome: a task that ends after
    ``FIRST_COPY_WINDOW`` but within ``AWAITED_COPY_WINDOW`` (made long here, whatever the machine's load) is
    copied once, as its outcome, which answers the submission. The same tasks by ``submit_task`` are each copied
    as stored first (the submitter hears at once that it is stored), then as their outcome."""
    monkeypatch.setattr("mesh_core.backends.grpc.tasks.owner.AWAITED_COPY_WINDOW", 10.0)
    client, b1, b2, copies = await _slow_pair(cluster, 0.1)
    ran = await asyncio.gather(*(client.run_task("slow", {"i": i}, timeout=15) for i in range(6)))
    assert all(t.status is TaskStatus.SUCCEEDED for t in ran)
    assert sorted(copies) == sorted((t.task_id, False, False, "succeeded") for t in ran)
    assert b1.counters["first_copies_as_stored"] + b2.counters["first_copies_as_stored"] == 0
    assert backend_of(client).counters["submissions_answered_by_outcome"] == len(ran)

    copies.clear()
    ids = await asyncio.gather(*(client.submit_task("slow", {"j": i}) for i in range(6)))
    assert all(t.status is TaskStatus.SUCCEEDED for t in [await client.wait_task(i, timeout=15) for i in ids])
    await eventually(lambda: _async(len(copies) == 2 * len(ids)))
    assert sorted(copies) == sorted([(i, False, False, "assigned") for i in ids]
                                    + [(i, False, False, "succeeded") for i in ids])
    assert b1.counters["first_copies_as_stored"] + b2.counters["first_copies_as_stored"] == len(ids)


async def test_a_waited_for_task_still_running_after_its_window_is_copied_as_stored_and_acknowledged(
        cluster: Cluster, monkeypatch: Any) -> None:
    """The awaited window bounds how long a submission goes unanswered: a task still running when it closes is
    copied as stored, and its submitter is answered (it keeps the task to hand on until the task ends)."""
    monkeypatch.setattr("mesh_core.backends.grpc.tasks.owner.AWAITED_COPY_WINDOW", 0.3)
    client, b1, b2, copies = await _slow_pair(cluster, 2.0)
    cb = backend_of(client)
    running = asyncio.ensure_future(client.run_task("slow", {"long": True}, timeout=15))
    await eventually(lambda: _async(len(cb._submitted) == 1))  # answered: stored, with a copy, while it runs
    assert not running.done()
    assert [c[3] for c in copies] == ["assigned"]
    task = await running
    assert task.status is TaskStatus.SUCCEEDED and task.result == {"long": True}
    await eventually(lambda: _async([c[3] for c in copies] == ["assigned", "succeeded"]))
    assert b1.counters["first_copies_as_stored"] + b2.counters["first_copies_as_stored"] == 1
    assert not cb._submitted


async def test_a_submission_nobody_waits_on_is_answered_at_once_beside_one_that_is_waited_on(
        cluster: Cluster, monkeypatch: Any) -> None:
    """A client's submissions of one loop pass travel in one envelope: the owner answers those whose submitter waits
    for the outcome (``run_task``) apart, so a plain ``submit_task`` beside them is not held up by their window."""
    monkeypatch.setattr("mesh_core.backends.grpc.tasks.owner.AWAITED_COPY_WINDOW", 10.0)

    async def only_w1(payload: Any) -> Any:
        await asyncio.sleep(2.0)
        return payload

    w1, client = await owner_and_client(cluster, only_w1)
    b1 = backend_of(w1)
    sizes: list[int] = []
    take = b1._take_submissions

    def taking(peer: Peer, submits: Any) -> Any:
        sizes.append(len(submits))
        return take(peer, submits)
    b1._take_submissions = taking
    waited = asyncio.ensure_future(client.run_task("only_w1", {"w": 1}, timeout=15))
    started = time.monotonic()
    task_id = await client.submit_task("only_w1", {"w": 0})
    assert time.monotonic() - started < 1.5 and not waited.done()
    assert sizes == [2]  # one envelope held both
    assert (await waited).status is TaskStatus.SUCCEEDED
    assert (await client.wait_task(task_id, timeout=15)).status is TaskStatus.SUCCEEDED


async def test_an_owners_result_feed_holds_its_own_submissions_only(cluster: Cluster) -> None:
    """An owner's file keeps a result feed for the node's own submissions, which its waiters read; a client hears of
    its tasks over the wire, so the tasks it handed to an owner add nothing to that feed."""
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    client = await cluster.client()
    b1, b2 = backend_of(w1), backend_of(w2)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    await eventually(lambda: _async(all(any(n.node_id == w.node_id and "echo" in n.task_types
                                            for n in client.services.members.workers()) for w in (w1, w2))))
    own = [await w1.run_task("echo", {"own": i}, timeout=15) for i in range(3)]
    theirs = [await client.run_task("echo", {"theirs": i}, timeout=15) for i in range(6)]
    assert all(t.status is TaskStatus.SUCCEEDED for t in own + theirs)
    for backend in (b1, b2):
        rows = await backend.store._read(lambda c: c.execute("SELECT submitter_id, task_id FROM finished").fetchall())
        assert {submitter for submitter, _ in rows} <= {backend.node_id}
    feed1 = await b1.store._read(lambda c: c.execute("SELECT task_id FROM finished").fetchall())
    assert {t.task_id for t in own} <= {task_id for (task_id,) in feed1}


async def test_waited_for_tasks_whose_owner_dies_before_copying_them_end_once_elsewhere(
        cluster: Cluster, monkeypatch: Any) -> None:
    """An owner holding ``run_task`` submissions unanswered (their window open, no copy anywhere) dies: the client,
    which kept each task, hands it to the next worker, and each call returns the task's one outcome from there."""
    monkeypatch.setattr("mesh_core.backends.grpc.tasks.owner.AWAITED_COPY_WINDOW", 10.0)
    client, b1, b2, copies = await _slow_pair(cluster, 1.5)
    cb = backend_of(client)
    calls = [asyncio.ensure_future(client.run_task("slow", {"i": i}, timeout=30)) for i in range(6)]
    # some of them held by w1, unanswered (awaited: no copy until they end)
    await eventually(lambda: _async(any(target == b1.node_id for _, target in cb._answering.values())))
    victim = next(m for m in cluster.nodes if backend_of(m) is b1)
    await cluster.crash(victim)
    finals = await asyncio.gather(*calls)
    assert all(t.status is TaskStatus.SUCCEEDED for t in finals)
    assert {t.node_id for t in finals} == {b2.node_id}  # those that w1 ran ended with it: they ran again on w2
    assert cb.counters["tasks_resubmitted"] >= 1
    assert len({t.task_id for t in finals}) == 6
