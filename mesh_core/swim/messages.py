"""SWIM rumours and messages (pure): what nodes say to each other, and the one check at the edge.

An ``Update`` is one rumour about one node; every ``Message`` carries a few of
them. ``invalid`` says why a message received cannot be handled, once, before
the detector reads any field of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..model import NodeInfo


class Kind(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True)
class Update:
    """One rumour about one node: ``node`` is in state ``kind`` at ``incarnation``, said by ``origin``.

    ``addr`` and ``info`` travel with ``alive`` (how to reach the node, what it is); the others name it only."""

    kind: Kind
    node: str
    incarnation: int
    origin: str
    addr: str = ""
    info: NodeInfo | None = None


@dataclass(frozen=True)
class Message:
    """Base of every message: ``to`` is the receiver's address; ``sender``/``sender_addr`` who sent it."""

    to: str
    sender: str
    sender_addr: str
    seq: int = 0
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class Ping(Message):
    """Are you alive? Answered by an ``Ack`` with the same ``seq``."""


@dataclass(frozen=True)
class PingReq(Message):
    """Ping ``target`` for me; answer with its ``Ack`` (my ``seq``) or a ``Nack`` when it does not answer you."""

    target: str = ""
    target_addr: str = ""


@dataclass(frozen=True)
class Ack(Message):
    """The answer to the ``Ping`` (or ``PingReq``) with this ``seq``."""


@dataclass(frozen=True)
class Nack(Message):
    """Sent by an indirect prober whose own ping of the target got no ack: the asker's network works."""


@dataclass(frozen=True)
class Gossip(Message):
    """Updates only, no answer expected."""


@dataclass(frozen=True)
class Sync(Message):
    """Full-state exchange: ``updates`` holds the sender's whole table; answered by a ``Sync`` with ``reply``."""

    reply: bool = False


def invalid(message: object, own_id: str) -> str:
    """Why ``message`` cannot be handled ('' when it can): checked once, at the edge."""
    if not isinstance(message, Message):
        return f"not a SWIM message: {type(message).__name__}"
    if not (isinstance(message.sender, str) and message.sender and isinstance(message.sender_addr, str)
            and message.sender_addr):
        return "no sender or sender address"
    if message.sender == own_id:
        return "claims to come from this node"
    if not isinstance(message.seq, int) or isinstance(message.seq, bool):
        return "sequence number is not an integer"
    if isinstance(message, PingReq) and not (message.target and message.target_addr):
        return "indirect probe without a target"
    if not isinstance(message.updates, tuple):
        return "updates are not a tuple"
    for update in message.updates:
        if not isinstance(update, Update) or not isinstance(update.kind, Kind):
            return "an update of an unknown kind"
        if not (isinstance(update.node, str) and update.node and isinstance(update.origin, str)):
            return "an update without a node or origin"
        if not isinstance(update.incarnation, int) or isinstance(update.incarnation, bool) or update.incarnation < 0:
            return f"update about {update.node[:12]}: incarnation {update.incarnation!r} is not a count"
        if update.kind is Kind.ALIVE and not (update.addr and update.info is not None):
            return f"alive about {update.node[:12]} without its address or its own record"
        if update.info is not None and not (isinstance(update.info, NodeInfo) and update.info.node_id == update.node
                                            and isinstance(update.addr, str)):
            return f"update about {update.node[:12]} carries another node's record"
    return ""
