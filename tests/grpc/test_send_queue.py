"""The wire's send queue: a put resumes the waiting writer in the next event-loop pass (not three passes later,
behind whatever else became ready meanwhile), a full queue refuses, an idle wait ends, and an ended stream's wait
ends without taking anything."""

from __future__ import annotations

import asyncio

from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc.wire import _SendQueue, _StreamWrites


def _renewal(i: int) -> pb.TaskMessage:
    return pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=i)])


async def test_a_put_resumes_the_waiting_writer_in_the_next_loop_pass() -> None:
    queue = _SendQueue(10)
    order: list[str] = []

    async def writer() -> None:
        assert await queue.wait(5.0)
        order.append("writer")

    async def busy() -> None:  # other ready work: a pass each
        for i in range(3):
            order.append(f"busy{i}")
            await asyncio.sleep(0)

    task = asyncio.ensure_future(writer())
    await asyncio.sleep(0)  # the writer waits
    queue.put(_renewal(1))
    other = asyncio.ensure_future(busy())
    await asyncio.gather(task, other)
    # the writer runs in the pass after the put, before the busy task's second pass
    assert order.index("writer") < order.index("busy1")


async def test_a_full_queue_refuses_and_take_merges_in_order() -> None:
    queue = _SendQueue(3)
    assert all(queue.put(_renewal(i)) for i in range(3))
    assert not queue.put(_renewal(3))
    merged = queue.take(4 * 1024 * 1024)
    assert [r.request_id for r in merged.renewals] == [0, 1, 2]
    assert len(queue) == 0


async def test_an_idle_wait_ends_false_and_an_ended_stream_wakes_its_wait_false() -> None:
    queue = _SendQueue(3)
    assert not await queue.wait(0.01)
    stream = _StreamWrites()
    stream.queue = queue
    waiting = asyncio.ensure_future(queue.wait(5.0))
    await asyncio.sleep(0)
    assert stream.end() == []
    assert await asyncio.wait_for(waiting, 1.0) is False
    assert len(queue) == 0
