"""``grpc_mesh`` memory, master_slave: the memory primary's lease, a claim fenced by an epoch (package docstring)."""

from __future__ import annotations

import time

from ....model import LIVE, NodeStatus, NodeType
from .._generated import mesh_pb2 as pb
from ..core import log
from .base import MemoryState, _Claim


class MemoryPrimary(MemoryState):
    """The ``memory-primary`` lease: held by a live claim that is renewed, taken with a higher epoch when it lapses."""

    def primary_lease(self, holder: str, ttl: float) -> str:
        """``hold_lease("memory-primary", holder, ttl)`` on grpc: a live claim that is renewed holds; when it
        lapses the candidate takes it with a higher epoch, announced to every live worker (module docstring)."""
        now = time.monotonic()
        claim = self._claim
        if claim.node_id and claim.node_id != holder and now < claim.until and \
                (claim.node_id == self.node_id or self.status_of(claim.node_id) in LIVE):
            return claim.node_id
        candidate = self._primary_candidate(holder)
        if candidate != holder:
            if claim.node_id == holder == self.node_id and claim.until > now - claim.lease_seconds:
                # This node's own claim, with a better candidate active (it took the role while that one looked
                # suspect, or before it joined): released now, and said so until the candidate's claim is heard,
                # as the candidate honours a live claim. Else each would hold the other the primary until the claim
                # lapsed where the candidate heard it (writes handed back and forth meanwhile).
                if claim.until > now:
                    claim.until = now
                    self.counters["memory_primary_released"] += 1
                self._announce(claim, lease_seconds=0.0)
            return candidate  # the candidate takes the role on its own next renewal
        if claim.node_id != holder or now >= claim.until:
            self._claim = claim = _Claim(holder, claim.epoch + 1)
            self.counters["memory_primary_epochs"] += 1
            log.info("grpc memory: %s takes the memory primary role at epoch %d", holder[:12], claim.epoch)
            if holder == self.node_id:
                self._primary_taken()
        claim.until, claim.lease_seconds = now + ttl, ttl
        self._announce(claim)
        return holder

    def _primary_taken(self) -> None:
        """This node just took the primary role at a new epoch (the anti-entropy part catches up)."""

    def _primary_candidate(self, holder: str) -> str:
        """Who should hold the role when it is free: the configured primary, else a coordination hub, else the
        lowest node id, among the live workers and ``holder``."""
        named = self.config.memory_sync.primary
        me = self.info
        nodes = [i for i in self.live_peers(workers_only=True) if self.status_of(i.node_id) is NodeStatus.ACTIVE]
        ranked = [(i.node_id, i.name, i.node_type) for i in nodes]
        ranked.append((holder, me.name if me and holder == self.node_id else "",
                       me.node_type if me and holder == self.node_id else NodeType.GENERAL))
        ranked.sort(key=lambda r: (not (named and r[1] == named), r[2] is not NodeType.COORDINATION_HUB, r[0]))
        return ranked[0][0]

    def _announce(self, claim: _Claim, *, lease_seconds: float | None = None) -> None:
        """Tell every live worker of ``claim``, good for its lease (``lease_seconds``: 0 releases it)."""
        if self.wire is None:
            return
        lease = claim.lease_seconds if lease_seconds is None else lease_seconds
        for info in self.live_peers(workers_only=True):
            address = self.address_of(info.node_id)
            if address:
                self.wire.send(address, "memory", pb.MemoryMessage(primary=pb.PrimaryClaim(
                    node_id=claim.node_id, epoch=claim.epoch, lease_seconds=lease)))

    def _tell_claim(self, node_id: str) -> None:
        """Tell a node that claims the role with a weaker epoch (one restarted, which forgot it, or cut off) this
        node's own claim, with what is left of its lease: it takes the role again above that epoch. Only its own: a
        node takes a claim from its claimant only (one relayed would be refused there, and counted as a bad message);
        a claim of another node reaches it from that node, which announces it at every renewal."""
        claim, address = self._claim, self.address_of(node_id)
        if self.wire is not None and address and claim.node_id == self.node_id:
            left = max(0.0, claim.until - time.monotonic())
            self.wire.send(address, "memory", pb.MemoryMessage(primary=pb.PrimaryClaim(
                node_id=claim.node_id, epoch=claim.epoch, lease_seconds=left)))

    def _heard_claim(self, node_id: str, epoch: int, lease_seconds: float) -> None:
        claim = self._claim
        if not node_id:
            return
        if claim.beats(epoch, node_id):
            if node_id != self.node_id and node_id != claim.node_id:
                self._tell_claim(node_id)
            return
        if (epoch, node_id) != (claim.epoch, claim.node_id):
            if claim.node_id == self.node_id:
                self.counters["memory_primary_deposed"] += 1
                log.warning("grpc memory: deposed as memory primary by %s at epoch %d", node_id[:12], epoch)
            self._claim = claim = _Claim(node_id, epoch)
        claim.lease_seconds = lease_seconds or claim.lease_seconds
        claim.until = time.monotonic() + lease_seconds  # what is left of it (a told claim may have lapsed)

    @property
    def memory_epoch(self) -> tuple[str, int]:
        """The strongest primary claim known here: (node id, epoch)."""
        return self._claim.node_id, self._claim.epoch
