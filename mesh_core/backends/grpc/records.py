"""Node records and SWIM messages as they travel on the ``Membership`` stream (pure conversions, no I/O).

A node record travels as a codec frame of its ``NODE_FIELDS`` and is read back through the shared,
validated decoder, as on the other media. A SWIM message's sender is not in the envelope: it is the
peer named by the stream's ``Hello``. Anything malformed (a record that fails the codec too) raises
``ValueError`` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from ... import codec, swim
from ...model import NodeInfo
from ._generated import mesh_pb2 as pb

_STATE = {swim.Kind.ALIVE: pb.MEMBER_STATE_ALIVE, swim.Kind.SUSPECT: pb.MEMBER_STATE_SUSPECT,
          swim.Kind.DEAD: pb.MEMBER_STATE_DEAD, swim.Kind.LEFT: pb.MEMBER_STATE_LEFT}
_KIND = {v: k for k, v in _STATE.items()}
MAX_INCARNATION = 2 ** 63  # an incarnation at or past this is refused: refuting it (+1) must still fit the wire

NodeDecoder = Callable[[dict[str, Any]], NodeInfo]


def node_fields(info: NodeInfo) -> dict[str, Any]:
    """A node record as the plain fields every medium stores (``shared.NODE_FIELDS`` plus the beat)."""
    return {"node_id": info.node_id, "name": info.name, "node_type": info.node_type.value, "role": info.role.value,
            "host": info.host, "port": info.port, "pid": info.pid, "incarnation": info.incarnation,
            "capabilities": sorted(info.capabilities), "task_types": sorted(info.task_types),
            "capacity": info.capacity, "running": info.running, "queued": info.queued, "metrics": info.metrics,
            "started_at": info.started_at, "last_seen": info.last_seen, "left": int(info.left),
            "signature": info.signature, "heartbeat_seq": info.heartbeat_seq}


def encode_node(info: NodeInfo, limits: codec.CodecLimits) -> bytes:
    return codec.encode(node_fields(info), limits)


def decode_node(frame: bytes, limits: codec.CodecLimits, decode_fields: NodeDecoder) -> NodeInfo:
    try:
        fields = codec.decode(frame, limits)
    except codec.CodecError as exc:  # one kind of refusal for every malformed part of an envelope
        raise ValueError(f"a node record that does not decode: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError("a node record that is not a map")
    return decode_fields(fields)


def gossip_of(update: swim.Update, limits: codec.CodecLimits, frames: dict[tuple[str, int], bytes]) -> pb.Gossip:
    """One SWIM update on the wire; ``frames`` caches encoded records by (node, incarnation)."""
    record = b""
    if update.info is not None:
        key = (update.node, update.incarnation)
        record = frames.get(key) or b""
        if not record:
            record = frames[key] = encode_node(update.info, limits)
    return pb.Gossip(node_id=update.node, incarnation=update.incarnation, state=_STATE[update.kind],
                     address=update.addr, node_name=update.info.name if update.info else "", record=record,
                     origin_id=update.origin)


def update_of(gossip: pb.Gossip, limits: codec.CodecLimits, decode_fields: NodeDecoder) -> swim.Update:
    kind = _KIND.get(gossip.state)
    if kind is None:
        raise ValueError(f"gossip about {gossip.node_id[:12]!r} in unknown state {gossip.state}")
    if gossip.incarnation >= MAX_INCARNATION:
        raise ValueError(f"gossip about {gossip.node_id[:12]!r} at incarnation {gossip.incarnation}, past 63 bits")
    info = decode_node(gossip.record, limits, decode_fields) if gossip.record else None
    if info is not None and info.node_id != gossip.node_id:
        raise ValueError(f"gossip about {gossip.node_id[:12]!r} carries the record of {info.node_id[:12]!r}")
    return swim.Update(kind, gossip.node_id, int(gossip.incarnation), gossip.origin_id, gossip.address, info)


def envelope_of(message: swim.Message, limits: codec.CodecLimits,
                frames: dict[tuple[str, int], bytes]) -> pb.MembershipMessage:
    """One outgoing SWIM message as a Membership envelope (the receiver knows the sender from the stream)."""
    env = pb.MembershipMessage(gossip=[gossip_of(u, limits, frames) for u in message.updates])
    if isinstance(message, swim.Ping):
        env.pings.append(pb.Ping(seq=message.seq))
    elif isinstance(message, swim.PingReq):
        env.ping_reqs.append(pb.PingReq(seq=message.seq, target_id=message.target,
                                        target_address=message.target_addr))
    elif isinstance(message, swim.Ack):
        env.acks.append(pb.Ack(seq=message.seq, node_id=message.sender))
    elif isinstance(message, swim.Nack):
        env.nacks.append(pb.Nack(seq=message.seq))
    elif isinstance(message, swim.Sync):
        env.state_sync.CopyFrom(pb.StateSync(reply_wanted=not message.reply, members=env.gossip))
        del env.gossip[:]
    return env


def messages_of(env: pb.MembershipMessage, sender: str, sender_addr: str, own_addr: str,
                limits: codec.CodecLimits, decode_fields: NodeDecoder) -> Iterable[swim.Message]:
    """The SWIM messages one received envelope holds (gossip rides on the first, or travels alone)."""
    updates = tuple(update_of(g, limits, decode_fields) for g in env.gossip)
    out: list[swim.Message] = []
    to, frm, frm_addr = own_addr, sender, sender_addr
    for ping in env.pings:
        out.append(swim.Ping(to, frm, frm_addr, int(ping.seq)))
    for req in env.ping_reqs:
        out.append(swim.PingReq(to, frm, frm_addr, int(req.seq), target=req.target_id,
                                target_addr=req.target_address))
    for ack in env.acks:
        out.append(swim.Ack(to, frm, frm_addr, int(ack.seq)))
    for nack in env.nacks:
        out.append(swim.Nack(to, frm, frm_addr, int(nack.seq)))
    if env.HasField("state_sync"):
        members = tuple(update_of(g, limits, decode_fields) for g in env.state_sync.members)
        out.append(swim.Sync(to, frm, frm_addr, 0, members, reply=not env.state_sync.reply_wanted))
    if updates:
        if out:
            out[0] = dataclasses.replace(out[0], updates=out[0].updates + updates)
        else:
            out.append(swim.Gossip(to, frm, frm_addr, 0, updates))
    return out
