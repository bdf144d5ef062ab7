"""grpc_mesh: an owner back from the dead lets go of the tasks another node took over meanwhile, even when the
notice is lost on the way: the new owner tells it again until the old owner says it let them go (``released``).
Told once and lost, the task kept two owners of record."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from mesh_core.backends.contracts import Assignment
from mesh_core.backends.grpc.tasks import takeover
from mesh_core.model import NodeStatus, Task

from ..backends.conftest import Cluster, eventually
from .conftest import backend_of


async def _async(value: Any) -> Any:
    return value


async def test_a_lost_superseded_notice_is_told_again_until_the_old_owner_lets_the_task_go(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(takeover, "SUPERSEDED_RETELL_SECONDS", 0.5)
    old = await cluster.node("old")
    new = await cluster.node("new")
    b_old, b_new = backend_of(old), backend_of(new)
    await eventually(lambda: _async(b_new.status_of(b_old.node_id) is NodeStatus.ACTIVE
                                    and b_old.status_of(b_new.node_id) is NodeStatus.ACTIVE), timeout=10)
    # a task the old owner still holds a record of, which the new one took over while the old was held dead
    task = Task(task_id=uuid.uuid4().hex, task_type="nobody-serves-it", payload={}, submitter_id=b_old.node_id,
                submitted_at=time.time())
    await b_old.store.enqueue([Assignment(task, None, None, "held here", 100, 0.0)])
    assert [t.task_id for t in await b_old.store.get_tasks([task.task_id], with_attempts=False)] == [task.task_id]
    b_new._taken_from[b_old.node_id] = {task.task_id: None}

    lost: list[Any] = []
    send = b_new._send_now

    def lose_the_first_notice(node_id: str, envelope: Any) -> bool:
        if envelope.handovers and not lost:
            lost.append(envelope)
            return True  # taken by the wire, never delivered
        return send(node_id, envelope)

    b_new._send_now = lose_the_first_notice
    b_new._tell_superseded(b_old.node_id)  # as when the old owner is seen active again
    assert len(lost) == 1

    async def let_go() -> bool:
        return not await b_old.store.get_tasks([task.task_id], with_attempts=False)
    await eventually(let_go, timeout=10)
    await eventually(lambda: _async(b_old.node_id not in b_new._taken_from), timeout=5)  # it said so: told no more
    assert b_new.counters["superseded_retold"] >= 1
    told = b_new.counters["superseded_retold"]
    await asyncio.sleep(1.5)  # past a retell and a turn of the loop that retells: nothing more once released
    assert b_new.counters["superseded_retold"] == told
