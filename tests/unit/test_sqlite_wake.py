"""The SQLite medium's wake-up socket reader (``_WakeReader``): every datagram waiting is read whole, in order, the
largest a sender makes included, into one buffer kept for the socket's life; one that carries records is taken only
from a process the kernel says may use the database file."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from mesh_core.backends.contracts import Topic
from mesh_core.backends.sqlite.started import DATAGRAM_BYTES
from mesh_core.backends.sqlite.store import STARTED, TOPIC_BYTES, WAKE_READS_PER_PASS, _WakeReader, may_use_file
from mesh_testing.users import NOBODY, send_as

from ..conftest import require_another_user


async def test_the_wake_reader_reads_every_waiting_datagram_whole_and_in_order() -> None:
    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setblocking(False)
    topics: list[str] = []
    started: list[bytes] = []
    reader = _WakeReader(receiver, topics.append, {STARTED: started.append})
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


async def _read_until(seen: list, n: int) -> None:
    for _ in range(200):
        if len(seen) >= n:
            return
        await asyncio.sleep(0.01)


LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="abstract sockets and SO_PASSCRED are Linux's (elsewhere the socket is a file)")


class _Reader:
    """A wake reader on a fresh abstract address that trusts this process's user only, and what it took."""

    def __init__(self) -> None:
        self.address = b"\0agent-mesh-test/" + uuid.uuid4().hex.encode()
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(self.address)
        receiver.setblocking(False)
        self.topics: list[str] = []
        self.started: list[bytes] = []
        self.asked: list[tuple[int, int]] = []
        self.refused: list[None] = []
        self.reader = _WakeReader(receiver, self.topics.append, {STARTED: self.started.append},
                                  trusted=self.trusted, refused=lambda: self.refused.append(None))

    def trusted(self, uid: int, gid: int) -> bool:
        self.asked.append((uid, gid))
        return uid == os.geteuid()


@LINUX
async def test_a_wake_up_carrying_records_from_a_sender_the_kernel_vouches_for_is_taken() -> None:
    r = _Reader()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(STARTED + b"mine", r.address)
            sender.sendto(TOPIC_BYTES[Topic.TASKS], r.address)
        await _read_until(r.topics, 1)
        assert r.started == [b"mine"] and r.topics == [Topic.TASKS]
        assert r.asked == [(os.geteuid(), os.getegid())]  # the kernel's word on who sent it, not the datagram's
    finally:
        r.reader.close()


@LINUX
async def test_a_wake_up_carrying_records_from_another_user_is_refused() -> None:
    require_another_user()
    r = _Reader()
    try:
        send_as(NOBODY, r.address, STARTED + b"forged", TOPIC_BYTES[Topic.RESULTS])
        await _read_until(r.topics, 1)
        assert r.started == [] and len(r.refused) == 1  # its records are not taken, and it is counted
        assert r.topics == [Topic.RESULTS]  # a bare wake-up is a hint: the node reads the file, which only those
        # who may use it can write
    finally:
        r.reader.close()


def test_who_may_send_records_follows_the_database_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "mesh.db"
    path.write_bytes(b"")
    owner, group = 4242, 4343
    os.chmod(path, 0o600)
    assert may_use_file(str(path))(os.geteuid(), os.getegid())  # this process itself, whatever the mode
    require_another_user()  # to give the file to another owner
    os.chown(path, owner, group)
    may = may_use_file(str(path))
    assert may(owner, 1) and may(0, 0) and not may(1, group) and not may(NOBODY, NOBODY)
    os.chmod(path, 0o660)
    may = may_use_file(str(path))
    assert may(1, group) and not may(NOBODY, NOBODY)
    os.chmod(path, 0o666)
    assert may_use_file(str(path))(NOBODY, NOBODY)
