"""The generated mesh.v1 code works on a real grpc.aio server on 127.0.0.1: one round trip per call shape
(unary, server stream, each of the three bidirectional streams), codec frames intact inside ``bytes`` fields,
and a Hello of another protocol version refused with a clear error. Not the backend: a servicer that answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from mesh_core import codec
from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc._generated import mesh_pb2_grpc as pb_grpc

WORKER = pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT, node_id="b" * 32, node_name="worker",
                  incarnation=3, address="127.0.0.1:0")


async def _refuse_other_versions(hello: pb.Hello, context: grpc.aio.ServicerContext) -> None:
    if hello.protocol_version != pb.PROTOCOL_VERSION_CURRENT:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                            f"peer speaks mesh protocol {hello.protocol_version}, this node speaks "
                            f"{pb.PROTOCOL_VERSION_CURRENT}: run the same mesh-tui release on every node")


class EchoServicer(pb_grpc.MeshServicer):
    """Answers each call the way its peer would, with no state: enough to prove the wire."""

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Hello:
        await _refuse_other_versions(request, context)
        return WORKER

    async def Membership(self, requests: AsyncIterator[pb.MembershipMessage],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.MembershipMessage]:
        async for message in requests:
            if message.HasField("hello"):
                await _refuse_other_versions(message.hello, context)
                yield pb.MembershipMessage(hello=WORKER)
            acks = [pb.Ack(seq=ping.seq, node_id=WORKER.node_id, incarnation=WORKER.incarnation)
                    for ping in message.pings if ping.target_id == WORKER.node_id]
            if acks:
                yield pb.MembershipMessage(acks=acks, gossip=[pb.Gossip(
                    node_id=WORKER.node_id, incarnation=WORKER.incarnation, state=pb.MEMBER_STATE_ALIVE,
                    record=codec.encode({"node_id": WORKER.node_id, "load": 0.25}))])

    async def Tasks(self, requests: AsyncIterator[pb.TaskMessage],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.TaskMessage]:
        async for message in requests:
            if message.HasField("hello"):
                yield pb.TaskMessage(hello=WORKER)
            if message.offers:
                yield pb.TaskMessage(accepts=[pb.TaskAccept(task_id=o.task_id, attempt=o.attempt, accepted=True)
                                              for o in message.offers])
                yield pb.TaskMessage(results=[pb.TaskResult(
                    task_id=o.task_id, attempt=o.attempt, owner_epoch=o.owner_epoch,
                    outcome=pb.TASK_OUTCOME_SUCCEEDED, result=codec.encode(codec.decode(o.task)["payload"]))
                    for o in message.offers])

    async def Memory(self, requests: AsyncIterator[pb.MemoryMessage],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.MemoryMessage]:
        async for message in requests:
            if message.HasField("hello"):
                yield pb.MemoryMessage(hello=WORKER)
            for entry in message.entries:
                codec.decode(entry.frame)  # a bad frame would end the call: the smoke test sends good ones
            if message.entries:
                yield pb.MemoryMessage(ack=pb.MemoryAck(through_seq=max(e.seq for e in message.entries)))

    async def Digest(self, request: pb.DigestRequest, context: grpc.aio.ServicerContext) -> pb.DigestReply:
        mine = {0: "aa", 1: "bb"}
        differing = sorted(b for b in set(mine) | set(request.digests) if mine.get(b) != request.digests.get(b))
        return pb.DigestReply(digests=mine, differing=differing)

    async def Pull(self, request: pb.PullRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PullChunk]:
        for bucket in request.buckets:
            yield pb.PullChunk(bucket=bucket, frames=[codec.encode({"bucket": bucket, "i": i}) for i in range(2)])


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.MeshStub]:
    server = grpc.aio.server()
    pb_grpc.add_MeshServicer_to_server(EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.MeshStub(channel)
    finally:
        await server.stop(grace=None)


OWNER = pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT, node_id="a" * 32, node_name="owner",
                 incarnation=1, address="127.0.0.1:1")


async def test_unary_handshake_and_a_refused_protocol_version(stub: pb_grpc.MeshStub) -> None:
    reply = await stub.Handshake(OWNER, timeout=30)
    assert reply == WORKER

    future = pb.Hello(protocol_version=2, node_id="c" * 32)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Handshake(future, timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "protocol 2" in (refused.value.details() or "") and "speaks 1" in (refused.value.details() or "")


async def test_membership_stream_ping_ack_with_piggybacked_gossip(stub: pb_grpc.MeshStub) -> None:
    call = stub.Membership(timeout=30)
    await call.write(pb.MembershipMessage(hello=OWNER, pings=[pb.Ping(seq=7, target_id=WORKER.node_id)]))
    opening = await call.read()
    assert opening.hello.node_id == WORKER.node_id
    answer = await call.read()
    assert [(a.seq, a.node_id, a.incarnation) for a in answer.acks] == [(7, WORKER.node_id, 3)]
    assert answer.gossip[0].state == pb.MEMBER_STATE_ALIVE
    assert codec.decode(answer.gossip[0].record) == {"node_id": WORKER.node_id, "load": 0.25}
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_task_stream_offer_accept_and_fenced_result(stub: pb_grpc.MeshStub) -> None:
    call = stub.Tasks(timeout=30)
    task = codec.encode({"task_type": "echo", "payload": {"text": "x" * 4000}})  # over the lz4 threshold
    await call.write(pb.TaskMessage(hello=OWNER, offers=[
        pb.TaskOffer(task_id="t1", attempt=2, owner_epoch=5, lease_seconds=10.0, task=task)]))
    assert (await call.read()).hello == WORKER
    accepted = await call.read()
    assert [(a.task_id, a.attempt, a.accepted) for a in accepted.accepts] == [("t1", 2, True)]
    result = (await call.read()).results[0]
    assert (result.task_id, result.attempt, result.owner_epoch, result.outcome) == \
        ("t1", 2, 5, pb.TASK_OUTCOME_SUCCEEDED)
    assert codec.decode(result.result) == {"text": "x" * 4000}
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_memory_stream_push_and_cumulative_ack(stub: pb_grpc.MeshStub) -> None:
    call = stub.Memory(timeout=30)
    entries = [pb.MemoryEntry(seq=seq, origin_id=OWNER.node_id, memory_type="fact", key=f"k{seq}",
                              frame=codec.encode({"value": seq})) for seq in (1, 2, 3)]
    await call.write(pb.MemoryMessage(hello=OWNER, entries=entries))
    assert (await call.read()).hello == WORKER
    assert (await call.read()).ack.through_seq == 3
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_anti_entropy_digest_then_pull_server_stream(stub: pb_grpc.MeshStub) -> None:
    digests = await stub.Digest(pb.DigestRequest(caller=OWNER, digests={0: "aa", 1: "zz", 2: "cc"}), timeout=30)
    assert list(digests.differing) == [1, 2] and dict(digests.digests) == {0: "aa", 1: "bb"}

    chunks = [chunk async for chunk in stub.Pull(pb.PullRequest(caller=OWNER, buckets=digests.differing), timeout=30)]
    assert [chunk.bucket for chunk in chunks] == [1, 2]
    assert [codec.decode(f) for f in chunks[1].frames] == [{"bucket": 2, "i": 0}, {"bucket": 2, "i": 1}]
    assert not pb.PullChunk(frames=[]).HasField("bucket")  # optional: a keys answer names no bucket


async def test_a_stream_opened_with_another_protocol_version_is_refused(stub: pb_grpc.MeshStub) -> None:
    call = stub.Membership(timeout=30)
    await call.write(pb.MembershipMessage(hello=pb.Hello(protocol_version=2, node_id="c" * 32)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.read()
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "run the same mesh-tui release" in (refused.value.details() or "")
