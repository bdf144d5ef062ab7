"""``grpc_mesh`` membership: the SWIM detector of ``mesh_core.swim`` driven over the ``Membership`` streams.

A node joins through ``grpc.seeds`` (any live member will do; a coordination hub is the natural seed) and
learns the rest by gossip. Every judgement is made on this process's monotonic clock: SWIM decides who is
alive, suspect, dead or left, and ``snapshot`` hands those verdicts to the node's membership table
(``MeshSnapshot.judged``) instead of record ages. A heartbeat gossips this node's new record (load,
capabilities) as an alive with a higher SWIM incarnation; a graceful leave gossips ``left`` and keeps
ticking briefly so the word spreads. A node heard of as dead or gone has its streams closed.

Its own wall clock: with no store to ask, a node measures its wall clock against its peers' from the
exchanges that answer it (an Ack to its Ping, the answer to its join or push-pull carry the answerer's wall
time): each gives the peer's offset within ± half the round trip (timed on the monotonic clock). The
snapshot's reference is the median over the live workers (``clock.mesh_clock_reference``: a worker votes
too, an even vote goes to the earlier clock), so the node whose clock is off the mesh's majority fences
itself. Wall times serve only this; liveness is judged on the monotonic clock alone.

Wake-ups ride on the same stream (``wake_topics``). Leases (``hold_lease``) are judged by the members as
this node sees them: the holder is kept while it is live and renews; a lapsed or dead holder is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ... import swim
from ...clock import mesh_clock_reference, peer_clock_sample
from ...config import advertise_address
from ...membership import Change
from ...model import LIVE, NodeInfo, NodeRole, NodeStatus
from ...security import Trust, node_parts, sign
from ...waits import wait_event
from ..contracts import MeshSnapshot, Topic
from ..shared import node_from_fields, shortened
from ._generated import mesh_pb2 as pb
from .core import SHOWN_REFUSALS, GrpcCore
from .records import envelope_of, messages_of
from .tls import Credentials, check_plaintext_listen, tls_files
from .wire import Peer, Wire

TICK_SECONDS = 0.02  # the detector's clock advances at least this often
AWAY_SECONDS = 1.0  # the detector's loop stood still this long: this process was away (stopped, suspended)
LEAVE_SPREAD_SECONDS = 0.5  # a leaving node keeps gossiping this long at most
JOIN_WAIT_SECONDS = 2.0  # open() waits this long at most for a seed to answer (the join goes on after)
CLIENT_CLOCK_WAIT_SECONDS = 0.5  # … and a client this much longer for every live seed's answer (its clock votes)
CLOCK_SAMPLE_SECONDS = 60.0  # a peer's clock sample older than this is not used


class GrpcMembership(GrpcCore):
    """MembershipMedium over SWIM."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire: Wire | None = None
        self.swim: swim.SwimNode | None = None
        self._frames: dict[tuple[str, int], bytes] = {}
        self._kick = asyncio.Event()
        self._refused_callers: set[str] = set()
        self.insecure = False  # plaintext on a non-loopback address (grpc.insecure)
        self._leases: dict[str, tuple[str, float]] = {}  # name → (holder, monotonic expiry) as seen here
        self._asked_at: dict[tuple[str, int], tuple[float, float]] = {}  # (address, ping seq) → (wall, monotonic)
        self._synced_at: dict[str, tuple[float, float]] = {}  # address → when a push-pull went there unanswered
        self._clocks: dict[str, tuple[float, float, float]] = {}  # peer → (offset, error, monotonic when measured)
        # whose records this node believes (allowlist, api_key signature): SWIM keeps every member it can probe,
        # but one this node refuses is no peer for its tasks, copies or memory; verdicts by (id, incarnation, sig)
        self.trust = Trust(tuple(self.config.security.allowlist), self.config.security.api_key)
        self._trusted: dict[tuple[str | None, tuple[str, ...]], bool] = {}

    # -- lifecycle -----------------------------------------------------------------------------------
    async def open(self, local: NodeInfo) -> None:
        cfg = self.config
        grpc_cfg = cfg.grpc
        self.node_id = local.node_id
        self.info = None  # no record of this node in its own view until its first heartbeat
        client = local.role is not NodeRole.WORKER
        # A one-shot client (named NAME-pid) speaks with NAME's certificate (node_name, or "cli").
        cert_name = (cfg.node_name or "cli") if client else local.name
        files = tls_files(cfg, cert_name)
        self.insecure = check_plaintext_listen(cfg, cert_name, files is not None)  # before anything binds
        self.wire = wire = Wire(
            node_id=local.node_id, name=local.name, incarnation=local.incarnation, host=grpc_cfg.host,
            port=0 if client else grpc_cfg.port, advertise=getattr(grpc_cfg, "advertise", "") or "",
            max_message_bytes=grpc_cfg.max_message_bytes, keepalive_seconds=grpc_cfg.keepalive_seconds,
            api_key=cfg.security.api_key, counters=self.counters,
            tls=Credentials(files) if files is not None else None, allowlist=tuple(cfg.security.allowlist))
        wire.expected_name = self._name_at
        await self._open_store(local)
        if client:
            address = await self._client_address(wire)
        else:
            await wire.start()
            wire.address = address = advertise_address(grpc_cfg, wire.port)
        wire.on_stream("membership", self._received)
        wire.on_refusal = self._refused
        swim_cfg = swim.SwimConfig.from_timeouts(cfg.suspect_after_seconds, cfg.node_timeout_seconds)
        # Until its first heartbeat a node is known but takes no work: no task types, and not "left" (a leave
        # sticks for its incarnation in every table); the hub media hold no record at all until then.
        joining = replace(local, left=False, task_types=frozenset())
        if self.trust.api_key:  # signed as it is sent: the local record's signature covers its task types
            joining.signature = sign(self.trust.api_key, *node_parts(joining))
        self.swim = swim.SwimNode(joining, address, swim_cfg, random.Random(), seeds=tuple(grpc_cfg.seeds),
                                  now=time.monotonic())
        await self._open_parts()
        self.spawn(self._swim_loop(), "swim")
        if grpc_cfg.seeds:
            deadline = time.monotonic() + JOIN_WAIT_SECONDS
            while not self.swim.joined and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if client and self.swim.joined:  # a one-shot command writes at once: its clock is measured first
                deadline = min(deadline, time.monotonic() + CLIENT_CLOCK_WAIT_SECONDS)
                while time.monotonic() < deadline and any(
                        m.addr in self._synced_at for m in self.swim.members() if m.status in LIVE):
                    await asyncio.sleep(0.01)

    async def _client_address(self, wire: Wire) -> str:
        """A one-shot client still needs a server: answers to its calls and streams come back to it."""
        wire.client = False
        wire.port = 0
        return await wire.start()

    async def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(Exception):
            await self._client_leave()
        self._closed = True
        try:
            await self._close_parts()
            await self._cancel_background()
        finally:  # also when the caller gave up waiting (cancelled): the port and the files are let go
            if self.wire is not None:
                await self.wire.stop(0)
            await self._close_store()

    async def _client_leave(self) -> None:
        """A client that goes says so (a worker's stop leaves through ``leave``): its members would otherwise
        probe a closed port until they declare it dead, each failed probe counting against their own health."""
        node, wire = self.swim, self.wire
        if node is None or wire is None or node.me.info.role is NodeRole.WORKER or node.me.status is NodeStatus.LEFT:
            return
        messages = node.leave(time.monotonic())
        self._send(messages)
        await self._until_sent(wire, {m.to for m in messages}, time.monotonic() + LEAVE_SPREAD_SECONDS)

    @staticmethod
    async def _until_sent(wire: Wire, told: set[str], deadline: float) -> None:
        """Until the membership messages queued for ``told`` have left this node's send queues, or ``deadline``."""
        while any(wire.queued(to, "membership") for to in told) and time.monotonic() < deadline:
            await asyncio.sleep(TICK_SECONDS / 4)
        await asyncio.sleep(TICK_SECONDS)  # taken from the queue is not yet written to the stream

    # -- records -------------------------------------------------------------------------------------
    async def heartbeat(self, node: NodeInfo) -> None:
        node = replace(node, heartbeat_seq=node.heartbeat_seq)
        previous = self.info
        self.info = node
        if self.swim is None:
            return
        if node.incarnation > (previous.incarnation if previous else 0) and self.wire is not None:
            self.wire.incarnation = node.incarnation
        self.swim.update_info(node)
        self._kick.set()

    async def leave(self, node: NodeInfo) -> None:
        if self.swim is None:
            return
        self.info = replace(node, left=True)
        self.swim.update_info(self.info)
        messages = self.swim.leave(time.monotonic())
        self._send(messages)
        # Told directly (the usual small mesh: the leave's fanout covers every live member), it only waits for
        # those messages to leave its queues; else it gossips on until the rumour is spread or time is up.
        told = {m.to for m in messages}
        deadline = time.monotonic() + LEAVE_SPREAD_SECONDS
        if all(m.addr in told for m in self.swim.members() if m.node_id != self.node_id and m.status in LIVE):
            if self.wire is not None:
                await self._until_sent(self.wire, told, deadline)
            return
        while self.swim.pending_updates() and time.monotonic() < deadline:
            await asyncio.sleep(TICK_SECONDS)

    async def snapshot(self, stamp_window: float = 0.0) -> MeshSnapshot:
        now = time.monotonic()
        nodes: list[NodeInfo] = []
        judged: dict[str, NodeStatus] = {}
        for member in self.swim.members() if self.swim else ():
            info = member.info
            if member.node_id == self.node_id:
                if self.info is None:
                    continue
                info = self.info
            left = info.left or member.status is NodeStatus.LEFT
            nodes.append(replace(info, left=left, last_seen=now))
            judged[member.node_id] = member.status
        snap = MeshSnapshot(nodes, now, queued=self._queued_counts(), clock=now, judged=judged)
        reference = self._clock_reference(now)
        if reference is not None:
            offset, error = reference
            snap.local_wall = time.time()
            snap.reference_wall, snap.reference_error = snap.local_wall + offset, error
        return snap

    def _clock_reference(self, now: float) -> tuple[float, float] | None:
        """The mesh's wall clock against this one (offset, error), from the live workers' latest samples."""
        node = self.swim
        if node is None:
            return None
        samples = []
        for peer_id, (offset, error, at) in list(self._clocks.items()):
            member = node.member(peer_id)
            if member is None or member.status not in LIVE or now - at > CLOCK_SAMPLE_SECONDS:
                if member is None or member.status not in LIVE:
                    del self._clocks[peer_id]
                continue
            if member.info.role is NodeRole.WORKER:
                samples.append((offset, error))
        return mesh_clock_reference(samples, voting=node.me.info.role is NodeRole.WORKER)

    def _clock_sampled(self, peer: Peer, asked: tuple[float, float] | None, peer_wall: float) -> None:
        if asked is None or peer_wall <= 0 or not peer.node_id:
            return
        sent_wall, sent_mono = asked
        now = time.monotonic()
        offset, error = peer_clock_sample(sent_wall, now - sent_mono, peer_wall)
        self._clocks[peer.node_id] = (offset, error, now)

    def _queued_counts(self) -> dict[str, int]:
        """Tasks held per node as this node knows them (the tasks part overrides)."""
        return {}

    # -- wake-ups ------------------------------------------------------------------------------------
    async def wake(self, node_ids: Iterable[str], topic: str) -> None:
        for node_id in set(node_ids):
            if node_id == self.node_id:
                self._deliver(topic)
                continue
            address = self.address_of(node_id)
            if address and self.wire is not None:
                self.wire.send(address, "membership", pb.MembershipMessage(wake_topics=[str(topic)]))

    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        now = time.monotonic()
        current = self._leases.get(name)
        if current is not None:
            who, until = current
            alive = who == self.node_id or self.status_of(who) in LIVE
            if who != holder and until > now and alive:
                return who
        self._leases[name] = (holder, now + ttl)
        return holder

    # -- members ------------------------------------------------------------------------------------
    def address_of(self, node_id: str) -> str | None:
        member = self.swim.member(node_id) if self.swim else None
        return member.addr if member is not None else None

    def status_of(self, node_id: str) -> NodeStatus | None:
        return self.swim.status_of(node_id) if self.swim else None

    def member_info(self, node_id: str) -> NodeInfo | None:
        if node_id == self.node_id:
            return self.info
        member = self.swim.member(node_id) if self.swim else None
        return member.info if member is not None else None

    def _name_at(self, address: str) -> str | None:
        """The name of the worker the members say listens at ``address`` (what its certificate must name)."""
        if self.swim is None:
            return None
        for member in self.swim.members():
            if member.addr == address and member.node_id != self.node_id and member.info.role is NodeRole.WORKER:
                return member.info.name
        return None

    def live_peers(self, *, workers_only: bool = False) -> list[NodeInfo]:
        if self.swim is None:
            return []
        out = [m.info for m in self.swim.members()
               if m.node_id != self.node_id and m.status in LIVE
               and not (workers_only and m.info.role is not NodeRole.WORKER) and self._believed(m.info)]
        return sorted(out, key=lambda info: info.node_id)

    def _believed(self, info: NodeInfo) -> bool:
        """Whether the node's table takes this member's record (the same rule, ``Trust``): only then is it a
        peer for tasks, backups and memory (a keyless node that answers probes is still no backup)."""
        parts = node_parts(info)  # the verdict is of these parts under this signature (a record's port or types
        key = (info.signature, parts)  # may be filled in after it was first seen, signed anew)
        verdict = self._trusted.get(key)
        if verdict is None:
            if len(self._trusted) >= 4096:
                self._trusted.clear()
            verdict = self._trusted[key] = not self.trust.refuses((info.node_id, info.name, info.host),
                                                                  info.signature, parts)
        return verdict

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name}
        if self.wire is not None:
            out["address"] = self.wire.address
            if self.wire.tls is not None:
                out["grpc_tls"] = self.wire.tls.describe()
            out["insecure"] = self.insecure
        if self.swim is not None:
            out["seeds"] = list(self.config.grpc.seeds)
            out["members"] = len([m for m in self.swim.members() if m.status in LIVE])
            out["swim_health"] = self.swim.health.score
        # what peers sent that was refused (bad input is counted here every time, reported once per peer)
        out.update({k: v for k, v in sorted(self.counters.items()) if v and k in SHOWN_REFUSALS
                    or k.startswith(("wire_handler_errors_", "refused_calls_"))})
        return out

    # -- the detector ---------------------------------------------------------------------------------
    async def _swim_loop(self) -> None:
        node = self.swim
        assert node is not None
        late_after = node.cfg.probe_timeout  # a shorter stall cannot have made an ack miss its probe
        last = time.monotonic()
        while not self._closed:
            now = time.monotonic()
            if now - last - TICK_SECONDS > late_after:
                # This process was too busy to run the detector on time (Lifeguard's self-awareness): acks it
                # missed meanwhile say more about it than about its peers, so it stretches its own timeouts.
                node.health.add(1)
                self.counters["swim_late_ticks"] += 1
            if now - last >= AWAY_SECONDS:  # stopped, suspended: what was pushed here meanwhile may be lost
                self.counters["swim_away"] += 1
                self._back_from_away()
            last = now
            try:
                self._send(node.tick(now))
                self._publish_changes()
            except Exception as exc:  # the detector ticks on whatever one round did
                self.refuse("swim_loop_errors", "", f"grpc membership: a detector round failed: {exc!r}")
            self._kick.clear()
            await wait_event(self._kick, TICK_SECONDS)

    def _publish_changes(self) -> None:
        assert self.swim is not None
        changes: list[Change] = self.swim.take_changes()
        for change in changes:
            self._member_changed(change)
            if change.new in (NodeStatus.DEAD, NodeStatus.LEFT) and self.wire is not None:
                address = self.address_of(change.node.node_id)
                if address:
                    self.spawn(self.wire.forget(address), "forget")
        if changes:
            self._deliver(Topic.MEMBERS)

    def _send(self, messages: Iterable[swim.Message]) -> None:
        wire = self.wire
        if wire is None or self._silent:
            return
        for message in messages:
            env = envelope_of(message, self.limits, self._frames)
            if isinstance(message, swim.Ping):
                self._asked_at.setdefault((message.to, message.seq), (time.time(), time.monotonic()))
            elif isinstance(message, swim.Sync) and not message.reply:
                self._synced_at.setdefault(message.to, (time.time(), time.monotonic()))
            elif isinstance(message, swim.Ack):
                env.acks[0].wall_time = time.time()
            elif isinstance(message, swim.Sync):
                env.state_sync.wall_time = time.time()
            wire.send(message.to, "membership", env)
        if len(self._frames) > 4096:
            self._frames.clear()
        if len(self._asked_at) > 4096:  # probes never answered (their targets died)
            self._asked_at.clear()
        if len(self._synced_at) > 4096:
            self._synced_at.clear()

    def _refused(self, peer: Peer, why: str) -> None:
        """A caller refused at the wire: counted ``refused_nodes`` once per node it claims to be, and logged
        with who and why; nothing it sent is read."""
        key = peer.node_id or peer.address
        if key in self._refused_callers:
            return
        if len(self._refused_callers) < 10_000:
            self._refused_callers.add(key)
        self.found_problem("refused_nodes", f"node {peer.name or '?'} ({peer.node_id[:12] or 'no id'}, "
                                            f"{peer.address or 'no address'}) {why}: its calls are refused")

    def _certified_only(self, peer: Peer, message: swim.Message) -> swim.Message:
        """With TLS: a message without the records that name a node otherwise than its certificate did (the
        sender's own record must carry the name its certificate gave it; a rumour about a node this one met
        first-hand must carry that node's certified name). Each refusal is counted, reported once per sender."""
        assert self.wire is not None
        kept = []
        for update in message.updates:
            info = update.info
            if info is not None:
                certified = peer.name if update.node == peer.node_id else self.wire.certified_name(update.node)
                if certified is not None and info.name != certified:
                    self.refuse("refused_identity_records", peer.node_id,
                                f"grpc membership: {peer.name} sent a record naming node {update.node[:12]} "
                                f"{info.name!r}, its certificate says {certified!r}: the record is dropped")
                    continue
            kept.append(update)
        if len(kept) == len(message.updates):
            return message
        return replace(message, updates=tuple(kept))

    def silence(self, silent: bool) -> None:
        """Fault injection (tests, chaos): drop every membership message in and out, as a stopped process would
        answer no probe, while everything else runs on."""
        self._silent = silent

    _silent = False

    def _received(self, peer: Peer, env: pb.MembershipMessage) -> None:
        if self._silent:
            return
        for topic in env.wake_topics:
            if topic in Topic.__members__.values() or topic in {t.value for t in Topic}:
                self._deliver(topic)
        node = self.swim
        if node is None or not peer.node_id or not peer.address or peer.client:
            return
        who = peer.node_id
        for ack in env.acks:  # a relayed Ack comes from the intermediary, whose address was not pinged with seq
            self._clock_sampled(peer, self._asked_at.pop((peer.address, ack.seq), None), ack.wall_time)
        if env.HasField("state_sync") and not env.state_sync.reply_wanted:
            self._clock_sampled(peer, self._synced_at.pop(peer.address, None), env.state_sync.wall_time)
        try:
            messages = messages_of(env, peer.node_id, peer.address, node.addr, self.limits, node_from_fields)
        except ValueError as exc:
            self.refuse("swim_refused", who, f"grpc membership: refused an envelope from {peer.name or who[:12]}: "
                                             f"{shortened(str(exc))}")
            return
        if self.wire is not None and self.wire.tls is not None:
            messages = [self._certified_only(peer, message) for message in messages]
        now = time.monotonic()
        doomed = doubted = False
        for message in messages:
            about_me = [u.kind for u in message.updates if u.node == self.node_id and u.incarnation >= node.incarnation]
            doomed = doomed or swim.Kind.DEAD in about_me
            doubted = doubted or swim.Kind.SUSPECT in about_me or swim.Kind.DEAD in about_me
            before = node.counters["swim_refused"]
            self._send(node.receive(message, now))
            if node.counters["swim_refused"] != before:  # the detector's own edge check refused it
                self.refuse("swim_refused", who, f"grpc membership: refused a message from {peer.name or who[:12]}: "
                                                 f"{node.last_refusal}")
        self._publish_changes()
        if doubted:
            self._back_from_away()
        if doomed:
            self.counters["declared_dead"] += 1
            self._declared_dead()
