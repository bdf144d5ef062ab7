"""The SQLite medium's wake-up socket reader (``_WakeReader``): every datagram waiting is read whole, in order, the
largest a sender makes included, into one buffer kept for the socket's life."""

from __future__ import annotations

import asyncio
import socket

from mesh_core.backends.contracts import Topic
from mesh_core.backends.sqlite.started import DATAGRAM_BYTES
from mesh_core.backends.sqlite.store import STARTED, TOPIC_BYTES, WAKE_READS_PER_PASS, _WakeReader


async def test_the_wake_reader_reads_every_waiting_datagram_whole_and_in_order() -> None:
    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setblocking(False)
    topics: list[str] = []
    started: list[bytes] = []
    reader = _WakeReader(receiver, topics.append, started.append)
    try:
        big = bytes(range(256)) * (2 * DATAGRAM_BYTES // 256)  # twice the largest started-tasks part a sender makes
        sender.send(TOPIC_BYTES[Topic.TASKS])
        sender.send(STARTED + big)
        sender.send(TOPIC_BYTES[Topic.RESULTS] + TOPIC_BYTES[Topic.MEMORY])
        sender.send(STARTED + b"small")
        for _ in range(WAKE_READS_PER_PASS + 5):  # more than one readiness callback reads
            sender.send(TOPIC_BYTES[Topic.MEMBERS])
        for _ in range(100):
            if len(topics) == 3 + WAKE_READS_PER_PASS + 5:
                break
            await asyncio.sleep(0.01)
        assert topics == [Topic.TASKS, Topic.RESULTS, Topic.MEMORY] + [Topic.MEMBERS] * (WAKE_READS_PER_PASS + 5)
        assert started == [big, b"small"]  # each at its own size: nothing left over from the larger one before
    finally:
        reader.close()
        sender.close()
    assert receiver.fileno() == -1
