"""SWIM dissemination (pure): the bounded queue of rumours that ride on every outgoing message.

One rumour a node: a newer update about a node replaces the older one. Each is
sent about ``retransmit_mult * log10(n + 1)`` times, least sent first, then
dropped; when the queue is full the most retransmitted one makes room.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SwimConfig, retransmit_limit
from .messages import Update


@dataclass
class _Broadcast:
    update: Update
    sent: int = 0


class BroadcastQueue:
    """Updates waiting to be disseminated, at most one per node and ``queue_limit`` in all."""

    def __init__(self, cfg: SwimConfig) -> None:
        self.cfg = cfg
        self._queue: dict[str, _Broadcast] = {}

    def __len__(self) -> int:
        return len(self._queue)

    def __contains__(self, node_id: object) -> bool:
        """Whether an update about ``node_id`` is still waiting."""
        return node_id in self._queue

    def push(self, update: Update) -> None:
        """Queue ``update``; it replaces any older update about the same node."""
        self._queue.pop(update.node, None)
        if len(self._queue) >= self.cfg.queue_limit:
            most_sent = max(self._queue, key=lambda node: self._queue[node].sent)
            del self._queue[most_sent]
        self._queue[update.node] = _Broadcast(update)

    def drop(self, node_id: str) -> None:
        """Forget any update about ``node_id``."""
        self._queue.pop(node_id, None)

    def take(self, members: int) -> list[Update]:
        """Up to ``max_piggyback`` updates, least sent first, each counted as sent once more; an update is
        dropped once sent its retransmit limit for a mesh of ``members`` nodes."""
        if not self._queue:
            return []
        limit = retransmit_limit(self.cfg.retransmit_mult, members)
        chosen = sorted(self._queue.values(), key=lambda b: b.sent)[:self.cfg.max_piggyback]
        for broadcast in chosen:
            broadcast.sent += 1
            if broadcast.sent >= limit:
                del self._queue[broadcast.update.node]
        return [b.update for b in chosen]
