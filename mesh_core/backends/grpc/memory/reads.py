"""``grpc_mesh`` memory: ``Pull`` calls to a peer, and a client's reads of keys from the workers (package docstring)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence

import grpc

from .... import codec
from ....errors import CodecError
from ....memory.store import item_from_wire
from ....model import NodeStatus
from .._generated import mesh_pb2 as pb
from .base import PEER_CALL_SECONDS, PULL_KEYS, READ_HEDGE_SECONDS, READ_REPLICAS, _unique, peer_call_failed
from .push import MemoryPush

_KeyAnswer = dict[tuple[str | None, str], list[bytes]] | None  # one peer's frames by (memory type or None, key)


class MemoryReads(MemoryPush):
    """One Pull of a peer (``_pull_call``), and a client's reads of keys: two workers first, the others when those
    differ or are slow (``_pull_keys_now``)."""

    async def _try_pull(self, peer_id: str, request: pb.PullRequest,
                        timeout: float = PEER_CALL_SECONDS) -> list[bytes] | None:
        """The frames ``peer_id`` answers to ``request``; None (counted) when it did not answer."""
        page = await self._pull_call(peer_id, request, timeout)
        return None if page is None else page[0]

    async def _pull_call(self, peer_id: str, request: pb.PullRequest,
                         timeout: float = PEER_CALL_SECONDS) -> tuple[list[bytes], bool] | None:
        """The frames ``peer_id`` answers to ``request`` and whether it has more (``page_bytes``); None (counted)
        when it did not answer."""
        address, wire = self.address_of(peer_id), self.wire
        if not address or wire is None:
            return None
        asked = pb.PullRequest()
        asked.CopyFrom(request)
        asked.caller.CopyFrom(wire.hello())
        frames: list[bytes] = []
        more = False
        try:
            async for chunk in wire.stub(address).Pull(asked, timeout=timeout, metadata=wire.metadata()):
                frames.extend(chunk.frames)
                more = chunk.more
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            peer_call_failed(self.counters, "Pull", address, exc)
            return None
        return frames, more

    async def _pull_keys(self, memory_type: str | None, keys: list[str], *, versions: bool = False) -> list[bytes]:
        """A client's read of keys from the live workers (see ``_pull_keys_now``). Concurrent reads share the calls
        (``_key_pulls``): a client writing 64 keys at once asks each worker once for all of them, not 64 times."""
        found = await self._key_pulls([(memory_type, key, versions) for key in keys])
        return [f for frames in found for f in frames]

    async def _pull_keys_now(self, wanted: list[tuple[str | None, str, bool]]) -> list[list[bytes]]:
        """The frames of each ``(memory_type or None, key, versions)`` in ``wanted``: what any live worker holds.

        Newest entries are asked of ``READ_REPLICAS`` workers first (active ones, picked by the first key: the
        same for every client); the other live workers are asked only for the keys on which those answers differ
        (one is behind: it joined late, an entry is on its way), or for all of them when one did not answer (or not
        within ``READ_HEDGE_SECONDS``: then they are asked meanwhile, not after its call timed out, and the read
        ends once two answered or that long after the first answer; a worker slow to answer is asked last). A key
        that agrees there is what any worker holds but for entries still on their way to both, which a write built
        on it meets as a concurrent sibling, as a worker's own write does. Versions (history) are asked of every
        live worker: a key's history is the union of theirs."""
        peers = [p.node_id for p in self.live_peers(workers_only=True)]
        if not wanted or not peers:
            return [[] for _ in wanted]
        now = time.monotonic()
        history = any(versions for _, _, versions in wanted)
        if history:
            first = peers
        else:
            ranked = sorted(read_order(wanted[0][1], peers), key=lambda p: self.status_of(p) is not NodeStatus.ACTIVE)
            prompt = [p for p in ranked if not self._slow_to_answer(p, now)]
            if len(prompt) < min(READ_REPLICAS, len(ranked)):
                # Fewer than two answer promptly: every live worker is asked at once, and the read ends when the
                # prompt ones answered (or READ_HEDGE_SECONDS after the first answer).
                return await self._widened({}, ranked, wanted, max(1, len(prompt)))
            first = prompt[:READ_REPLICAS]
        rest = [p for p in peers if p not in first]
        asked = {p: asyncio.ensure_future(self._ask_keys([p], wanted)) for p in first}
        if rest:
            done, _ = await asyncio.wait(asked.values(), timeout=READ_HEDGE_SECONDS)
            if len(done) < len(asked) or any(f.result()[0] is None for f in done):
                # One of them is slow or gone (paused, overloaded, cut off): the others are asked meanwhile. The read
                # ends once READ_REPLICAS of all of them answered, or READ_HEDGE_SECONDS after the first answer: not
                # when the slow one's call times out.
                return await self._widened(asked, rest, wanted, READ_REPLICAS)
        answers = await self._first_answers(asked, len(asked), patience=None if history else READ_HEDGE_SECONDS)
        if rest:
            heard = [a for a in answers if a is not None]
            differ = wanted if len(heard) < len(first) else \
                [w for w in wanted if len({frozenset(a.get(w[:2], ())) for a in heard}) > 1]
            if differ:
                self.counters["memory_client_reads_widened"] += 1
                answers += await self._ask_keys(rest, differ)
        return _merged_answers(wanted, answers)

    async def _widened(self, asked: dict[str, asyncio.Task[list[_KeyAnswer]]], more: Sequence[str],
                       wanted: list[tuple[str | None, str, bool]], enough: int) -> list[list[bytes]]:
        """A read widened to ``more`` workers besides those ``asked`` already: it ends once ``enough`` answered, or
        READ_HEDGE_SECONDS after the first answer."""
        self.counters["memory_client_reads_widened"] += 1
        asked.update((p, asyncio.ensure_future(self._ask_keys([p], wanted))) for p in more)
        return _merged_answers(wanted, await self._first_answers(asked, enough, patience=READ_HEDGE_SECONDS))

    async def _first_answers(self, asked: Mapping[str, asyncio.Future[list[_KeyAnswer]]], enough: int,
                             patience: float | None = None) -> list[_KeyAnswer]:
        """The answers of the peers ``asked`` (one read each) once ``enough`` of them answered, or every one ended,
        or (with ``patience``) that many seconds after the first answer; the reads still under way then are cut
        short, and their peers noted as slow to answer (``_slow_to_answer``) when the read took READ_HEDGE_SECONDS
        or more, as are the peers that did not answer."""
        pending = set(asked.values())
        answers: list[_KeyAnswer] = []
        until: float | None = None
        started = time.monotonic()
        try:
            while pending and sum(a is not None for a in answers) < enough:
                left = None if until is None else until - time.monotonic()
                if left is not None and left <= 0:
                    break
                done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                answers += [f.result()[0] for f in done]
                if until is None and patience is not None and any(a is not None for a in answers):
                    until = time.monotonic() + patience
        finally:
            now = time.monotonic()
            late = now - started >= READ_HEDGE_SECONDS  # a read cut short sooner was only not among the first
            for peer, future in asked.items():
                if (future in pending and late) or (future.done() and not future.cancelled()
                                                    and future.exception() is None and future.result()[0] is None):
                    self._read_missed[peer] = now
                if future in pending:
                    future.cancel()
        return answers

    async def _ask_keys(self, peers: Sequence[str], wanted: Sequence[tuple[str | None, str, bool]]
                        ) -> list[_KeyAnswer]:
        """Per peer, the frames it holds of ``wanted`` by ``(memory_type, key)`` and ``(None, key)``; None when it
        did not answer. One Pull per peer and kind of read (at most ``PULL_KEYS`` keys each)."""
        groups: dict[tuple[str | None, bool], list[str]] = {}
        for memory_type, key, versions in wanted:
            groups.setdefault((memory_type, versions), []).append(key)
        requests: list[pb.PullRequest] = []
        for (memory_type, versions), keys in groups.items():
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), PULL_KEYS):
                request = pb.PullRequest(keys=unique[start:start + PULL_KEYS], versions=versions)
                if memory_type is not None:
                    request.memory_type = memory_type
                requests.append(request)
        pulled = await asyncio.gather(*(self._try_pull(p, r) for p in peers for r in requests))
        out: list[dict[tuple[str | None, str], list[bytes]] | None] = []
        for i in range(len(peers)):
            mine = pulled[i * len(requests):(i + 1) * len(requests)]
            if any(frames is None for frames in mine):
                out.append(None)
                continue
            by_key: dict[tuple[str | None, str], list[bytes]] = {}
            for frame in _unique(f for frames in mine for f in frames or ()):
                try:
                    item = item_from_wire(codec.decode(frame, self.limits))
                except CodecError as exc:
                    self.found_problem("memory_frames_refused", f"pulled memory frame refused: {exc}")
                    continue
                by_key.setdefault((item.memory_type, item.key), []).append(frame)
                by_key.setdefault((None, item.key), []).append(frame)  # for reads of a key of any type
            out.append(by_key)
        return out


def read_order(key: str, node_ids: Sequence[str]) -> list[str]:
    """The workers a client asks for ``key`` first, in order: by a hash of the key and each node id (rendezvous),
    so every client asks the same ones and the keys spread over the workers."""
    return sorted(node_ids, key=lambda n: hashlib.blake2b(f"{key}\0{n}".encode(), digest_size=8).digest())


def _merged_answers(wanted: Sequence[tuple[str | None, str, bool]],
                    answers: Sequence[dict[tuple[str | None, str], list[bytes]] | None]) -> list[list[bytes]]:
    """Per item of ``wanted``, the frames any answer holds of it (each once)."""
    return [_unique(f for a in answers if a is not None for f in a.get((memory_type, key), ()))
            for memory_type, key, _ in wanted]
