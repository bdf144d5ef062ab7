"""``grpc_mesh`` tasks: the receive side of the Tasks stream. Envelopes from one peer are handled in the
order they came, on a bounded queue per peer; each part of an envelope goes to the part of
``GrpcTasks`` that owns it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ....model import TaskProgress, short_id
from ...contracts import Topic
from ...shared import shortened
from .._generated import mesh_pb2 as pb
from ..wire import Peer
from .records import INBOUND_LIMIT
from .worker import TasksWorker

INBOUND_PEERS = 1024  # peers with envelopes waiting at once; a further one's envelopes are dropped (counted)
DRAIN_IDLE_SECONDS = 60.0  # a peer's drain that had nothing to handle this long ends (the next envelope starts one)


class TasksStream(TasksWorker):
    """The Tasks stream's receive side: ``_on_tasks`` queues each peer's envelopes (bounded, counted when
    dropped), ``_drain`` handles them one at a time, ``_handle`` dispatches their parts."""

    def _on_tasks(self, peer: Peer, env: pb.TaskMessage) -> None:
        """Envelopes from one peer are handled in the order they came (an accept before its result)."""
        queue = self._inbound.get(peer.node_id)
        if queue is None:
            if len(self._inbound) >= INBOUND_PEERS:
                self.refuse("tasks_inbound_dropped", peer.node_id,
                            f"grpc tasks: an envelope from {peer.name or '?'} dropped: {INBOUND_PEERS} peers wait")
                return
            if peer.address:
                self._heard_at.pop(peer.node_id, None)
                self._heard_at[peer.node_id] = peer.address
                while len(self._heard_at) > INBOUND_PEERS:  # the oldest first
                    del self._heard_at[next(iter(self._heard_at))]
            queue = self._inbound[peer.node_id] = asyncio.Queue(INBOUND_LIMIT)
            self.spawn(self._drain(peer, queue), f"tasks-from-{peer.name}")
        try:
            queue.put_nowait(env)
        except asyncio.QueueFull:  # the peer's leases, re-offers and resends recover what was dropped
            self.refuse("tasks_inbound_dropped", peer.node_id,
                        f"grpc tasks: an envelope from {peer.name or '?'} dropped: {INBOUND_LIMIT} of its wait already")

    async def _drain(self, peer: Peer, queue: asyncio.Queue[pb.TaskMessage]) -> None:
        """Handle ``peer``'s envelopes in order until it is idle for ``DRAIN_IDLE_SECONDS`` or this node closes.

        The wait is ``asyncio.timeout`` round ``queue.get``, not ``asyncio.wait_for``: on Python 3.11, a cancel
        (``close``) that comes in the loop pass in which the queue hands over an envelope is dropped by
        ``wait_for`` (it returns the envelope), and the drain then sat out its idle bound with ``close`` waiting
        for it (a crash under load took 60 s). The loop also ends once the node is closed, whatever the wait did."""
        try:
            while not self._closed:
                try:
                    async with asyncio.timeout(DRAIN_IDLE_SECONDS):
                        env = await queue.get()
                except TimeoutError:
                    if queue.empty():
                        return
                    continue
                try:
                    await self._handle(peer, env)
                except Exception as exc:  # one bad envelope never stops the peer's stream
                    self.refuse("backend_errors", peer.node_id,
                                f"grpc tasks from {peer.name or peer.address}: {shortened(repr(exc))}")
        finally:
            if self._inbound.get(peer.node_id) is queue:
                del self._inbound[peer.node_id]

    def _progress_of(self, peer: Peer, held: Iterable[pb.HeldAttempt]) -> dict[str, TaskProgress]:
        """The progress reports a renewal carries, validated; a bad one is counted and dropped (the lease is
        still renewed: a wrong hint never costs a running task)."""
        reports = {}
        for h in held:
            if not h.HasField("progress"):
                continue
            try:
                reports[h.task_id] = TaskProgress.checked(h.progress, h.progress_message)
            except ValueError as exc:
                self.refuse("refused_progress", peer.node_id,
                            f"grpc tasks: progress of {short_id(h.task_id)} from {peer.name or '?'} ignored: {exc}")
        return reports

    async def _handle(self, peer: Peer, env: pb.TaskMessage) -> None:
        if env.offers:
            self._take_offers(peer, env.offers)
        if env.accepts:
            await self._accepted(peer, env.accepts)
        if env.renewals:
            for renewal in env.renewals:
                kept = await self.store.renew(peer.node_id, [(h.task_id, h.attempt) for h in renewal.held],
                                              self._asked_lease(renewal.lease_seconds),
                                              self._progress_of(peer, renewal.held))
                if len(kept) < len(renewal.held):  # not its attempts (unknown, another attempt or worker)
                    self.counters["tasks_stale_renewals"] += len(renewal.held) - len(kept)
                self._send_to(peer.node_id, pb.TaskMessage(renewed=[pb.LeaseRenewed(
                    request_id=renewal.request_id, task_ids=sorted(kept))]))
        for renewed in env.renewed:
            self._renewal_answered(peer, renewed.request_id, set(renewed.task_ids))
        if env.results:
            # Recording waits for the backup's copy (up to BACKUP_TIMEOUT when the backup just died): off this
            # peer's ordered queue, so the lease renewals behind it are answered before the leases lapse.
            self.spawn(self._record_results(peer, env.results), f"results-from-{peer.name}")
        for ack in env.result_acks:
            self._resolve(peer, ("result", (ack.task_id, ack.attempt)), ack.recorded)
        if env.cancels:
            for cancel in env.cancels:  # only the owner that offered or handed the attempt may stop it
                key = (cancel.task_id, cancel.attempt)
                if self._held.get(cancel.task_id) == (peer.node_id, cancel.attempt):
                    self._cancels.add(key)
                offer = self._inbox.get(key)
                if offer is not None and offer.owner_id == peer.node_id:
                    del self._inbox[key]
            self._deliver(Topic.CANCEL)
        if env.backups:
            await self._keep_backups(peer, env.backups)
        for ack in env.backup_acks:
            self._resolve(peer, ("backup", (ack.task_id, ack.revision)), (not ack.refused, ack.forwarded))
        superseded: list[str] = []
        for handover in env.handovers:  # told by the new owner itself (it names itself or no one)
            held = self._held.get(handover.task_id)
            if handover.owner_id not in ("", peer.node_id):
                self.refuse("tasks_refused", peer.node_id, f"grpc tasks: {peer.name or '?'} handed task "
                                                           f"{handover.task_id[:40]!r} to another node")
            elif handover.previous_owner_id == self.node_id:
                superseded.append(handover.task_id)  # taken over while this node was held dead: not ours now
            elif held is not None and held[0] == handover.previous_owner_id:
                self._held[handover.task_id] = (peer.node_id, held[1])
        if superseded:
            mine = set(await self.store.task_states(superseded))
            if mine:
                await self._drop_owned(mine)
            self._send_to(peer.node_id, pb.TaskMessage(released=superseded))  # told no more
        if env.released:
            self._released(peer, env.released)
        if env.submits:  # storing waits for the backup's copy too
            self.spawn(self._take_submissions(peer, env.submits), f"submits-from-{peer.name}")
        for result in env.submit_results:
            self._resolve(peer, ("submit", result.request_id), (result.outcome, result.error))
        if env.finished:
            self._take_finished(peer, env.finished)
        for ack in env.finished_acks:
            self._resolve(peer, ("finished", ack.task_id), not ack.refused)
        if env.moves:  # a move that ends a task waits for the backup's copy too
            self.spawn(self._moves_from(peer, env.moves), f"moves-from-{peer.name}")
        for result in env.move_results:
            self._resolve(peer, ("move", result.request_id), result.applied)
