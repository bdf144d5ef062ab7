"""Redis only: the submitter's result feed carries each outcome; bad entries in it are refused, not fatal."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mesh_core.model import TaskStatus
from mesh_testing import RedisServer

from .conftest import Cluster


@pytest.fixture
async def rcluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, "redis", redis_server.url)
    try:
        yield c
    finally:
        await c.close()


async def test_feed_entries_carry_the_outcome_and_small_results(rcluster: Cluster) -> None:
    await rcluster.node("w1")
    client = await rcluster.client()
    small = await client.submit_task("echo", {"n": 1})
    large = await client.submit_task("echo", {"blob": os.urandom(2000).hex()})  # does not compress
    for task_id in (small, large):
        await client.wait_task(task_id, timeout=5)
    raw = aioredis.Redis.from_url(rcluster.redis_url or "")
    try:
        rows = await raw.xrange(f"mesh:{{{rcluster.root.name}}}:fin:{client.node_id}")
    finally:
        await raw.aclose()
    by_id = {fields[b"id"].decode(): fields for _, fields in rows}
    assert by_id[small][b"st"] == b"succeeded" and by_id[small][b"full"] == b"1" and by_id[small][b"res"]
    assert by_id[small][b"node"] and by_id[small][b"nn"] == b"w1" and by_id[small][b"att"] == b"1"
    assert by_id[large][b"full"] == b"0" and by_id[large][b"res"] == b""  # the waiter reads the task instead


async def test_garbage_in_a_result_feed_is_refused_counted_and_the_waiter_still_answered(rcluster: Cluster) -> None:
    await rcluster.node("w1")
    client = await rcluster.client()
    feed = f"mesh:{{{rcluster.root.name}}}:fin:{client.node_id}"
    raw = aioredis.Redis.from_url(rcluster.redis_url or "")
    try:
        await raw.xadd(feed, {"id": "nope", "st": "exploded", "att": "x"})
        await raw.xadd(feed, {"junk": os.urandom(64)})
        await raw.xadd(feed, {"id": "a" * 32, "st": "succeeded", "att": "1", "full": "1", "res": os.urandom(40)})
    finally:
        await raw.aclose()
    task_id = await client.submit_task("echo", {"still": "fine"})
    task = await client.wait_task(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCEEDED and task.result == {"still": "fine"}
    assert client.backend_info()["refused_records"] >= 2
