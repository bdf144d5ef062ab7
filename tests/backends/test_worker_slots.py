"""On grpc_mesh, where recording an outcome waits for the owner and its backup, a worker's slot belongs to the
handler: once a handler returns, the next task may start while the outcome is still being recorded, and the tasks a
node holds, running or being recorded, stay within twice its concurrency (a medium slow to record holds up new work
instead of gathering outcomes without bound). On a shared store (one quick write) the slot stays taken until the
outcome is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mesh_core import AgentMeshManager
from mesh_core.backends.contracts import Completion
from mesh_core.model import TaskStatus
from mesh_testing import eventually

from .conftest import Cluster


async def _serves(client: AgentMeshManager, worker: AgentMeshManager, task_type: str) -> None:
    def known() -> bool:
        member = client.services.members.table.get(worker.node_id)
        return member is not None and task_type in member.info.task_types
    await eventually(known, timeout=5)


async def test_a_slot_is_free_for_the_next_task_while_an_outcome_is_recorded_on_grpc_only(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    w1 = await cluster.node("w1", concurrency=1)
    ran: list[str] = []

    async def note(payload: str) -> str:
        ran.append(payload)
        return payload

    w1.register_handler("note", note)
    worker = w1.services.worker
    transport = worker.transport
    assert transport.slow_recording is (cluster.backend == "grpc")
    complete = transport.complete
    recording = asyncio.Event()  # the medium records nothing until it is set
    held: list[str] = []

    async def slow_complete(completions: Sequence[Completion]) -> list[bool]:
        held.extend(c.task_id for c in completions)
        await recording.wait()
        return await complete(completions)

    monkeypatch.setattr(transport, "complete", slow_complete)
    client = await cluster.client()
    await _serves(client, w1, "note")
    first = await client.submit_task("note", "a", task_id="a")
    await eventually(lambda: held == ["a"], timeout=5)
    assert worker.working == 0 and w1.services.members.running() == 0  # its load: no handler runs
    second = await client.submit_task("note", "b", task_id="b")
    if transport.slow_recording:
        await eventually(lambda: held == ["a", "b"], timeout=5)  # ran in a's slot while a's outcome waits
        assert ran == ["a", "b"]
        third = await client.submit_task("note", "c", task_id="c")
        await asyncio.sleep(0.5)
        assert ran == ["a", "b"] and len(worker.running) == 2  # 2 x concurrency held: c waits for a recording
        ids = [first, second, third]
    else:
        await asyncio.sleep(0.5)
        assert ran == ["a"] and held == ["a"]  # a's slot is taken until its outcome is stored
        ids = [first, second]
    recording.set()
    for task_id in ids:
        task = await client.wait_task(task_id, timeout=10)
        assert task.status is TaskStatus.SUCCEEDED and task.result == task_id and task.attempt == 1
    assert ran == held == ids
    await eventually(lambda: not worker.running, timeout=5)
