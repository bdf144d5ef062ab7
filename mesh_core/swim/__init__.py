"""SWIM-family failure detector for the peer-to-peer medium (pure state machine, no I/O).

One ``SwimNode`` (``node``) is one node's view of the mesh; the driver (the
gRPC membership medium) feeds it time and messages and sends what it returns.
The protocol, in the words of SWIM and Lifeguard, and where each part lives:

- **Probes** (``probe``). Once per probe interval the node pings the next
  member of a round-robin over a shuffled list. No ack within the probe
  timeout → it asks ``indirect_checks`` other members to ping the target for
  it (they answer with the target's ack, or a nack when the target did not
  answer them). No ack by the end of the interval → the target is *suspect*.
- **Suspicion** (``table``) lasts between ``suspicion_min`` and
  ``suspicion_max`` (both scaled by log n for big meshes); every independent
  confirmation (another member suspecting the same incarnation) shrinks it
  towards the minimum on a log curve. When it runs out the member is *dead*.
- **Incarnations** (``table``, ``node``). A node that hears itself suspected
  or declared dead refutes it with a higher incarnation; a higher incarnation
  overrides anything said about a lower one. ``left`` (graceful stop) sticks
  until a higher incarnation.
- **Refutation under loss** (``node``). Every message to a member held
  suspect tells it so (and each suspect is challenged every gossip round); a
  node told it is doubted answers the sender directly with its alive; a
  suspect heard from directly gets at least ``suspicion_min`` more, on the
  receiver's clock, for its refutation to arrive; every other probe goes to a
  suspect.
- **Dissemination** (``gossip``). Updates wait in a bounded queue, one per
  node (a newer update about a node replaces an older one), and ride on every
  outgoing message, each about ``retransmit_mult * log10(n + 1)`` times;
  while the queue holds something, a small gossip message also goes to a few
  members every gossip interval.
- **Local health** (``probe``, Lifeguard): missed acks, nacks not received
  and refutations of its own suspicion raise the node's health score;
  successful probes lower it. The multiplier ``score + 1`` stretches this
  node's probe interval, probe timeout and suspicion timeouts, so a node that
  is itself slow does not declare healthy ones dead.
- **Join** (``node``). A node starts from seed addresses, sends each a
  full-state exchange (``Sync``) until one answers, and learns the rest by
  gossip; the driver may ask for a full-state exchange at any time
  (``sync_with``), and one runs with a random member every ``sync_interval``.

Messages and the check every received one passes are in ``messages``; the
timings in ``config``.
"""

from .config import SwimConfig, mesh_scale, retransmit_limit
from .messages import Ack, Gossip, Kind, Message, Nack, Ping, PingReq, Sync, Update
from .node import SwimNode
from .table import SwimMember

__all__ = ["Ack", "Gossip", "Kind", "Message", "Nack", "Ping", "PingReq", "SwimConfig", "SwimMember",
           "SwimNode", "Sync", "Update", "mesh_scale", "retransmit_limit"]
