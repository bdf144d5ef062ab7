"""Task progress on every backend: a handler's reports travel with its lease renewals and any node reads them."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from mesh_core.model import TaskProgress, TaskStatus

from .conftest import Cluster, eventually, sqlite_file_with_a_claimed_task


async def serving(reader: Any, worker: Any, task_type: str) -> None:
    """Until ``reader`` sees ``worker`` take ``task_type``."""
    async def ready() -> bool:
        return any(m.info.node_id == worker.node_id and task_type in m.info.task_types for m in reader.members())
    await eventually(ready, timeout=3)


async def test_progress_travels_with_renewals_and_stays_on_the_final_task(cluster: Cluster) -> None:
    go_on = asyncio.Event()

    async def long(payload, ctx):
        ctx.progress(0.25, "step 1/4")
        ctx.progress(0.5, "step 2/4")  # only the latest report travels
        await go_on.wait()
        return "done"
    worker = await cluster.node("w")
    worker.register_handler("long", long)
    reader = await cluster.client()  # another node: it sees only what the medium holds

    await serving(reader, worker, "long")
    task_id = await reader.submit_task("long", {})

    async def reported() -> bool:
        task = await reader.get_task(task_id)
        return task.status is TaskStatus.RUNNING and (task.progress or 0) >= 0.5
    await eventually(reported, timeout=5)  # a few heartbeats (the renewal cadence) at most
    running = await reader.get_task(task_id)
    assert running.progress == 0.5 and running.progress_message == "step 2/4"
    go_on.set()
    final = await reader.wait_task(task_id, timeout=5)
    assert final.status is TaskStatus.SUCCEEDED
    again = await reader.get_task(task_id)
    assert again.progress == 0.5 and again.progress_message == "step 2/4"


async def test_a_retried_task_shows_no_progress_until_its_new_attempt_reports(cluster: Cluster) -> None:
    second = asyncio.Event()
    go_on = asyncio.Event()

    async def flaky(payload, ctx):
        if ctx.attempt == 1:
            ctx.progress(0.75, "almost")
            raise RuntimeError("first attempt fails")
        second.set()
        await go_on.wait()
        return "done"
    worker = await cluster.node("w")
    worker.register_handler("flaky", flaky)
    reader = await cluster.client()

    await serving(reader, worker, "flaky")
    task_id = await reader.submit_task("flaky", {}, max_retries=2)
    await asyncio.wait_for(second.wait(), timeout=10)

    async def retried() -> bool:
        task = await reader.get_task(task_id)
        return task.status is TaskStatus.RUNNING and task.attempt == 2
    await eventually(retried, timeout=5)
    task = await reader.get_task(task_id)
    assert task.progress is None and task.progress_message is None, (task.progress, task.progress_message)
    failed = [a for a in task.attempts if a.attempt == 1]
    assert failed and failed[0].error and "first attempt fails" in failed[0].error
    go_on.set()
    assert (await reader.wait_task(task_id, timeout=5)).status is TaskStatus.SUCCEEDED


async def test_a_report_not_yet_renewed_is_stored_before_the_outcome(cluster: Cluster) -> None:
    async def quick(payload, ctx):
        ctx.progress(1.0, "all done")
        return "ok"
    worker = await cluster.node("w")
    worker.register_handler("quick", quick)
    reader = await cluster.client()

    await serving(reader, worker, "quick")
    task_id = await reader.submit_task("quick", {})
    assert (await reader.wait_task(task_id, timeout=5)).status is TaskStatus.SUCCEEDED
    task = await reader.get_task(task_id)
    assert task.progress == 1.0 and task.progress_message == "all done"


async def test_bad_progress_is_a_clear_error_in_the_handler(cluster: Cluster) -> None:
    seen: list[str] = []

    async def bad(payload, ctx):
        for fraction, message in ((1.5, ""), (-0.1, ""), (math.nan, ""), ("half", ""), (0.5, "x" * 201)):
            try:
                ctx.progress(fraction, message)
            except ValueError as exc:
                seen.append(str(exc))
        ctx.progress(0.75, "fine")
        return len(seen)
    worker = await cluster.node("w")
    worker.register_handler("bad", bad)
    reader = await cluster.client()

    await serving(reader, worker, "bad")
    task_id = await reader.submit_task("bad", {})
    assert await reader.wait_for(task_id, timeout=5) == 5
    assert "from 0 to 1" in seen[0] and "from 0 to 1" in seen[1] and "from 0 to 1" in seen[2]
    assert "number" in seen[3] and "at most 200 characters" in seen[4]
    task = await reader.get_task(task_id)
    assert task.progress == 0.75 and task.progress_message == "fine"


@pytest.mark.parametrize("fraction", [1.5, -1.0, math.inf, math.nan, True, "0.5"])
def test_task_progress_checked_refuses(fraction: object) -> None:
    with pytest.raises(ValueError):
        TaskProgress.checked(fraction)


def test_task_progress_checked_keeps_good_values() -> None:
    assert TaskProgress.checked(0, None) == TaskProgress(0.0, "")
    assert TaskProgress.checked(1, "x" * 200).fraction == 1.0


async def test_a_sqlite_file_from_before_progress_gets_its_columns(tmp_path) -> None:
    import sqlite3

    from mesh_core.backends.sqlite import SqliteBackend
    from mesh_core.model import NodeInfo
    db, worker = tmp_path / "old.db", "w" * 32
    task = claimed = await sqlite_file_with_a_claimed_task(db, worker)
    with sqlite3.connect(db) as conn:  # as the release before progress left it: schema version 3
        conn.execute("ALTER TABLE tasks DROP COLUMN progress_message")
        conn.execute("ALTER TABLE tasks DROP COLUMN progress")
        conn.execute("PRAGMA user_version=3")
    backend = SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id=worker, name="w1"))
    try:
        assert (await backend.get_tasks([task.task_id]))[0].progress is None
        kept = await backend.renew(worker, [(task.task_id, claimed.attempt)], 30.0,
                                   {task.task_id: TaskProgress(0.3, "warming up")})
        assert kept == {task.task_id}
        found = (await backend.get_tasks([task.task_id]))[0]
        assert found.progress == 0.3 and found.progress_message == "warming up"
        # a renewal for an attempt no longer held stores nothing
        assert await backend.renew(worker, [(task.task_id, claimed.attempt + 1)], 30.0,
                                   {task.task_id: TaskProgress(0.9, "stale")}) == set()
        assert (await backend.get_tasks([task.task_id]))[0].progress == 0.3
    finally:
        await backend.close()
