"""What every part of the ``grpc_mesh`` backend shares: the wire, this node's private store, the members.

The parts (``membership``, ``tasks``, ``memory``) are mixins over ``GrpcCore``, as the SQLite backend's
are over its store. There is no shared store: each node keeps what it owns in a private SQLite file in
its state folder (``local``: a ``SqliteBackend`` that no other process opens, so nothing waits on a lock),
and tells its peers over the wire. The parts use only what is here:

- ``wire`` (``Wire``): ``send(address, kind, envelope)``, ``on_stream(kind, handler)``, ``on_unary``,
  ``stub(address)`` for unary calls;
- ``local``: this node's own tasks (it owns what it accepted), its memory log, its quarantine;
- the members as SWIM holds them: ``address_of``, ``status_of``, ``live_peers``, ``member_info``, and
  ``on_member_change`` to hear of joins and deaths (an owner's death starts its backup's takeover);
- ``spawn`` for background work that ``close`` cancels; ``found_problem`` and ``counters`` for problems;
  ``_deliver(topic)`` to wake this node's own loops.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ... import codec
from ...config import MeshConfig
from ...files import make_dirs
from ...membership import Change
from ...model import NodeInfo, NodeRole, NodeStatus
from ..contracts import Backend
from ..sqlite import SqliteBackend

log = logging.getLogger("mesh.grpc")

MemberListener = Callable[[Change], None]
# the counters of bad input from peers that ``describe`` shows (with every wire_handler_errors_* and refused_calls_*)
SHOWN_REFUSALS = frozenset({
    "swim_refused", "swim_loop_errors", "refused_records", "backend_errors", "tasks_refused", "tasks_inbound_dropped",
    "tasks_stale_accepts", "tasks_stale_results", "tasks_stale_renewals",
    "memory_frames_refused", "memory_inbox_dropped", "memory_acks_refused", "memory_claims_refused",
    "memory_push_refused", "refused_calls_bad_argument", "refused_identity_records", "tls_reloads"})
REPORTED_KEPT = 10_000  # (counter, peer) pairs whose first refusal was reported; later ones are counted only


class GrpcCore(Backend):
    """The shared state of the grpc_mesh parts; ``GrpcBackend`` (in ``__init__``) puts them together."""

    name = "grpc_mesh"

    def __init__(self, config: MeshConfig, limits: codec.CodecLimits = codec.DEFAULT_LIMITS) -> None:
        super().__init__()
        self.config = config
        self.limits = limits
        self.node_id = ""
        self.info: NodeInfo | None = None  # this node's record as last heartbeated
        self.local: SqliteBackend | None = None  # opened by ``_open_store``
        self._store_dir: Path | None = None
        self._temp_dir: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._member_listeners: list[MemberListener] = []
        self._closed = False
        self._reported: set[tuple[str, str]] = set()

    # -- the private store ----------------------------------------------------------------------------
    @property
    def store(self) -> SqliteBackend:
        if self.local is None:
            raise RuntimeError("grpc_mesh: the backend is not open")
        return self.local

    def store_folder(self, local: NodeInfo) -> Path:
        """This node's folder in the state folder (a client, which keeps no state, gets a temporary one)."""
        if local.role is NodeRole.WORKER:
            return Path(self.config.state_dir) / "nodes" / local.name
        self._temp_dir = tempfile.mkdtemp(prefix="mesh-grpc-client-")
        return Path(self._temp_dir)

    async def _open_store(self, local: NodeInfo) -> None:
        folder = self.store_folder(local)
        make_dirs(folder, own_leaf=True)  # 0700 (grpc.db in it is 0600: the SqliteBackend default)
        self._store_dir = folder
        store = SqliteBackend(str(folder / "grpc.db"), limits=self.limits)
        store.start_at_enqueue = False  # this node's own file: its tasks go to other workers as offers
        store.start_own = True  # … and the ones routed to this node start at enqueue (``TasksWorker.claim``)
        store.on_signal(self._deliver)  # its own wake-ups (results of this node's tasks) reach this node
        store.report_to(self.found_problem)
        await store.open(local)
        self.local = store

    async def _close_store(self) -> None:
        if self.local is not None:
            with contextlib.suppress(Exception):
                await self.local.close()
            self.local = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # -- background work ----------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` in the background until it ends or the backend closes; an exception is logged."""
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._closed:
            self.found_problem("backend_errors", f"grpc {task.get_name()}: {task.exception()!r}")

    async def _cancel_background(self) -> None:
        """Cancel the background work and wait for it to end; a cancel of the caller (its own timeout on a close
        that hangs) ends the wait and reaches the caller, whatever the tasks do with theirs."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # asyncio.wait, not gather: a cancelled gather still waits for every task it holds
            await asyncio.wait(tasks)

    # -- bad input from peers ---------------------------------------------------------------------------
    def refuse(self, counter: str, peer: str, detail: str) -> None:
        """Count one refusal of what ``peer`` sent (``counter`` in this backend's counters, every time) and
        report it (the node's counter, a log line, a Problem event) only the first time for that counter and
        peer: a peer that sends bad frames in a loop costs a counter, not a log line per frame."""
        key = (counter, peer)
        if key in self._reported or len(self._reported) >= REPORTED_KEPT:
            self.counters[counter] += 1
            return
        self._reported.add(key)
        self.found_problem(counter, f"{detail} (further ones from {peer or '?'} are counted only)")

    # -- the parts' own start and stop (each part extends them cooperatively: ``await super()._open_parts()``) --
    async def _open_parts(self) -> None:
        """The parts register their stream and call handlers and start their loops here, once the wire is up."""

    def _declared_dead(self) -> None:
        """The membership part heard that others declared this node dead (the tasks part acts on it)."""

    def _back_from_away(self) -> None:
        """This node was away: the membership part heard that others held it suspect or dead, or its own loop
        stood still for ``AWAY_SECONDS`` (paused, suspended, stalled). The memory part catches up at once."""

    async def _close_parts(self) -> None:
        """The parts stop here, before the wire closes."""

    # -- members (filled by the membership part) ---------------------------------------------------------
    def on_member_change(self, listener: MemberListener) -> None:
        """Hear every join and status change SWIM decides (in order, on the event loop)."""
        self._member_listeners.append(listener)

    def _member_changed(self, change: Change) -> None:
        for listener in self._member_listeners:
            try:
                listener(change)
            except Exception:
                log.exception("grpc member listener failed on %s", change)

    @abc.abstractmethod
    def address_of(self, node_id: str) -> str | None:
        """Where ``node_id``'s server listens, as gossip says (None when unknown)."""

    @abc.abstractmethod
    def status_of(self, node_id: str) -> NodeStatus | None:
        """``node_id``'s status as SWIM holds it (None when not a member)."""

    @abc.abstractmethod
    def member_info(self, node_id: str) -> NodeInfo | None:
        """``node_id``'s record as gossip last carried it (None when not a member)."""

    @abc.abstractmethod
    def live_peers(self, *, workers_only: bool = False) -> list[NodeInfo]:
        """Other members SWIM holds alive or suspect (clients too, unless ``workers_only``), by node id."""
