"""A stored value that fails to decode reads as ``{"__corrupt__": reason}`` and is counted; a task whose state
cannot be read is left out and counted. Neither stops a reader, on any backend."""

from __future__ import annotations

import sqlite3

import redis.asyncio as aioredis

from mesh_core.backends.contracts import Backend
from mesh_core.backends.redis import RedisBackend
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.model import TaskStatus

from .test_task_moves import backend, read, task_in  # noqa: F401  (the fixture, parametrised on every backend)

GARBAGE = b"\x00\xffnot a frame"


async def spoil(medium: Backend, task_id: str, **fields: object) -> None:
    """Overwrite stored fields of a task behind the backend's back (what a bad writer or a bad disk does)."""
    if isinstance(medium, SqliteBackend):
        with sqlite3.connect(medium.path) as conn:
            for column, value in fields.items():
                conn.execute(f"UPDATE tasks SET {column}=? WHERE task_id=?", (value, task_id))
        return
    assert isinstance(medium, RedisBackend)
    names = {"payload": "spec", "result": "result", "status": "status", "progress": "progress",
             "progress_message": "progress_msg"}
    raw = aioredis.Redis.from_url(medium.cfg.url or "")
    try:
        await raw.hset(f"{medium.prefix}t:{task_id}", mapping={names[k]: v for k, v in fields.items()})
    finally:
        await raw.aclose()


async def test_a_corrupt_payload_or_result_is_shown_and_counted(backend: Backend) -> None:  # noqa: F811
    task = await task_in(backend, TaskStatus.SUCCEEDED)
    await spoil(backend, task.task_id, payload=GARBAGE, result=GARBAGE)
    found = await read(backend, task.task_id)
    assert set(found.payload) == {"__corrupt__"} and set(found.result) == {"__corrupt__"}
    assert found.status is TaskStatus.SUCCEEDED
    assert backend.describe()["corrupt_values"] >= 2


async def test_a_task_whose_status_cannot_be_read_is_left_out_and_counted(backend: Backend) -> None:  # noqa: F811
    bad = await task_in(backend, TaskStatus.ASSIGNED)
    good = await task_in(backend, TaskStatus.PENDING)
    await spoil(backend, bad.task_id, status="exploded")
    assert [t.task_id for t in await backend.get_tasks([bad.task_id, good.task_id])] == [good.task_id]
    assert good.task_id in {t.task_id for t in await backend.list_tasks()}
    assert backend.describe()["refused_records"] >= 1


async def test_a_bad_stored_progress_is_ignored_and_counted(backend: Backend) -> None:  # noqa: F811
    for bad in (b"lots", 7.5, -1.0):
        task = await task_in(backend, TaskStatus.RUNNING)
        await spoil(backend, task.task_id, progress=bad, progress_message="half way")
        before = backend.describe()["corrupt_values"]
        found = await read(backend, task.task_id)
        assert found.status is TaskStatus.RUNNING and found.progress is None and found.progress_message is None
        assert backend.describe()["corrupt_values"] == before + 1
    task = await task_in(backend, TaskStatus.RUNNING)
    await spoil(backend, task.task_id, progress=0.5, progress_message="x" * 500)  # a message over its bound
    found = await read(backend, task.task_id)
    assert found.progress is None
