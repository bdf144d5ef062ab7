"""The grpc_mesh wire on real servers on 127.0.0.1: envelopes reach the other side's handler with the
sender's identity, bursts are merged, a full queue refuses instead of growing, a wrong api key or protocol
version is refused, and a restarted peer is reached again."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import grpc
import pytest

from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc.wire import REDIAL_MAX, Peer, Wire
from mesh_testing import eventually, free_port


def _wire(name: str, **kw: Any) -> Wire:
    return Wire(node_id=name * 8, name=name, incarnation=1, host="127.0.0.1", port=0, **kw)


async def test_envelopes_reach_the_peer_with_the_senders_identity_and_bursts_merge() -> None:
    a, b = _wire("a"), _wire("b")
    got: list[tuple[Peer, Any]] = []
    b.on_stream("tasks", lambda peer, env: got.append((peer, env)))
    await a.start()
    await b.start()
    try:
        for i in range(500):
            assert a.send(b.address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=i)]))
        await eventually(lambda: sum(len(env.renewals) for _, env in got) == 500, timeout=10)
        assert {peer.node_id for peer, _ in got} == {"a" * 8}
        assert got[0][0].address == a.address
        ids = [r.request_id for _, env in got for r in env.renewals]
        assert ids == list(range(500))  # in order
        assert len(got) < 500  # merged into fewer writes
    finally:
        await a.stop()
        await b.stop()


async def test_a_merged_write_stays_within_half_of_the_message_limit() -> None:
    limit = 64 * 1024
    a, b = _wire("a", max_message_bytes=limit), _wire("b", max_message_bytes=limit)
    got: list[Any] = []
    b.on_stream("memory", lambda peer, env: got.append(env))
    await a.start()
    await b.start()
    try:
        for i in range(60):  # about 600 KB queued at once: merged whole it would pass the limit and be refused
            assert a.send(b.address, "memory", pb.MemoryMessage(entries=[pb.MemoryEntry(seq=i, frame=b"x" * 10_000)]))
        await eventually(lambda: sum(len(env.entries) for env in got) == 60, timeout=10)
        assert [e.seq for env in got for e in env.entries] == list(range(60))  # none lost, in order
        assert max(env.ByteSize() for env in got) <= limit // 2
        assert len(got) < 60  # still merged
        assert not a.counters["wire_stream_errors_memory"]
    finally:
        await a.stop()
        await b.stop()


async def test_answers_come_back_on_the_dialled_stream() -> None:
    a, b = _wire("a"), _wire("b")
    answers: list[int] = []
    a.on_stream("memory", lambda peer, env: answers.append(env.ack.through_seq))

    def echo(peer: Peer, env: Any) -> None:
        b.send(peer.address, "memory", pb.MemoryMessage(ack=pb.MemoryAck(through_seq=env.entries[-1].seq)))

    b.on_stream("memory", echo)
    await a.start()
    await b.start()
    try:
        a.send(b.address, "memory", pb.MemoryMessage(entries=[pb.MemoryEntry(seq=7)]))
        await eventually(lambda: answers == [7], timeout=10)
    finally:
        await a.stop()
        await b.stop()


async def test_a_full_queue_refuses_and_counts() -> None:
    a = _wire("a", queue_limit=10)
    await a.start()
    try:
        # nothing listens there: the stream cannot drain
        sent = [a.send("127.0.0.1:1", "tasks", pb.TaskMessage()) for _ in range(50)]
        assert sent.count(True) <= 11 and sent.count(False) >= 39
        assert a.counters["wire_dropped_tasks"] == sent.count(False)
    finally:
        await a.stop()


@pytest.mark.parametrize("case", ["api_key", "version"])
async def test_wrong_api_key_or_version_is_refused(case: str) -> None:
    b = _wire("b", api_key="right")
    await b.start()
    try:
        async with grpc.aio.insecure_channel(b.address) as channel:
            from mesh_core.backends.grpc._generated import mesh_pb2_grpc as pb_grpc
            stub = pb_grpc.MeshStub(channel)
            hello = pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT if case == "api_key" else 99)
            metadata = (("x-mesh-api-key", "wrong" if case == "api_key" else "right"),)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Handshake(hello, metadata=metadata, timeout=5)
            expected = grpc.StatusCode.UNAUTHENTICATED if case == "api_key" else grpc.StatusCode.FAILED_PRECONDITION
            assert info.value.code() is expected
            assert ("api key" if case == "api_key" else "protocol 99") in (info.value.details() or "")
            reply = await stub.Handshake(pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT),
                                         metadata=(("x-mesh-api-key", "right"),), timeout=5)
            assert reply.node_name == "b"
        assert b.counters["refused_calls_" + case] == 1
    finally:
        await b.stop()


async def _reached_then_gone() -> tuple[Wire, list[int], str]:
    """``a`` (started) whose tasks stream reached ``b`` once (renewal 1 in ``got``), then ``b`` stopped and ``a``'s
    stream seen to end; b's address.

    Not before the end is seen: what is written on a stream whose peer just went is lost with it, as on any
    connection (a write completes once gRPC has it, not once the peer has); the layers above recover that."""
    a, b = _wire("a"), _wire("b")
    got: list[int] = []
    b.on_stream("tasks", lambda peer, env: got.extend(r.request_id for r in env.renewals))
    await a.start()
    await b.start()
    try:
        a.send(b.address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=1)]))
        await eventually(lambda: got == [1], timeout=10)
    except BaseException:
        await a.stop()
        raise
    finally:
        await b.stop()
    try:
        await eventually(lambda: a.counters["wire_stream_errors_tasks"] >= 1, timeout=10)
    except BaseException:
        await a.stop()
        raise
    return a, got, b.address


def _back_at(address: str, got: list[int]) -> Wire:
    """``b`` restarted (a new incarnation) on its old port, its renewals going to ``got``."""
    b2 = Wire(node_id="b" * 8, name="b", incarnation=2, host="127.0.0.1", port=int(address.rpartition(":")[2]))
    b2.on_stream("tasks", lambda peer, env: got.extend(r.request_id for r in env.renewals))
    return b2


async def test_a_restarted_peer_is_reached_again() -> None:
    a, got, address = await _reached_then_gone()
    try:
        b2 = _back_at(address, got)
        await b2.start()
        try:
            async def resend() -> bool:
                a.send(b2.address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=2)]))
                await asyncio.sleep(0.1)
                return 2 in got
            await eventually(resend, timeout=15)
        finally:
            await b2.stop()
    finally:
        await a.stop()


async def test_a_peer_that_cannot_be_dialled_is_answered_on_its_own_stream() -> None:
    """A client behind NAT: the address it gives cannot be reached, yet answers come back on its stream."""
    a, b = _wire("a"), _wire("b")
    answers: list[int] = []
    a.on_stream("tasks", lambda peer, env: answers.extend(r.request_id for r in env.renewed))

    def answer(peer: Peer, env: Any) -> None:
        assert peer.address == "127.0.0.1:1"  # nothing listens there
        b.send(peer.address, "tasks", pb.TaskMessage(renewed=[pb.LeaseRenewed(request_id=r.request_id)
                                                               for r in env.renewals]))

    b.on_stream("tasks", answer)
    await a.start()
    await b.start()
    a.address = "127.0.0.1:1"  # what a tells its peers: unreachable
    try:
        for i in range(3):
            a.send(b.address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=i)]))
        await eventually(lambda: answers == [0, 1, 2], timeout=10)
        assert b.queued("127.0.0.1:1", "tasks") == 0  # nothing waits on a dial that cannot succeed
    finally:
        await a.stop()
        await b.stop()


async def test_a_stream_that_ends_leaves_no_pending_task_behind(caplog: pytest.LogCaptureFixture) -> None:
    """The server side waits on its reply queue; when the caller goes, that wait ends with the stream
    (was: a pending ``Queue.get`` task left to the garbage collector, "Task was destroyed but it is pending")."""
    a, b = _wire("a"), _wire("b")
    got: list[Any] = []
    b.on_stream("tasks", lambda peer, env: got.append(env))
    await a.start()
    await b.start()
    try:
        for _ in range(5):
            a.send(b.address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=1)]))
            await eventually(lambda: got, timeout=10)
            got.clear()
            await a.stop()  # the caller goes mid-wait
            a = _wire("a")
            await a.start()
        await asyncio.sleep(0.2)
        gc.collect()
        await asyncio.sleep(0)
        assert "Task was destroyed but it is pending" not in caplog.text
    finally:
        await a.stop()
        await b.stop()


async def test_envelopes_queued_while_the_peer_is_down_all_arrive_once_it_is_back() -> None:
    """A stream that ended (the peer went) must not take envelopes from the queue after its end: each one
    queued meanwhile is written on the next stream, none lost, in order."""
    a, got, address = await _reached_then_gone()
    try:
        for i in range(2, 8):  # one at a time, as a node's traffic comes, while nobody listens
            assert a.send(address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=i)]))
            await asyncio.sleep(0.05)
        b2 = _back_at(address, got)
        await b2.start()
        try:
            await eventually(lambda: len(got) >= 7, timeout=15)
            await asyncio.sleep(0.2)
            assert got == list(range(1, 8))
        finally:
            await b2.stop()
    finally:
        await a.stop()


async def test_a_peer_down_for_twenty_seconds_is_reached_within_a_redial_of_its_return() -> None:
    """While a peer is down, the channel's own connection attempts back off; bounded by the wire's redial limit
    (``REDIAL_MAX``), not gRPC's default that grows to two minutes (measured here: reached 7.9 and 8.7 s after the
    peer was back), the first envelope sent after the peer's return gets through within the worst case of the two
    backoffs that can stack: the stream's jittered redial sleep (up to 1.5 × ``REDIAL_MAX``) and the channel's
    own (``REDIAL_MAX`` with gRPC's 20 % jitter), plus a second for the handshake. A bound of ``REDIAL_MAX`` + 1.5 s
    was too tight for that: a CI run reached the peer after 4.5 s."""
    a, got, address = await _reached_then_gone()
    try:
        async def keep_sending() -> None:
            i = 2
            while True:  # a node's traffic goes on while the peer is down: each attempt fails, the backoff grows
                a.send(address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=i)]))
                i += 1
                await asyncio.sleep(0.5)
        sender = asyncio.ensure_future(keep_sending())
        try:
            await asyncio.sleep(20)
            b2 = _back_at(address, got)
            await b2.start()
            back = time.monotonic()
            try:
                await eventually(lambda: len(got) > 1, timeout=20)
                waited = time.monotonic() - back
                bound = 1.5 * REDIAL_MAX + 1.2 * REDIAL_MAX + 1.0
                assert waited < bound, f"the returned peer was reached {waited:.1f} s after it was back"
            finally:
                await b2.stop()
        finally:
            sender.cancel()
    finally:
        await a.stop()


async def test_a_probe_of_an_address_nobody_answers_at_leaves_no_channel_behind() -> None:
    """``answers`` to a node declared dead (its channel closed by ``forget``) dials a channel for the probe alone:
    closed again when nobody answers, so probing dead owners does not pile up idle channels; a live one's stays."""
    a, b = _wire("a"), _wire("b")
    await a.start()
    await b.start()
    try:
        dead = f"127.0.0.1:{free_port()}"
        for _ in range(3):
            assert not await a.answers(dead, 0.5)
        assert dead not in a._channels
        assert await a.answers(b.address, 5.0)
        assert b.address in a._channels
        assert a.send(b.address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=1)]))
        await b.stop()  # a stream uses the channel now: a failed probe leaves it to the stream (and ``forget``)
        assert not await a.answers(b.address, 0.5)
        assert b.address in a._channels
    finally:
        await a.stop()
        await b.stop()


class _Relay:
    """A TCP relay to ``target`` that can go silent: once ``cut``, bytes from either side are read and dropped
    and neither side is closed, as across a network that drops every packet (the connections stay open)."""

    def __init__(self, target: str) -> None:
        self.host, _, port = target.rpartition(":")
        self.port = int(port)
        self.silent = False
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._joined, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _joined(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if not self.silent:
                    dst.write(data)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()


async def test_forget_ends_the_peers_streams_too_so_it_is_answered_on_a_live_one_when_heard_again() -> None:
    """A peer cut off is declared dead (``forget``) while its stream to this node stays open here: nothing tells
    a server that a silent connection is gone. When it is heard again, what this node sends it must not go back
    on that dead stream (was: a takeover's handovers to a returning owner went there and were lost, and the task
    kept two owners after the heal)."""
    a, b = _wire("a"), _wire("b")
    got: list[int] = []
    a.on_stream("tasks", lambda peer, env: got.extend(h.owner_epoch for h in env.handovers))
    b.on_stream("tasks", lambda peer, env: None)
    await a.start()
    await b.start()
    relay = _Relay(b.address)
    try:
        via = await relay.start()
        assert a.send(via, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=1)]))  # a's stream to b
        await eventually(lambda: (a.address, "tasks") in b._replies, timeout=10)
        relay.silent = True  # the cut: a's stream to b stays open on b's side, and carries nothing any more
        await a.forget(via)
        await b.forget(a.address)  # each holds the other dead
        assert b.send(a.address, "tasks", pb.TaskMessage(handovers=[pb.Handover(task_id="t", owner_epoch=7)]))
        await eventually(lambda: got == [7], timeout=10)
    finally:
        await relay.close()
        await a.stop()
        await b.stop()


async def _an_attempt_refused_at(address: str, after: float) -> None:
    """Listen at ``address`` and close every connection at once, until one comes ``after`` seconds on: a channel
    dialling there fails each attempt and backs off longer each time (up to ``REDIAL_MAX``, jitter included)."""
    came = asyncio.Event()
    start = time.monotonic()

    def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        if time.monotonic() - start >= after:
            came.set()
    host, _, port = address.rpartition(":")
    server = await asyncio.start_server(refuse, host, int(port))
    try:
        await came.wait()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_probe_reaches_a_peer_back_a_moment_ago_whose_channel_is_still_backing_off() -> None:
    """A node just healed asks a peer it held dead whether it answers before taking its tasks over. Its channel to
    that peer failed all through the cut and waits out its reconnect backoff, failing calls at once meanwhile: the
    probe must not read that as the peer being gone (was: the healed node took a live owner's finished tasks over
    and ran them again, a fresh-clone CI run of the netns cut test)."""
    a, got, address = await _reached_then_gone()
    try:
        a.send(address, "tasks", pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=2)]))  # a's stream redials
        await asyncio.wait_for(_an_attempt_refused_at(address, after=6.0), timeout=20)
        b2 = _back_at(address, got)  # b is back just as a's channel begins a backoff of 1.6 s or more
        await b2.start()
        try:
            assert await a.answers(address, 1.0)
        finally:
            await b2.stop()
        assert not await a.answers(address, 0.5)  # gone again: no answer within the timeout
    finally:
        await a.stop()
