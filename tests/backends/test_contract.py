"""Behaviour every backend must give: membership, routing, leases, fencing, memory, restarts."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from mesh_core import AgentMeshManager, NoCapacity, TaskFailed, TaskIdInUse, TaskNotFound, TaskTimeout, UnknownTaskType
from mesh_core.errors import BackendUnavailable, UsageError
from mesh_core.model import NodeStatus, NodeType, TaskStatus

from .conftest import STORE_BACKENDS, Cluster, eventually


def _replica(mesh: AgentMeshManager) -> Any:
    """The node's memory replica (white-box: the contract checks what each replica holds)."""
    return mesh.services.memory.store


def _record(mesh: AgentMeshManager, node_id: str) -> Any:
    """The node record ``mesh`` holds for ``node_id``, or None."""
    return mesh.services.members.table.get(node_id)


def statuses(mesh) -> dict[str, str]:
    return {m.info.name: m.status.value for m in mesh.members()}


# -- membership -------------------------------------------------------------------------

async def test_nodes_join_and_see_each_other(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")

    async def both_see_both():
        return all(statuses(m) == {"a": "active", "b": "active"} for m in (a, b))
    await eventually(both_see_both)


async def test_graceful_stop_is_left_not_dead(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await eventually(lambda: _async(statuses(a).get("b") == "active"))
    await b.stop()
    await eventually(lambda: _async(statuses(a).get("b") == "left"))
    await asyncio.sleep(1.3)  # past the timeout: a leave stays a leave
    assert statuses(a)["b"] == "left"


async def test_crashed_node_goes_suspect_then_dead(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await eventually(lambda: _async(statuses(a).get("b") == "active"))
    seen = []

    async def watch():
        async for event in a.subscribe():
            if getattr(event, "name", None) == "b" and event.kind == "NodeStatusChanged":
                seen.append(event.new)
    watcher = asyncio.create_task(watch())
    await cluster.crash(b)
    await eventually(lambda: _async(statuses(a).get("b") == "dead"), timeout=3)
    await eventually(lambda: _async(len(seen) >= 2))  # the subscriber gets the event a moment after the view
    watcher.cancel()
    assert seen[:2] == ["suspect", "dead"]


async def test_restart_keeps_identity_with_higher_incarnation(cluster: Cluster) -> None:
    a = await cluster.node("a")
    first_id, first_inc = a.node_id, a.incarnation
    await a.sync_memory_item("fact", {"colour": "blue"}, key="sky")
    await a.stop()
    cluster.nodes.remove(a)
    again = await cluster.node("a")
    assert again.node_id == first_id
    assert again.incarnation == first_inc + 1
    assert await again.recall("sky") == {"colour": "blue"}


async def test_two_unnamed_nodes_in_one_folder_are_distinct(cluster: Cluster) -> None:
    x = await cluster.node()
    y = await cluster.node()
    assert x.node_id != y.node_id and x.name != y.name


async def test_rejoin_after_disable(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await eventually(lambda: _async(statuses(a).get("b") == "active"))
    await b.disable()
    await eventually(lambda: _async(statuses(a).get("b") == "left"))
    await b.enable()
    await eventually(lambda: _async(statuses(a).get("b") == "active"))
    assert _record(a, b.node_id).info.incarnation == 2


# -- tasks ------------------------------------------------------------------------------

async def test_submit_and_wait_from_a_client(cluster: Cluster) -> None:
    await cluster.node("w1")
    client = await cluster.client()
    task_id = await client.submit_task("echo", {"hello": "mesh"})
    assert await client.wait_for(task_id, timeout=5) == {"hello": "mesh"}
    task = await client.get_task(task_id)
    assert task.status is TaskStatus.SUCCEEDED and task.node_name == "w1" and task.attempt == 1
    assert "least_loaded" in task.why


async def test_run_task_submits_and_returns_the_final_task(cluster: Cluster) -> None:
    """``run_task``: submit, then the task once final (whatever its status), with ``submit_task``'s options; its
    ``timeout`` bounds the wait."""
    await cluster.node("w1")
    client = await cluster.client()
    task = await client.run_task("echo", {"hello": "run"}, timeout=5, context={"k": "v"})
    assert task.status is TaskStatus.SUCCEEDED and task.result == {"hello": "run"} and task.node_name == "w1"
    assert (await client.get_task(task.task_id)).context["k"] == "v"
    failed = await client.run_task("fail", {"message": "no"}, timeout=5, max_retries=0)
    assert failed.status in (TaskStatus.FAILED, TaskStatus.DEAD_LETTER) and "no" in (failed.error or "")
    with pytest.raises(TaskTimeout):
        await client.run_task("sleep", {"seconds": 5}, timeout=0.2)


async def test_clients_are_not_workers(cluster: Cluster) -> None:
    w = await cluster.node("w1")
    await cluster.client()
    await asyncio.sleep(0.3)
    assert set(statuses(w)) == {"w1"}


async def test_routing_spreads_by_load(cluster: Cluster) -> None:
    await cluster.node("w1")
    await cluster.node("w2")
    client = await cluster.client()
    ids = [await client.submit_task("sleep", {"seconds": 0.3}) for _ in range(6)]
    tasks = [await client.get_task(i) for i in ids]
    by_node = {t.node_name for t in tasks}
    assert by_node == {"w1", "w2"}
    for i in ids:
        await client.wait_for(i, timeout=10)


async def test_preferred_node_type_wins(cluster: Cluster) -> None:
    await cluster.node("gen")
    await cluster.node("hub", node_type="coordination_hub")
    client = await cluster.client()
    task_id = await client.submit_task("echo", 1, preferred_node_types=[NodeType.COORDINATION_HUB])
    await client.wait_for(task_id, timeout=5)
    task = await client.get_task(task_id)
    assert task.node_name == "hub" and "preferred coordination_hub" in task.why


async def test_unknown_task_type_is_refused(cluster: Cluster) -> None:
    await cluster.node("w1")
    client = await cluster.client()
    with pytest.raises(UnknownTaskType):
        await client.submit_task("no_such_type")
    with pytest.raises(UnknownTaskType):
        await client.submit_task("echo", required_capabilities={"quantum"})


async def test_full_mesh_answers_no_capacity(cluster: Cluster) -> None:
    await cluster.node("w1", max_capacity=2, concurrency=1)
    client = await cluster.client()
    for _ in range(2):
        await client.submit_task("sleep", {"seconds": 2})
    with pytest.raises(NoCapacity):
        await client.submit_task("sleep", {"seconds": 2})


async def test_failing_task_retries_then_dead_letters_with_every_error(cluster: Cluster) -> None:
    await cluster.node("w1", **{"task_distribution": {"max_task_retries": 2, "retry_backoff_seconds": 0.01}})
    client = await cluster.client()
    task_id = await client.submit_task("fail", {"message": "boom"}, max_retries=2)
    with pytest.raises(TaskFailed) as info:
        await client.wait_for(task_id, timeout=10)
    assert info.value.status == "dead_letter"
    task = await client.get_task(task_id)
    assert task.attempt == 3 and task.failures == 3
    assert [a.error for a in task.attempts] == ["DiagnosticFailure: boom"] * 3


async def test_handler_timeout_fails_the_attempt(cluster: Cluster) -> None:
    await cluster.node("w1", **{"task_distribution": {"max_task_retries": 0}})
    client = await cluster.client()
    task_id = await client.submit_task("sleep", {"seconds": 5}, timeout_s=0.2, max_retries=0)
    with pytest.raises(TaskFailed) as info:
        await client.wait_for(task_id, timeout=5)
    assert "timed out" in info.value.errors[0]


async def test_task_on_crashed_node_is_rerouted_with_new_attempt(cluster: Cluster) -> None:
    w1 = await cluster.node("w1")
    client = await cluster.client()
    task_id = await client.submit_task("sleep", {"seconds": 0.5})
    await eventually(lambda: _async(bool(w1.services.worker.running)))
    w2 = await cluster.node("w2")
    await cluster.crash(w1)
    assert await client.wait_for(task_id, timeout=8) == {"slept": 0.5}
    task = await client.get_task(task_id)
    assert task.attempt == 2 and task.node_id == w2.node_id
    assert len(task.attempts) == 2 and task.attempts[0].error.startswith("re-routed")


async def test_late_result_from_old_attempt_is_refused(cluster: Cluster) -> None:
    """A paused executor's lease lapses; its work runs elsewhere; its late result is refused."""
    late = asyncio.Event()  # the first attempt ends only once the second has: its result is late on any load

    async def gated(payload, ctx):
        if ctx.attempt == 1:
            await late.wait()
        return {"attempt": ctx.attempt}
    w1 = await cluster.node("w1")
    w1.register_handler("gated", gated)
    client = await cluster.client()
    await eventually(lambda: _async("gated" in (_record(client, w1.node_id) or _Nil).info.task_types), timeout=3)
    task_id = await client.submit_task("gated", {})
    await eventually(lambda: _async(bool(w1.services.worker.running)))
    # Stop w1's heartbeats and lease renewals (as SIGSTOP would) while its handler keeps going; on grpc, where
    # liveness is SWIM's probes, it also stops answering them.
    w1.services.ctx.enabled = False
    w1.services.worker.accepting = False
    silence = getattr(w1.services.ctx.backend, "silence", None)
    if silence is not None:
        silence(True)
    w2 = await cluster.node("w2")
    w2.register_handler("gated", gated)
    await eventually(lambda: _async(w2.status_of(w1.node_id) is NodeStatus.DEAD), timeout=4)
    result = await client.wait_task(task_id, timeout=8)
    assert result.status is TaskStatus.SUCCEEDED and result.node_id == w2.node_id and result.attempt == 2
    assert result.result == {"attempt": 2}
    late.set()
    await eventually(lambda: _async(w1.counters["stale_results"] == 1), timeout=3)
    after = await client.get_task(task_id)
    assert after.node_id == w2.node_id and after.finished_at == result.finished_at


async def test_exactly_once_recording_under_crash(cluster: Cluster) -> None:
    w1 = await cluster.node("w1", concurrency=8)
    await cluster.node("w2", concurrency=8)
    client = await cluster.client()
    # Each task runs long enough that w1 still runs some when the last submission is answered: with 0.05 s, a
    # machine so loaded that a submission takes ~25 ms let w1 finish each task before the next two came, and
    # when those went to w2, w1 ran nothing more (1 run in ~25 under two CPU hogs failed below, w1 idle).
    ids = [await client.submit_task("sleep", {"seconds": 0.2}, task_id=f"t{i:03d}") for i in range(120)]
    await eventually(lambda: _async(len(w1.services.worker.running) > 0))
    await cluster.crash(w1)
    finals = [await client.wait_task(i, timeout=20) for i in ids]
    assert all(t.status is TaskStatus.SUCCEEDED for t in finals)
    assert len({t.task_id for t in finals}) == 120
    for t in await client.services.ctx.backend.get_tasks(ids[:50]):
        successes = [a for a in t.attempts if a.finished_at is not None and a.error is None]
        assert len(successes) == 1, t.attempts


async def test_submitting_the_same_task_id_twice_makes_one_task(cluster: Cluster) -> None:
    await cluster.node("w1")
    client = await cluster.client()
    other = await cluster.client()
    assert await client.submit_task("echo", {"a": 1, "b": [1, 2]}, task_id="same") == "same"
    assert await client.wait_for("same", timeout=5) == {"a": 1, "b": [1, 2]}
    # The same request again, from another client and with its keys in another order: the first task answers.
    assert await other.submit_task("echo", {"b": [1, 2], "a": 1}, task_id="same") == "same"
    assert await other.wait_for("same", timeout=5) == {"a": 1, "b": [1, 2]}
    assert len(await client.list_tasks()) == 1


@pytest.mark.parametrize(("first", "task_type", "payload", "why"), [
    (1, "echo", 2, "a different payload"),
    ({"a": 1}, "echo", {"a": True}, "a different payload"),  # True is not 1: the payloads' bytes are compared
    (1, "sleep", 1, "task type 'echo'"),
])
async def test_a_task_id_is_refused_for_a_different_request(cluster: Cluster, first: object, task_type: str,
                                                             payload: object, why: str) -> None:
    await cluster.node("w1")
    client = await cluster.client()
    await client.submit_task("echo", first, task_id="key")
    with pytest.raises(TaskIdInUse, match=why) as refused:
        await client.submit_task(task_type, payload, task_id="key")
    assert refused.value.exit_code == 2 and refused.value.task_id == "key"
    assert [t.task_id for t in await client.list_tasks()] == ["key"]


async def test_graceful_stop_hands_back_running_work(cluster: Cluster) -> None:
    w1 = await cluster.node("w1", shutdown_grace_seconds=0.1)
    client = await cluster.client()
    task_id = await client.submit_task("sleep", {"seconds": 1.0})
    await eventually(lambda: _async(bool(w1.services.worker.running)))
    w2 = await cluster.node("w2")
    await eventually(lambda: _async(w1.status_of(w2.node_id) is NodeStatus.ACTIVE))
    await w1.stop()
    task = await client.wait_task(task_id, timeout=8)
    assert task.status is TaskStatus.SUCCEEDED and task.node_id == w2.node_id
    assert "handed back" in (task.attempts[0].error or "")


async def test_plugin_handler_via_register(cluster: Cluster) -> None:
    w = await cluster.node("w1")

    async def shout(payload, ctx):
        return {"text": str(payload).upper(), "attempt": ctx.attempt}
    w.register_handler("shout", shout, capabilities={"loud"})
    client = await cluster.client()
    await eventually(lambda: _async("shout" in (_record(client, w.node_id) or _Nil).info.task_types), timeout=3)
    task_id = await client.submit_task("shout", "hi", required_capabilities={"loud"})
    assert await client.wait_for(task_id, timeout=5) == {"text": "HI", "attempt": 1}


# -- memory -----------------------------------------------------------------------------

async def test_memory_write_is_recalled_on_other_nodes(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.sync_memory_item("important_fact", {"fact": "the mesh is alive"}, priority=9, key="alive")

    async def on_b():
        try:
            return await b.recall("alive") == {"fact": "the mesh is alive"}
        except Exception:
            return False
    await eventually(on_b)
    client = await cluster.client()
    assert (await client.recall_item("alive")).value == {"fact": "the mesh is alive"}


async def test_concurrent_writes_converge_latest_wins(cluster: Cluster) -> None:
    a = await cluster.node("a", sync_interval_seconds=60)
    b = await cluster.node("b", sync_interval_seconds=60)
    # Make the writes concurrent: neither node applies the other's write before writing its own.
    for mesh in (a, b):
        for loop_task in mesh.services.ctx.loops:
            if loop_task.get_name() == "memory":
                loop_task.cancel()
    key_a = await a.sync_memory_item("fact", "from a", key="k")
    key_b = await b.sync_memory_item("fact", "from b", key="k")
    assert key_a == key_b == "k"
    own_a, own_b = _replica(a).siblings("fact", "k")[0], _replica(b).siblings("fact", "k")[0]
    assert set(own_a.vv) == {a.node_id} and set(own_b.vv) == {b.node_id}  # truly concurrent
    await eventually(lambda: _synced_with(a, b, "k"))  # a peer-to-peer medium delivers a moment later
    await eventually(lambda: _synced_with(b, a, "k"))
    va, vb = await a.recall_item("k"), await b.recall_item("k")
    expected = max((own_a, own_b), key=lambda i: (i.hlc, i.origin)).value
    assert va.value == vb.value == expected
    assert not va.siblings and not vb.siblings
    assert _replica(a).siblings("fact", "k")[0].vv == _replica(b).siblings("fact", "k")[0].vv == {a.node_id: 1,
                                                                                              b.node_id: 1}
    loser = "from b" if expected == "from a" else "from a"
    assert loser in (_replica(a).history("fact", "k")[0]["value"], _replica(b).history("fact", "k")[0]["value"])


async def test_corrupt_memory_frame_is_quarantined_and_counted(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.services.ctx.backend.publish_memory(a.node_id, [("fact", "bad", b"MF\x01\x00garbage")])
    await a.sync_memory_item("fact", "fine", key="good")
    # the medium moves it aside before any replica sees it (whichever node reads it first), and counts it
    await eventually(lambda: _async(a.counters["quarantined_memory"] + b.counters["quarantined_memory"] >= 1))
    assert any(q.kind == "memory" and "frame" in q.reason for q in await a.services.ctx.backend.quarantined())
    await eventually(lambda: _recall_is(b, "good", "fine"))


# -- helpers ----------------------------------------------------------------------------

async def _async(value):
    return value


async def _recall_is(mesh, key, value) -> bool:
    try:
        return await mesh.recall(key) == value
    except Exception:
        return False


class _Nil:
    class info:  # noqa: N801
        task_types: frozenset = frozenset()


async def test_allowlist_keeps_other_nodes_out(cluster: Cluster) -> None:
    await cluster.node("intruder")
    trusted = await cluster.node("trusted-1", **{"security": {"allowlist": ["trusted-*"]}})
    await eventually(lambda: _async(trusted.counters["refused_nodes"] == 1))
    assert set(statuses(trusted)) == {"trusted-1"}


# -- task engine: retries, replay, cancel, priorities, backpressure, subtasks ----------------

async def test_flaky_task_fails_twice_then_succeeds_on_attempt_three(cluster: Cluster) -> None:
    await cluster.node("w1", **{"task_distribution": {"retry_backoff_seconds": 0.01}})
    await cluster.node("w2", **{"task_distribution": {"retry_backoff_seconds": 0.01}})
    client = await cluster.client()
    task_id = await client.submit_task("fail", {"message": "flaky", "times": 2})
    assert await client.wait_for(task_id, timeout=10) == {"attempt": 3, "failed_before": 2}
    task = await client.get_task(task_id)
    assert task.attempt == 3 and len(task.attempts) == 3
    assert [a.error for a in task.attempts] == ["DiagnosticFailure: flaky", "DiagnosticFailure: flaky", None]


async def test_dead_letter_is_replayed(cluster: Cluster) -> None:
    await cluster.node("w1", **{"task_distribution": {"retry_backoff_seconds": 0.01}})
    client = await cluster.client()
    task_id = await client.submit_task("fail", {"message": "until replay", "times": 2}, max_retries=1)
    with pytest.raises(TaskFailed):
        await client.wait_for(task_id, timeout=10)
    assert (await client.get_task(task_id)).status is TaskStatus.DEAD_LETTER
    assert await client.retry_task(task_id) == "w1"
    assert await client.wait_for(task_id, timeout=10) == {"attempt": 3, "failed_before": 2}
    # every attempt on record as it ended, the replayed-after one too; the last one's end is the task's
    task = await client.get_task(task_id)
    assert [(a.attempt, a.node_name, a.error) for a in task.attempts] == [
        (1, "w1", "DiagnosticFailure: until replay"), (2, "w1", "DiagnosticFailure: until replay"), (3, "w1", None)]
    assert all(a.started_at and a.finished_at and a.finished_at >= a.started_at for a in task.attempts)
    assert task.attempts[-1].finished_at == task.finished_at


async def test_cancel_queued_at_once_and_running_cooperatively(cluster: Cluster) -> None:
    w = await cluster.node("w1", concurrency=1)
    client = await cluster.client()
    running = await client.submit_task("sleep", {"seconds": 30})
    await eventually(lambda: _async(bool(w.services.worker.running)))
    queued = await client.submit_task("sleep", {"seconds": 30})
    assert await client.cancel_task(queued) == {queued: "cancelled"}
    assert (await client.get_task(queued)).status is TaskStatus.CANCELLED
    assert await client.cancel_task(running) == {running: "cancelling"}
    task = await client.wait_task(running, timeout=5)
    assert task.status is TaskStatus.CANCELLED and task.error == "cancelled while running"
    # a medium that confirms a write after readers see it (Redis with WAIT) frees the worker a moment later
    await eventually(lambda: _async(not w.services.worker.running), timeout=2)


async def _committed_and_cancelled(cluster: Cluster, concurrency: int) -> tuple[Any, Any, str, asyncio.Event]:
    """A worker ``w1`` running a "sleep" task whose handler passed its point of no return (TaskContext.commit) and
    waits for the returned event, and a client that asked to cancel it: (worker, client, task id, go on)."""
    from mesh_core.handlers import make_spec

    w = await cluster.node("w1", concurrency=concurrency)
    committed, go_on = asyncio.Event(), asyncio.Event()

    async def effect(payload: Any, ctx: Any) -> str:
        assert ctx.commit()
        committed.set()
        await go_on.wait()
        return "made"

    w.services.ctx.handlers.add(make_spec("sleep", effect, {"basic_processing"}))
    client = await cluster.client()
    task_id = await client.submit_task("sleep", {"seconds": 30})
    await asyncio.wait_for(committed.wait(), 5)
    assert await client.cancel_task(task_id) == {task_id: "cancelling"}
    return w, client, task_id, go_on


async def test_a_cancel_after_the_handler_committed_lets_it_finish_succeeded(cluster: Cluster) -> None:
    # A handler past its point of no return (TaskContext.commit) is not stopped half-way by a cancel: its outcome
    # is recorded as it ends, so a side effect it made is never reported cancelled.
    w, client, task_id, go_on = await _committed_and_cancelled(cluster, concurrency=1)
    await eventually(lambda: _async(bool(w.services.worker.running) and w.services.worker.running[task_id].committed))
    await asyncio.sleep(0.3)  # the cancel reached the worker meanwhile (woken at once), and was not obeyed
    assert not w.services.worker.running[task_id].cancelled
    go_on.set()
    task = await client.wait_task(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.result == "made"


async def test_a_task_cancelled_as_it_runs_past_its_point_of_no_return_is_not_ended_by_a_later_claim(
        cluster: Cluster) -> None:
    # The task is started at enqueue (its wake-up carries it), its cancel asked while it runs past its point of no
    # return. The worker's claims go on (a free slot, polled): they looked for started tasks whose wake-up was not
    # answered, took this one for never run and ended it "cancelled before it ran", so its real outcome was refused.
    from mesh_core.backends.started import GRANT_LOST
    from mesh_core.node.worker import CLAIM_POLL_SECONDS

    _, client, task_id, go_on = await _committed_and_cancelled(cluster, concurrency=2)
    await asyncio.sleep(GRANT_LOST + 3 * CLAIM_POLL_SECONDS)  # claims looked for unanswered wake-ups meanwhile
    assert (await client.get_task(task_id)).status is TaskStatus.RUNNING
    go_on.set()
    task = await client.wait_task(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.result == "made" and task.attempt == 1


async def test_critical_task_never_waits_behind_normal_ones(cluster: Cluster) -> None:
    w = await cluster.node("w1", concurrency=1)
    client = await cluster.client()
    blocker = await client.submit_task("sleep", {"seconds": 0.3})
    await eventually(lambda: _async(bool(w.services.worker.running)))
    normal = [await client.submit_task("echo", i, priority="normal") for i in range(3)]
    low = await client.submit_task("echo", "low", priority="low")
    critical = await client.submit_task("echo", "critical", priority="critical")
    high = await client.submit_task("echo", "high", priority="high")
    for task_id in [blocker, *normal, low, critical, high]:
        await client.wait_for(task_id, timeout=10)
    started = sorted([await client.get_task(t) for t in [*normal, low, critical, high]], key=lambda t: t.started_at)
    assert [t.task_id for t in started] == [critical, high, *normal, low]


async def test_queue_option_waits_in_pending_list_until_a_node_frees_up(cluster: Cluster) -> None:
    await cluster.node("w1", max_capacity=1, concurrency=1)
    client = await cluster.client()
    first = await client.submit_task("sleep", {"seconds": 0.3})
    with pytest.raises(NoCapacity):
        await client.submit_task("echo", "refused")
    waiting = await client.submit_task("echo", "queued", queue=True)
    assert (await client.get_task(waiting)).status is TaskStatus.PENDING
    await client.wait_for(first, timeout=5)
    assert await client.wait_for(waiting, timeout=5) == "queued"


REFUSALS = 40_000  # a leak of 20 bytes per refusal shows as 760 kB past the first 2,000


async def test_refusals_keep_memory_bounded(cluster: Cluster) -> None:
    import tracemalloc
    # Failure detection is not under test here: both share one event loop that the loop below holds for ms at a
    # time under tracemalloc, which on a loaded machine starved their heartbeats (redis: the worker cut off) and
    # SWIM probes (grpc: the worker suspected, so UnknownTaskType). Generous timings keep the worker alive.
    patient = {"heartbeat_interval_seconds": 1.0, "suspect_after_seconds": 20.0, "node_timeout_seconds": 30.0}
    w = await cluster.node("w1", max_capacity=1, concurrency=1, **patient)
    release = asyncio.Event()

    async def hold(payload, ctx):
        await release.wait()
        return "held"
    # The blocker holds the only slot until the refusals are counted, however long they take (traced by
    # tracemalloc, on a busy machine tens of thousands of them can outlast a fixed sleep, which then frees the slot).
    w.register_handler("hold", hold)
    client = await cluster.client(**patient)
    await eventually(lambda: _async("hold" in (_record(client, w.node_id) or _Nil).info.task_types), timeout=3)
    blocker = await client.submit_task("hold")
    tracemalloc.start()
    refused = 0
    held_since = time.monotonic()
    try:
        for i in range(REFUSALS):
            try:
                await client.submit_task("echo", {"i": i})
            except NoCapacity:
                refused += 1
            if time.monotonic() - held_since > 0.01:
                # The worker shares this event loop: let its heartbeat and failure detector run at least every
                # 10 ms, however slow the machine (refusals are local and never yield; on grpc a loop held for
                # long makes the client's SWIM suspect the worker, which then takes no task at all).
                await asyncio.sleep(0.001)
                held_since = time.monotonic()
            if i == 2_000:
                baseline = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    counts = await client.services.ctx.backend.task_counts()
    release.set()
    assert refused == REFUSALS
    assert grown < 800_000, f"memory grew by {grown} bytes over {REFUSALS - 2_000:,} refusals"
    assert counts.get("assigned", 0) + counts.get("running", 0) == 1
    assert await client.wait_for(blocker, timeout=10) == "held"


async def test_parent_fans_out_fifty_children_across_three_nodes(cluster: Cluster) -> None:
    async def fan_out(payload, ctx):
        ids = [await ctx.submit("echo", {"i": i}) for i in range(payload["n"])]
        return [await ctx.wait(i, timeout=20) for i in ids]
    nodes = [await cluster.node(f"w{i}", concurrency=8) for i in range(3)]
    for node in nodes:
        node.register_handler("fan_out", fan_out)
    client = await cluster.client()
    await eventually(lambda: _async(all("fan_out" in m.info.task_types for m in client.members())
                                    and len(client.members()) == 3), timeout=3)
    parent = await client.submit_task("fan_out", {"n": 50}, context={"caller": "test"})
    results = await client.wait_for(parent, timeout=30)
    assert results == [{"i": i} for i in range(50)]
    children = await client.services.ctx.backend.list_tasks(parent_id=parent)
    assert len(children) == 50
    assert {c.context["trace_id"] for c in children} == {parent}
    assert {c.context["caller"] for c in children} == {"test"}
    assert len({c.node_id for c in children}) == 3
    tree = await client.task_tree(parent)
    assert len(tree["children"]) == 50


async def test_cancelling_a_parent_cancels_its_children(cluster: Cluster) -> None:
    async def spawner(payload, ctx):
        ids = [await ctx.submit("sleep", {"seconds": 30}) for _ in range(3)]
        return [await ctx.wait(i) for i in ids]
    w = await cluster.node("w1", concurrency=8)
    w.register_handler("spawner", spawner)
    client = await cluster.client()
    await eventually(lambda: _async("spawner" in (_record(client, w.node_id) or _Nil).info.task_types), timeout=3)
    parent = await client.submit_task("spawner")
    await eventually(lambda: _async(len(w.services.worker.running) == 4), timeout=5)
    outcomes = await client.cancel_task(parent)
    assert len(outcomes) == 4 and set(outcomes.values()) == {"cancelling"}
    for task_id in outcomes:
        assert (await client.wait_task(task_id, timeout=5)).status is TaskStatus.CANCELLED


async def test_a_client_can_wait_for_a_task_another_client_submitted(cluster: Cluster) -> None:
    await cluster.node("w1")
    first = await cluster.client()
    task_id = await first.submit_task("sleep", {"seconds": 0.3})
    second = await cluster.client()
    assert await second.wait_for(task_id, timeout=5) == {"slept": 0.3}


async def test_a_result_that_lands_before_anyone_waits_is_kept_for_the_waiter(cluster: Cluster) -> None:
    await cluster.node("w1")
    client = await cluster.client()
    ids = [await client.submit_task("echo", {"i": i}) for i in range(20)]
    await eventually(lambda: _finished(client, ids))
    results = [await client.wait_for(task_id, timeout=5) for task_id in ids]
    assert results == [{"i": i} for i in range(20)]
    task = await client.wait_task(ids[0], timeout=5)  # a second wait reads the stored task
    assert task.status is TaskStatus.SUCCEEDED and task.result == {"i": 0} and task.node_name == "w1"


async def test_a_large_result_reaches_its_waiter_whole(cluster: Cluster) -> None:
    await cluster.node("w1")
    client = await cluster.client()
    payload = {"blob": "x" * 20_000, "noise": os.urandom(4000).hex(), "n": list(range(500))}
    task_id = await client.submit_task("echo", payload)
    task = await client.wait_task(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.result == payload and task.attempt == 1


async def test_retention_deletes_old_finished_tasks_and_extra_dead_letters_never_unfinished(cluster: Cluster) -> None:
    w1 = await cluster.node("w1", **{"task_distribution": {"tasks_kept": 20, "dead_letters_kept": 3}})
    client = await cluster.client()
    sleeper = await client.submit_task("sleep", {"seconds": 30})  # the oldest task, still running at the end
    echoes = [await client.submit_task("echo", i) for i in range(40)]
    fails = [await client.submit_task("fail", {"message": f"no {i}"}, max_retries=0) for i in range(6)]
    for task_id in echoes + fails:
        await client.wait_task(task_id, timeout=10)
    assert (await client.get_task(sleeper)).status is TaskStatus.RUNNING

    await w1.prune_tasks()
    # The sweeping node (w1) also prunes by itself every few seconds: count what went, whoever called it.
    assert w1.counters["tasks_pruned"] == 26 + 3
    assert await w1.prune_tasks() == 0  # nothing more to do
    assert (await client.get_task(sleeper)).status is TaskStatus.RUNNING
    kept = {t.task_id for t in await client.services.ctx.backend.get_tasks(echoes + fails, with_attempts=False)}
    assert kept == set(echoes[-14:]) | set(fails[-3:])  # the newest 20 tasks, less 3 surplus dead letters
    counts = await client.services.ctx.backend.task_counts()
    assert counts.get("succeeded") == 14 and counts.get("dead_letter") == 3 and counts.get("running") == 1
    assert [t.task_id for t in await client.services.ctx.backend.list_tasks(TaskStatus.DEAD_LETTER)] == fails[-3:][::-1]
    with pytest.raises(TaskNotFound):
        await client.get_task(echoes[0])
    assert w1.counters["tasks_pruned"] == 29


async def test_api_key_keeps_out_unsigned_nodes_tasks_and_memory(cluster: Cluster) -> None:
    keyed = {"security": {"api_key": "mesh-secret"}}
    ran: list[int] = []
    w1 = await cluster.node("w1", **keyed)
    w1.register_handler("count", lambda payload: ran.append(payload) or len(ran))
    rogue = await cluster.node("rogue")  # no key: its records are unsigned
    await cluster.node("wrong", security={"api_key": "another-secret"})
    client = await cluster.client(**keyed)
    if cluster.backend == "grpc":
        # The keyed nodes refuse the others' calls at the wire, and the records they hear of them (on the streams
        # they dial) by signature: each way counted once per node where it happened.
        await eventually(lambda: _async(w1.counters["refused_nodes"] >= 2 and set(statuses(client)) == {"w1"}))
    else:
        await eventually(lambda: _async(client.counters["refused_nodes"] == 2 and set(statuses(client)) == {"w1"}))
    ids = [await client.submit_task("echo", i) for i in range(6)]
    assert {(await client.wait_task(t, timeout=5)).node_name for t in ids} == {"w1"}  # never the untrusted two

    outsider = await cluster.client()  # no key: it trusts everyone, but the keyed worker does not trust it
    if cluster.backend == "grpc":
        # On gRPC the key is checked on every call (metadata), before anything is read: the outsider may hear of
        # the keyed worker from the keyless nodes' gossip, but every call it makes there is refused at the wire.
        await eventually(lambda: _async(w1.counters["refused_nodes"] >= 3))
        with pytest.raises((UnknownTaskType, NoCapacity, BackendUnavailable)):
            await outsider.submit_task("count", 7)
        assert ran == []
    else:
        await eventually(lambda: _async(any("count" in m.info.task_types for m in outsider.members())))
        task = await outsider.wait_task(await outsider.submit_task("count", 7), timeout=5)
        assert task.status is TaskStatus.FAILED and task.attempt == 1 and "api_key" in (task.error or "")
        assert ran == [] and w1.counters["refused_tasks"] == 1
    await eventually(lambda: _async(any("count" in m.info.task_types for m in client.members())))
    signed = await client.wait_task(await client.submit_task("count", 8), timeout=5)
    assert signed.status is TaskStatus.SUCCEEDED and ran == [8]

    await rogue.sync_memory_item("fact", "forged", key="k1")
    await client.sync_memory_item("fact", "genuine", key="k2")
    await eventually(lambda: _async(_replica(w1).siblings("fact", "k2") != []))
    if cluster.backend != "grpc":  # on gRPC the rogue's push never gets past the wire (counted above)
        await eventually(lambda: _async(w1.counters["refused_memory"] >= 1))
    assert _replica(w1).siblings("fact", "k1") == [] and (await w1.recall("k2")) == "genuine"


async def test_compaction_drops_applied_log_entries_and_a_late_node_still_converges(cluster: Cluster) -> None:
    # No anti-entropy round of a's or b's within the test (its first falls somewhere in the first hour): a round
    # re-sends a node's own writes to the log, and one between the compaction and the read below added an entry.
    a = await cluster.node("a", sync_interval_seconds=3600)
    b = await cluster.node("b", sync_interval_seconds=3600)
    for i in range(30):
        await a.sync_memory_item("fact", {"i": i}, key=f"k{i}")
    await b.sync_memory_item("fact", "second version", key="k0")

    _, last = await a.services.ctx.backend.read_memory(None, 1000)

    async def everyone_applied_everything() -> bool:
        acks = await a.services.ctx.backend.memory_acks()
        return all(a.services.ctx.backend.cursor_reached(acks.get(n.node_id), last) for n in (a, b))
    await eventually(everyone_applied_everything, timeout=10)
    assert len(list(_replica(b).keys("*"))) == 30 and await a.recall("k0") == "second version"
    await a.compact_memory()  # the sweeping node also does this by itself every few seconds
    await b.compact_memory()
    after, _ = await a.services.ctx.backend.read_memory(None, 1000)
    assert len(after) <= 1  # the entry at the slowest cursor may stay
    dropped = a.counters["memory_log_compacted"] + b.counters["memory_log_compacted"]
    if cluster.backend == "grpc":  # no shared log: each node holds (and compacts) its own copy of it
        after_b, _ = await b.services.ctx.backend.read_memory(None, 1000)
        assert len(after_b) <= 1 and dropped == 62 - len(after) - len(after_b)
    else:
        assert dropped == 31 - len(after)

    late = await cluster.node("late", sync_interval_seconds=1)  # never saw the dropped entries
    await eventually(lambda: _async(len(list(_replica(late).keys("*"))) == 30), timeout=10)
    assert await late.recall("k0") == "second version" and await late.recall("k29") == {"i": 29}
    client = await cluster.client()
    assert await client.recall("k7") == {"i": 7}  # a key read straight from the mesh still finds it
    await client.sync_now()  # a fresh replica starts from every key's newest entries, then the stream
    assert len(list(_replica(client).keys("*"))) == 30 and await client.recall("k0") == "second version"


async def test_a_live_client_does_not_hold_compaction_back(cluster: Cluster) -> None:
    # A client (a one-shot command, an observer's cockpit) reads no log and acks none. While one was live, the
    # compaction of grpc_mesh nodes waited for its ack: no node's log was ever compacted while a cockpit stayed open.
    a = await cluster.node("a", sync_interval_seconds=3600)
    b = await cluster.node("b", sync_interval_seconds=3600)
    client = await cluster.client()
    await client.sync_memory_items("fact", {f"k{i}": i for i in range(30)})
    for node in (a, b):
        await eventually(lambda node=node: _async(len(list(_replica(node).keys("k*"))) == 30), timeout=10)
        await _applied_and_acked(node, node)
    await _applied_and_acked(a, b)
    await _applied_and_acked(b, a)
    dropped = await a.compact_memory() + await b.compact_memory()
    assert dropped >= 29, (dropped, a.counters, b.counters)


async def test_a_batch_of_writes_reaches_every_node_and_is_all_or_nothing(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.sync_memory_item("fact", "old", key="k0")
    keys = await a.sync_memory_items("fact", {f"k{i}": {"i": i} for i in range(200)})
    assert keys == [f"k{i}" for i in range(200)]
    await eventually(lambda: _async(len(list(_replica(b).keys("k*"))) == 200), timeout=10)
    assert await b.recall("k0") == {"i": 0} and await b.recall("k199") == {"i": 199}
    assert (await b.recall_item("k0")).siblings == ()  # the batch write saw the old value: no conflict

    client = await cluster.client()
    await client.sync_memory_items("fact", {"k1": "from a client", "new": [1, 2]})
    for node in (a, b):
        await eventually(lambda node=node: _async(_replica(node).siblings("fact", "new") != []), timeout=10)
        assert await node.recall("k1") == "from a client" and (await node.recall_item("k1")).siblings == ()

    with pytest.raises(Exception, match="cannot be encoded|max_item_bytes"):
        await a.sync_memory_items("fact", {"fine": 1, "bad": object()})
    assert _replica(a).siblings("fact", "fine") == []  # nothing of a refused batch is kept


async def _applied_and_acked(node: AgentMeshManager, log_of: AgentMeshManager) -> None:
    """Wait until ``node`` has applied the log ``log_of`` holds and posted its ack (at most every
    ACK_EVERY_SECONDS): from then on compaction counts its place."""
    log = log_of.services.ctx.backend
    _, last = await log.read_memory(None, 100_000)

    async def acked() -> bool:
        await node.sync_now()
        return log.cursor_reached((await log.memory_acks()).get(node.node_id), last)
    await eventually(acked, timeout=10)


async def test_a_node_back_from_an_absence_past_compaction_converges_without_waiting_for_anti_entropy(
        cluster: Cluster) -> None:
    quiet = {"sync_interval_seconds": 60}  # anti-entropy would take a minute: the stream and the horizon must do
    # a keeps the log b has not applied for half a second after b's last heartbeat, then compacts past it
    a = await cluster.node("a", **quiet, **{"memory_sync.keep_log_for_absent_seconds": 0.5})
    b = await cluster.node("b", **quiet)
    await a.sync_memory_item("fact", "before", key="seen")
    await _applied_and_acked(b, a)
    await b.stop()  # away; its replica and cursor stay on disk
    await a.sync_memory_items("fact", {f"k{i}": i for i in range(20)})
    await eventually(a.compact_memory)  # b is gone: a alone decides what every active node has applied
    assert await a.services.ctx.backend.memory_horizon() is not None
    b = await cluster.node("b", **quiet)
    await eventually(lambda: _async(len(list(_replica(b).keys("k*"))) == 20), timeout=5)
    assert await b.recall("k19") == 19 and await b.recall("seen") == "before"
    if cluster.backend != "grpc":  # no shared log there: b pulls from its peers' copies (tests/grpc/test_memory.py)
        assert b.counters["memory_rebootstraps"] == 1  # every key's newest entries again: what it missed was gone


async def test_a_node_away_for_a_moment_applies_only_the_log_it_missed(cluster: Cluster) -> None:
    # A node stopped (a restart, an upgrade) or declared dead (a pause, a cut link) that is back within
    # memory_sync.keep_log_for_absent_seconds keeps its place in the log. Compacting past it at once sent it, on
    # its return, to re-read every key of the mesh's memory (its bootstrap) instead of the entries it missed.
    quiet = {"sync_interval_seconds": 3600}
    a = await cluster.node("a", **quiet)
    b = await cluster.node("b", **quiet)
    await a.sync_memory_items("fact", {f"old{i}": i for i in range(30)})
    await _applied_and_acked(b, a)
    await b.stop()
    await eventually(lambda: _async(statuses(a).get("b") not in ("active", "suspect", None)), timeout=10)
    await a.sync_memory_items("fact", {f"k{i}": i for i in range(20)})
    await _applied_and_acked(a, a)
    await a.compact_memory()
    log = a.services.ctx.backend
    horizon = await log.memory_horizon()
    assert horizon is None or log.cursor_reached(b.services.sync.cursor, horizon)
    b = await cluster.node("b", **quiet)
    await eventually(lambda: _async(len(list(_replica(b).keys("k*"))) == 20), timeout=5)
    assert b.counters["memory_rebootstraps"] == 0 and await b.recall("k19") == 19 and await b.recall("old3") == 3


@pytest.mark.parametrize("cluster", STORE_BACKENDS, indirect=True)
async def test_compaction_keeps_the_log_a_suspect_node_has_not_read_and_it_catches_up_from_there(
        cluster: Cluster) -> None:
    # A node paused for a moment (suspect: maybe alive) is still to read the log. Compacting past it sent it back,
    # once it went on, to re-read every key of the mesh's memory (its bootstrap) instead of the entries it missed.
    patient = {"suspect_after_seconds": 0.5, "node_timeout_seconds": 60.0, "sync_interval_seconds": 3600}
    a = await cluster.node("a", **patient)
    b = await cluster.node("b", **patient)
    await a.sync_memory_item("fact", "before", key="seen")
    await eventually(lambda: _async(_replica(b).siblings("fact", "seen") != []))
    paused = [t for t in b.services.ctx.loops if t.get_name() in ("heartbeat", "memory")]
    for loop_task in paused:
        loop_task.cancel()
    await eventually(lambda: _async(statuses(a).get("b") == "suspect"), timeout=5)
    await a.sync_memory_items("fact", {f"k{i}": i for i in range(20)})
    log = a.services.ctx.backend
    await _applied_and_acked(a, a)  # acks go out at most every ACK_EVERY_SECONDS
    await a.compact_memory()
    sync = b.services.sync
    horizon = await log.memory_horizon()
    assert horizon is None or log.cursor_reached(sync.cursor, horizon)
    assert (await sync.sync_now())["applied"] == 20  # from the log, where it stopped
    assert b.counters["memory_rebootstraps"] == 0 and await b.recall("k19") == 19


async def _finished(mesh, ids) -> bool:
    return all(t.status.is_final for t in await mesh.services.ctx.backend.get_tasks(ids, with_attempts=False))


# -- memory: every conflict strategy, resolution, history -------------------------------------

async def _two_concurrent(cluster: Cluster, strategy: str, value_a, value_b, **extra):
    """Two nodes write one key without seeing each other's write, then exchange."""
    memory_sync = {"conflict_resolution_strategy": strategy, **extra}
    a = await cluster.node("a", sync_interval_seconds=60, memory_sync=memory_sync)
    b = await cluster.node("b", sync_interval_seconds=60, memory_sync=memory_sync)
    for mesh in (a, b):
        for loop_task in mesh.services.ctx.loops:
            if loop_task.get_name() == "memory":
                loop_task.cancel()
    await eventually(lambda: _async(len(a.members()) == 2 and len(b.members()) == 2))
    await a.sync_memory_item("fact", value_a, key="k")
    await b.sync_memory_item("fact", value_b, key="k")
    await eventually(lambda: _synced_with(a, b, "k"))  # a peer-to-peer medium delivers a moment later
    await eventually(lambda: _synced_with(b, a, "k"))
    return a, b


async def _synced_with(mesh, other, key: str) -> bool:
    """Read the memory log; True once ``mesh``'s replica has seen ``other``'s write to ``key``."""
    await mesh.sync_now()
    siblings, sources = _replica(mesh).state("fact", key)
    return any(other.node_id in s.vv for s in (*siblings, *sources))


async def test_merge_compatible_merges_disjoint_fields(cluster: Cluster) -> None:
    a, b = await _two_concurrent(cluster, "merge_compatible", {"name": "x", "tags": ["p"]}, {"age": 3, "tags": ["q"]})
    for mesh in (a, b):
        found = await mesh.recall_item("k")
        assert found.value == {"name": "x", "age": 3, "tags": ["p", "q"]} and not found.siblings
        assert mesh.conflicts() == []


async def test_merge_compatible_falls_back_to_manual_naming_the_paths(cluster: Cluster) -> None:
    a, b = await _two_concurrent(cluster, "merge_compatible", {"city": "Oslo", "n": 1}, {"city": "Rome", "n": 1})
    (ca,), (cb,) = a.conflicts(), b.conflicts()
    assert ca.conflict_id == cb.conflict_id and "city" in ca.reason and len(ca.siblings) == 2


async def test_source_priority_prefers_the_ranked_node(cluster: Cluster) -> None:
    a, b = await _two_concurrent(cluster, "source_priority", "from a", "from b", source_priority=["a"])
    assert (await a.recall("k")) == (await b.recall("k")) == "from a"  # a ranks higher though b wrote later


async def test_version_vector_keeps_siblings_until_a_write_that_saw_them(cluster: Cluster) -> None:
    a, b = await _two_concurrent(cluster, "version_vector", "from a", "from b")
    for mesh in (a, b):
        found = await mesh.recall_item("k")
        assert sorted(s.value for s in found.siblings) == ["from a", "from b"]
        assert mesh.conflicts() == []
    await a.sync_memory_item("fact", "settled", key="k")

    async def b_settled() -> bool:
        await b.sync_now()
        return await _recall_is(b, "k", "settled")
    await eventually(b_settled)
    for mesh in (a, b):
        found = await mesh.recall_item("k")
        assert found.value == "settled" and not found.siblings


async def test_manual_conflict_is_resolved_once_for_everyone(cluster: Cluster) -> None:
    a, b = await _two_concurrent(cluster, "manual", {"v": "a"}, {"v": "b"})
    (conflict,) = a.conflicts()
    assert [c.conflict_id for c in b.conflicts()] == [conflict.conflict_id]
    assert (await a.recall_item("k")).value == {"v": "a"}  # the local sibling, flagged
    events = []

    async def watch():
        async for event in b.subscribe():
            events.append(event.kind)
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.01)  # let the watcher subscribe
    await a.resolve_conflict(conflict.conflict_id, "keep-remote")

    async def b_resolved() -> bool:
        await b.sync_now()
        return b.conflicts() == []
    await eventually(b_resolved)
    await asyncio.sleep(0.01)
    watcher.cancel()
    for mesh in (a, b):
        found = await mesh.recall_item("k")
        assert found.value == {"v": "b"} and not found.siblings
        assert mesh.conflicts() == []
    assert "ConflictResolved" in events and "ConflictOpened" not in events


async def test_history_and_rollback(cluster: Cluster) -> None:
    a = await cluster.node("a")
    for value in ("one", "two", "three"):
        await a.sync_memory_item("fact", value, key="h")
    history = await a.history("h")
    assert [h["value"] for h in history] == ["two", "one"]
    await a.rollback("h", history[-1]["version"])
    assert await a.recall("h") == "one"
    b = await cluster.node("b")
    await eventually(lambda: _recall_is(b, "h", "one"))
    await a.forget("h")
    await eventually(lambda: _missing(b, "h"))


async def _missing(mesh, key) -> bool:
    try:
        await mesh.recall(key)
    except Exception:
        return True
    return False


# Drops and corrupts an entry in a shared log, which gRPC has not; gRPC's own version drops and corrupts pushes on the
# wire: tests/grpc/test_memory.py::test_anti_entropy_repairs_a_write_a_replica_skipped_and_one_corrupted_on_the_way
@pytest.mark.parametrize("cluster", STORE_BACKENDS, indirect=True)
async def test_anti_entropy_repairs_a_dropped_and_a_corrupted_write(cluster: Cluster) -> None:
    a = await cluster.node("a", sync_interval_seconds=60)
    b = await cluster.node("b", sync_interval_seconds=60)
    for loop_task in b.services.ctx.loops:
        if loop_task.get_name() == "memory":
            loop_task.cancel()
    await eventually(lambda: _async(len(a.members()) == 2 and len(b.members()) == 2))
    await b.sync_now()  # b is an established replica: from here on it reads only the stream
    await a.sync_memory_item("fact", "dropped on the way", key="lost")
    _, head = await b.services.ctx.backend.read_memory(b.services.sync.cursor, 10_000)
    b.services.sync.cursor = head  # b never sees that entry
    publish = a.services.ctx.backend.publish_memory

    async def flip_a_byte(origin, entries, broadcast=True):
        mt, key, frame = entries[0]
        return await publish(origin, [(mt, key, frame[:-1] + bytes([frame[-1] ^ 0xFF]))], broadcast=broadcast)
    a.services.ctx.backend.publish_memory = flip_a_byte  # type: ignore[method-assign]
    await a.sync_memory_item("fact", "corrupted on the way", key="mangled")
    a.services.ctx.backend.publish_memory = publish  # type: ignore[method-assign]
    await b.sync_now()
    # the medium moved the corrupted entry aside (whichever node read it first) before any replica applied it
    assert a.counters["quarantined_memory"] + b.counters["quarantined_memory"] >= 1
    assert await _missing(b, "lost") and await _missing(b, "mangled")
    await b.anti_entropy()
    repaired = await a.anti_entropy()
    assert repaired["buckets"] >= 1 and repaired["resent"] >= 2
    await b.sync_now()
    assert await b.recall("lost") == "dropped on the way"
    assert await b.recall("mangled") == "corrupted on the way"
    assert (await b.anti_entropy())["buckets"] == 0 and (await a.anti_entropy())["buckets"] == 0


async def test_master_slave_orders_writes_through_the_primary_and_fails_over(cluster: Cluster) -> None:
    ms = {"memory_sync": {"strategy": "master_slave"}}
    nodes = [await cluster.node(f"m{i}", **ms) for i in range(3)]
    client = await cluster.client(**ms)
    await eventually(lambda: _async(all(len(n.members()) == 3 and n.memory_primary for n in nodes)), timeout=5)
    primary = next(n for n in nodes if n.memory_primary == n.node_id)
    assert {n.memory_primary for n in nodes} == {primary.node_id}
    follower = next(n for n in nodes if n is not primary)
    for i in range(10):
        await follower.sync_memory_item("fact", i, key=f"before-{i}")
    await client.sync_memory_item("fact", "from a client", key="client-write")
    for i in range(10):  # every write was made by the primary: one writer, so no conflicts are possible
        found = _replica(primary).siblings("fact", f"before-{i}")
        assert [s.origin for s in found] == [primary.node_id] and found[0].value == i
    await cluster.crash(primary)
    survivors = [n for n in nodes if n is not primary]
    await eventually(lambda: _async(all(n.memory_primary and n.memory_primary != primary.node_id for n in survivors)
                                    and len({n.memory_primary for n in survivors}) == 1), timeout=8)
    for i in range(5):
        await survivors[0].sync_memory_item("fact", f"after-{i}", key=f"after-{i}")
    for node in survivors:
        await node.sync_now()
        for i in range(10):  # no acknowledged write lost
            assert await node.recall(f"before-{i}") == i
        assert await node.recall("client-write") == "from a client"
        for i in range(5):
            assert await node.recall(f"after-{i}") == f"after-{i}"


async def test_peer_to_peer_gossip_reaches_every_node_through_relays(cluster: Cluster) -> None:
    p2p = {"memory_sync": {"strategy": "peer_to_peer", "gossip_fanout": 1}, "sync_interval_seconds": 60}
    nodes = [await cluster.node(f"g{i}", **p2p) for i in range(5)]
    await eventually(lambda: _async(all(len(n.members()) == 5 for n in nodes)), timeout=5)
    for i in range(5):
        await nodes[0].sync_memory_item("fact", f"rumour {i}", key=f"r{i}")
    # Peers pass it on: looked at before any recall, as a recall reads the log itself, and a node that learned the
    # rumours that way had nothing new left for its sync loop to relay (on a shared SQLite file, all four did once).
    await eventually(lambda: sum(n.counters["gossip_sent"] for n in nodes[1:]) >= 1, timeout=5)
    for node in nodes[1:]:
        for i in range(5):
            await eventually(lambda node=node, i=i: _recall_is(node, f"r{i}", f"rumour {i}"), timeout=5)
    assert nodes[0].counters["gossip_sent"] == 5  # the writer woke one peer per write, no broadcast


async def test_a_bad_timeout_is_a_usage_error(cluster: Cluster) -> None:
    client = await cluster.client()
    with pytest.raises(UsageError, match="timeout_s"):
        await client.submit_task("echo", 1, timeout_s=-1)
