"""``redis_distributed``: machines on a network join one mesh through a Redis server.

Layout under one prefix ``mesh:{cluster}:`` (the braces are a Cluster hash tag):
node records, Redis-clock heartbeat times and leave marks in hashes; each task
a hash; per-node inboxes as sorted sets scored by priority then arrival (one
ZRANGE gives strict priority with FIFO inside it), a delayed set for retry
backoff, a held set and a lease sorted set for running work; a mesh-wide
pending set; per-status sorted sets for listing and counting; a result feed
stream per submitter; the memory log as a stream with a per-key hash of each
origin's latest frame for catch-up. Liveness: a heartbeat's stamp is Redis
``TIME``, one clock for every node; it changes with every heartbeat, so it is
also the heartbeat sequence the failure detector watches (in microseconds).
Every task transition is one Lua script
that checks the fencing token (task, attempt, holder), so a stale actor can
never record a result. Wake-ups go over pub/sub; the periodic polls remain.
A task for an idle worker (a free slot, an empty inbox) starts at enqueue:
its lease is granted there and the task is the worker's wake-up, so the worker
does not claim it; its next claim hands on one whose wake-up went unanswered.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable
from typing import Any

from ... import codec
from ...model import NodeInfo
from ..contracts import MeshSnapshot, Topic
from ..shared import GAUGE_SECONDS, CorruptRecord, FollowedNodes, news_of
from . import tls
from .client import _close_quickly, _s
from .memory import RedisMemory
from .tasks import RedisTasks

GHOST_SECONDS = 3600.0


class RedisBackend(RedisTasks, RedisMemory):
    """All three contracts over one Redis server: membership and lifecycle here, tasks and memory in their parts."""

    name = "redis_distributed"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._view = FollowedNodes()  # this reader's copy of the node records (see ``snapshot``)

    # -- lifecycle -----------------------------------------------------------------
    async def open(self, local: NodeInfo) -> None:
        self._local = local
        self._client = self._connect()
        await self._call(self._client.ping(), opening=True)
        self._register_scripts(self._client)
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            # redis-py can swallow a cancel mid-read; the loop also checks the flag every half second.
            await asyncio.wait({self._listener}, timeout=1.5)
            self._listener = None
        for line in (self._line, self._reads):
            if line is not None:
                line.close()
        self._line = self._reads = None
        if self._client is not None:
            await _close_quickly(self._client)
            self._client = None
        if self._sentinel is not None:  # its own clients, one per sentinel
            await _close_quickly(self._sentinel)
            self._sentinel = None

    # -- membership --------------------------------------------------------------------
    async def heartbeat(self, node: NodeInfo) -> None:
        record = codec.pack({
            "name": node.name, "type": node.node_type.value, "role": node.role.value, "host": node.host,
            "port": node.port, "pid": node.pid, "inc": node.incarnation, "caps": sorted(node.capabilities),
            "types": sorted(node.task_types), "cap": node.capacity, "running": node.running, "queued": node.queued,
            "metrics": json.loads(json.dumps(node.metrics, default=str)), "started": node.started_at,
            "sig": node.signature})
        changed = await self._script("HEARTBEAT", node.node_id, node.incarnation, record, news_of(node),
                                     GAUGE_SECONDS)
        if changed:
            await self._broadcast(Topic.MEMBERS)

    async def leave(self, node: NodeInfo) -> None:
        await self._script("LEAVE", node.node_id, node.incarnation)
        await self._broadcast(Topic.MEMBERS)

    async def snapshot(self, stamp_window: float = 0.0) -> MeshSnapshot:
        # The script has already moved aside heartbeat times and leave marks that are not numbers.
        view = self._view
        full = view.due_full()
        sent = time.time()
        raw = await self._script("SNAPSHOT", GHOST_SECONDS, 0 if full else view.version, view.epoch or "",
                                 stamp_window)
        answered = time.time()
        now = float(_s(raw[0]))
        stamps = self._read_all(view, raw) if int(raw[3]) else self._read_changes(view, raw)
        await self._settle_aside()
        # TIME was read somewhere within the round trip: taken at its middle, off by at most half of it.
        return MeshSnapshot(view.nodes(now, stamps), now, dict(view.depths), clock=now, reference_wall=now,
                            local_wall=(sent + answered) / 2, reference_error=max(0.0, answered - sent) / 2,
                            aged=True)

    def _read_all(self, view: FollowedNodes, raw: Any) -> dict[str, tuple[float, int]]:
        """Every record, stamp, leave mark and depth (``SNAPSHOT`` read everything): the copy starts again."""
        view.reset(_s(raw[1]), int(_s(raw[2])))
        records = {_s(raw[4][i]): raw[4][i + 1] for i in range(0, len(raw[4]), 2)}
        seen = {_s(raw[5][i]): float(_s(raw[5][i + 1])) for i in range(0, len(raw[5]), 2)}
        view.left.update({_s(raw[6][i]): int(float(_s(raw[6][i + 1]))) for i in range(0, len(raw[6]), 2)})
        view.depths.update({_s(raw[7][i]): int(raw[7][i + 1]) for i in range(0, len(raw[7]), 2)})
        self._decode_into(view, [(i, b) for i, b in records.items() if i in seen], seen)
        return {i: (ts, _beat_of(ts)) for i, ts in seen.items() if i in view.records}

    def _read_changes(self, view: FollowedNodes, raw: Any) -> dict[str, tuple[float, int]]:
        """The records changed since the copy's version, and the stamps older than the window."""
        version = int(_s(raw[2]))
        # a read that was overtaken by a newer one (two concurrent snapshots) brings older records: stamps only
        changed, fresh = (raw[4] if version >= view.version else []), []
        view.version = max(view.version, version)
        for i in range(0, len(changed), 4):
            node_id, blob, mark = _s(changed[i]), changed[i + 1], _s(changed[i + 2])
            if not blob:  # gone: forgotten as a ghost, or moved aside
                view.drop(node_id)
                continue
            view.depths[node_id] = int(changed[i + 3])
            if mark:
                view.left[node_id] = int(float(mark))
            else:
                view.left.pop(node_id, None)
            if view.raw.get(node_id) != blob:
                fresh.append((node_id, blob))
        self._decode_into(view, fresh)
        stale = raw[5]
        stamps = {_s(stale[i]): float(_s(stale[i + 1])) for i in range(0, len(stale), 2)}
        view.recount = len(view.records) != int(raw[6])
        return {i: (ts, _beat_of(ts)) for i, ts in stamps.items()}

    def _decode_into(self, view: FollowedNodes, rows: list[tuple[str, bytes]],
                     seen: dict[str, float] | None = None) -> None:
        """Decode ``rows`` (node id, stored record) into ``view``, with their stamps in ``seen`` checked; one that
        cannot be read goes aside and out."""
        decoded = {node.node_id: node for node in self.readable(
            "node record", rows, lambda r: self._node(r[0], r[1], seen),
            aside=lambda r: ("node", r[0], [("hdel", self._key("nodes"), r[0])]))}
        for node_id, blob in rows:
            if node_id in decoded:
                view.records[node_id], view.raw[node_id] = decoded[node_id], blob
            else:
                view.drop(node_id)

    def _node(self, node_id: str, blob: bytes, seen: dict[str, float] | None = None) -> NodeInfo:
        if seen is not None:
            _beat_of(seen[node_id])  # a stamp out of range makes the record unreadable
        try:
            r = codec.unpack(blob)
            if not isinstance(r, dict):
                raise TypeError(f"node record is a {type(r).__name__}, not a map")
        except (codec.CodecError, TypeError) as exc:
            raise CorruptRecord(f"node {node_id!r}: {exc}") from None
        g = r.get
        # the stamp and the leave mark are read apart from the record: ``FollowedNodes.nodes`` fills them in
        return self.node_from_fields({
            "node_id": node_id, "name": g("name"), "node_type": g("type"), "role": g("role"), "host": g("host"),
            "port": g("port"), "pid": g("pid"), "incarnation": g("inc"), "capabilities": g("caps"),
            "task_types": g("types"), "capacity": g("cap"), "running": g("running"), "queued": g("queued"),
            "metrics": g("metrics"), "started_at": g("started"), "last_seen": 0.0, "left": 0,
            "signature": g("sig"), "heartbeat_seq": 0})

    async def wake(self, node_ids: Iterable[str], topic: str) -> None:
        await self._wake(node_ids, topic)

    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        return _s(await self._script("HOLD_LEASE", name, holder, max(1, int(ttl * 1000))))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self._where(), "tls": tls.describe(self.cfg), "prefix": self.prefix,
                "reconnects": self.reconnects, **self.started_counts(), **self.availability()}


def _beat_of(seen: float) -> int:
    """The heartbeat sequence of a node: its last heartbeat's server time in µs changes with every beat."""
    if not math.isfinite(seen) or seen < 0:
        raise CorruptRecord(f"heartbeat time {seen!r} is out of range")
    return round(seen * 1e6)


__all__ = ["GHOST_SECONDS", "RedisBackend"]
