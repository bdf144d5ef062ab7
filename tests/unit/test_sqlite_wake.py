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


NOBODY = 65534


async def _read_until(seen: list, n: int) -> None:
    for _ in range(200):
        if len(seen) >= n:
            return
        await asyncio.sleep(0.01)


def _send_as(uid: int, address: bytes, *datagrams: bytes) -> None:
    """Send ``datagrams`` to ``address`` from a forked process of ``uid`` (and gid): it only sends and exits."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            for d in datagrams:
                s.sendto(d, address)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux abstract sockets and SO_PASSCRED")
async def test_a_wake_up_carrying_records_is_taken_only_from_a_sender_the_kernel_vouches_for() -> None:
    address = b"\0agent-mesh-test/" + uuid.uuid4().hex.encode()
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.setblocking(False)
    topics: list[str] = []
    started: list[bytes] = []
    asked: list[tuple[int, int]] = []
    refused: list[None] = []

    def trusted(uid: int, gid: int) -> bool:
        asked.append((uid, gid))
        return uid == os.geteuid()
    reader = _WakeReader(receiver, topics.append, {STARTED: started.append}, trusted=trusted,
                         refused=lambda: refused.append(None))
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sender.sendto(STARTED + b"mine", address)
        sender.sendto(TOPIC_BYTES[Topic.TASKS], address)
        await _read_until(topics, 1)
        assert started == [b"mine"] and topics == [Topic.TASKS]
        assert asked == [(os.geteuid(), os.getegid())]  # the kernel's word on who sent it, not the datagram's
        if os.geteuid() != 0:
            return  # only root can send as another user; CI runs as root
        _send_as(NOBODY, address, STARTED + b"forged", TOPIC_BYTES[Topic.RESULTS])
        await _read_until(topics, 2)
        assert started == [b"mine"] and len(refused) == 1  # its records are not taken, and it is counted
        assert topics == [Topic.TASKS, Topic.RESULTS]  # a bare wake-up is a hint: the node reads the file, which
        # only those who may use it can write
    finally:
        reader.close()
        sender.close()


def test_who_may_send_records_follows_the_database_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "mesh.db"
    path.write_bytes(b"")
    owner, group = 4242, 4343
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, owner, group)
        may = may_use_file(str(path))
        assert may(owner, 1) and may(0, 0) and not may(1, group) and not may(NOBODY, NOBODY)
        os.chmod(path, 0o660)
        may = may_use_file(str(path))
        assert may(1, group) and not may(NOBODY, NOBODY)
        os.chmod(path, 0o666)
        assert may_use_file(str(path))(NOBODY, NOBODY)
    may = may_use_file(str(path))
    assert may(os.geteuid(), os.getegid())  # this process itself, whatever the mode
