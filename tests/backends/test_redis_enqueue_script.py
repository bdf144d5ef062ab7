"""The Redis ENQUEUE and COMPLETE scripts on their own, on a real redis-server: what they write when an item is
malformed, and the wake-up of a task ENQUEUE starts (the task's fields, as stored)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from mesh_core.backends.redis.lua_tasks import COMPLETE, ENQUEUE
from mesh_core.backends.redis.tasks import _lua_pack
from mesh_testing.redis_server import RedisServer

WORKER = "w" * 32
CALLER = "c" * 32


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def _item(task_id: str, node: str = WORKER, *, capacity: str = "100", prio: str = "1") -> bytes:
    """One ENQUEUE argument, packed as ``RedisTasks._enqueue_batch`` packs it."""
    return _lua_pack([task_id, node, "w1" if node else "", capacity, prio, "0.0", "test", b"spec",
                      CALLER, repr(time.time()), "", ""])


async def _enqueue(raw: aioredis.Redis, prefix: str, *items: bytes) -> Any:
    return await raw.eval(ENQUEUE, 0, prefix, CALLER, *items)


async def test_a_malformed_item_is_refused_before_anything_is_written(raw: aioredis.Redis) -> None:
    """A batch whose second item is not a task writes nothing at all, its good first item included (the script
    reads every item before its first write: a failure half way would leave the first task stored but neither
    listed nor counted, and the caller, told the batch failed, would find it 'already stored' on a retry)."""
    prefix = f"mesh:{{{uuid.uuid4().hex}}}:"
    good = uuid.uuid4().hex
    no_why = _lua_pack([uuid.uuid4().hex, WORKER, "w1", "100", "1", "0.0", None, b"spec", CALLER, "1.0", "", ""])
    for bad in (b"\xc1", _lua_pack(7), _lua_pack(["x"]), _item(uuid.uuid4().hex, capacity="many"),
                _item(uuid.uuid4().hex, prio="7"), no_why):
        with pytest.raises(ResponseError):
            await _enqueue(raw, prefix, _item(good), bad)
        assert await raw.keys(prefix + "*") == []
    assert (await _enqueue(raw, prefix, _item(good)))[0] == [1]
    assert await raw.exists(f"{prefix}t:{good}", f"{prefix}tasks", f"{prefix}seq") == 3


async def test_a_task_started_at_enqueue_is_pushed_with_the_fields_it_is_stored_with(raw: aioredis.Redis) -> None:
    """The wake-up of a task started at enqueue carries its fields as the task's hash holds them (the worker runs it
    from the wake-up, with no read), numbers in the same digits; several tasks for one node, in one batch."""
    prefix = f"mesh:{{{uuid.uuid4().hex}}}:"
    await raw.hset(f"{prefix}grants", WORKER, f"10 30 {time.time() + 3600}")
    pubsub = raw.pubsub()
    await pubsub.subscribe(f"{prefix}wake:{WORKER}")
    try:
        await pubsub.get_message(timeout=1)  # the subscription's own answer
        ids = [uuid.uuid4().hex for _ in range(3)]
        assert (await _enqueue(raw, prefix, *(_item(i) for i in ids)))[0] == [1, 1, 1]
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message is not None and message["data"][:1] == b"T"
        flat = msgpack.unpackb(message["data"][1:], raw=True)
        pushed = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        assert sorted(pushed) == sorted(ids)
        for task_id, fields in pushed.items():
            as_pushed = {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}
            assert as_pushed == await raw.hgetall(f"{prefix}t:{task_id}")
            assert as_pushed[b"status"] == b"running"
            assert float(as_pushed[b"lease"]) - float(as_pushed[b"started"]) == pytest.approx(30)
        seqs = sorted(int(f[f.index(b"seq") + 1]) for f in pushed.values())
        assert len(set(seqs)) == 3
        assert await raw.scard(f"{prefix}held:{WORKER}") == 3
        assert await raw.zcard(f"{prefix}granted:{WORKER}") == 3
    finally:
        await pubsub.aclose()
        await asyncio.sleep(0)


async def test_a_malformed_outcome_is_refused_before_any_outcome_is_recorded(raw: aioredis.Redis) -> None:
    """COMPLETE reads every item first too: with a malformed second outcome, the first task is still running (its
    worker, told the call failed, records it again and is not refused as if another had)."""
    prefix = f"mesh:{{{uuid.uuid4().hex}}}:"
    await raw.hset(f"{prefix}grants", WORKER, f"10 30 {time.time() + 3600}")
    task_id = uuid.uuid4().hex
    assert (await _enqueue(raw, prefix, _item(task_id)))[0] == [1]
    outcome = _lua_pack([task_id, "1", WORKER, "succeeded", b"result", ""])
    for bad in (b"\xc1", _lua_pack([task_id, 1, WORKER, "succeeded", b"", ""]), _lua_pack([task_id, "1"])):
        with pytest.raises(ResponseError):
            await raw.eval(COMPLETE, 0, prefix, outcome, bad)
        assert await raw.hget(f"{prefix}t:{task_id}", "status") == b"running"
        assert not await raw.exists(f"{prefix}fin:{CALLER}")
    assert (await raw.eval(COMPLETE, 0, prefix, outcome))[0] == [CALLER.encode()]
    assert await raw.hget(f"{prefix}t:{task_id}", "status") == b"succeeded"
