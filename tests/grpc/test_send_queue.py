"""The wire's send queue: a put resumes the waiting writer in the next event-loop pass, a full queue refuses, an
idle wait ends, and an ended stream's wait ends without taking anything; and the writer, once woken, lets
``CORK_PASSES`` passes go by, so what one burst of work posts goes in one write (real servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio

from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc.sendq import CORK_PASSES, SendQueue, StreamWrites
from mesh_core.backends.grpc.wire import Wire
from mesh_testing import eventually


def _renewal(i: int) -> pb.TaskMessage:
    return pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=i)])


async def test_a_put_resumes_the_waiting_writer_in_the_next_loop_pass() -> None:
    queue = SendQueue(10)
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
    queue = SendQueue(3)
    assert all(queue.put(_renewal(i)) for i in range(3))
    assert not queue.put(_renewal(3))
    merged = queue.take(4 * 1024 * 1024)
    assert [r.request_id for r in merged.renewals] == [0, 1, 2]
    assert len(queue) == 0


async def test_an_idle_wait_ends_false_and_an_ended_stream_wakes_its_wait_false() -> None:
    queue = SendQueue(3)
    assert not await queue.wait(0.01)
    stream = StreamWrites()
    stream.queue = queue
    waiting = asyncio.ensure_future(queue.wait(5.0))
    await asyncio.sleep(0)
    assert stream.end() == []
    assert await asyncio.wait_for(waiting, 1.0) is False
    assert len(queue) == 0


async def test_what_one_burst_posts_over_the_cork_passes_goes_in_one_write_both_ways() -> None:
    a, b = (Wire(node_id=n * 8, name=n, incarnation=1, host="127.0.0.1", port=0) for n in "ab")
    at_b: list[pb.TaskMessage] = []
    at_a: list[pb.TaskMessage] = []
    b.on_stream("tasks", lambda peer, env: at_b.append(env))
    a.on_stream("tasks", lambda peer, env: at_a.append(env))
    await a.start()
    await b.start()
    try:
        assert a.send(b.address, "tasks", _renewal(0))  # dials: a's stream to b is open, and b answers on it
        await eventually(lambda: len(at_b) == 1, timeout=10)
        for burst in range(3):
            for i in range(CORK_PASSES + 1):  # one put per pass, from the pass the writer wakes in on
                assert a.send(b.address, "tasks", _renewal(10 * burst + i))
                assert b.send(a.address, "tasks", _renewal(10 * burst + i))
                if i < CORK_PASSES:
                    await asyncio.sleep(0)
            await eventually(lambda n=burst: len(at_b) == 2 + n and len(at_a) == 1 + n, timeout=10)
        assert [[r.request_id for r in env.renewals] for env in at_b[1:]] == [[0, 1, 2], [10, 11, 12], [20, 21, 22]]
        assert [[r.request_id for r in env.renewals] for env in at_a] == [[0, 1, 2], [10, 11, 12], [20, 21, 22]]
    finally:
        await a.stop()
        await b.stop()
