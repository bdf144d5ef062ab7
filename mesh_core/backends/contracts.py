"""The backend contracts: what every medium (SQLite, Redis, gRPC) must do, as three small interfaces.

- ``MembershipMedium``: node records, heartbeats, the clock that judges liveness, wake-ups;
- ``TaskTransport``: store, claim, renew, complete and move tasks under fencing; read them back;
- ``MemoryLog``: an append-only log of memory frames read from a cursor, digests, compaction.

A medium gives all three (``Backend``); the node's services each hold only the one they use.

Backends move and store records; they make no policy decisions. Routing, retry and conflict decisions are made by the
manager with the pure modules, and handed to the backend as already-decided, *fenced* operations: each one names the
state it expects (task id + attempt number + node) and the backend applies it atomically only if that state still
holds, so a stale actor can never overwrite a newer decision. That one rule gives exactly-once result recording on
every medium. Which move may start from which status is declared once, in ``mesh_core.tasks.TASK_MOVES``; both media
read their checks from it.

Each method's docstring says how the SQLite, Redis and gRPC backends do it. What SQLite and Redis share (coalesced hot
paths, decoding of stored records, the corrupt-value convention) lives in ``shared.SharedStoreBackend``.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import NodeInfo, NodeStatus, Task, TaskProgress, TaskStatus

# The medium keeps this many versions per key (memory type and key) for the replicated history.
MEMORY_VERSIONS_KEPT = 100


class Topic(enum.StrEnum):
    """What a backend can wake a node about. Wake-ups are hints only: a node that misses one still finds
    the work on its next periodic poll."""

    TASKS = "tasks"  # new work was assigned to you
    RESULTS = "results"  # a task you submitted changed state
    MEMBERS = "members"  # a node joined, left or changed
    MEMORY = "memory"  # new memory entries were published
    CANCEL = "cancel"  # a task you are running was asked to stop


# The topics as plain strings, as the node's services key their wake-up events.
TOPIC_TASKS: str = Topic.TASKS
TOPIC_RESULTS: str = Topic.RESULTS
TOPIC_MEMBERS: str = Topic.MEMBERS
TOPIC_MEMORY: str = Topic.MEMORY
TOPIC_CANCEL: str = Topic.CANCEL

SignalHandler = Callable[[str], None]
StartedHandler = Callable[[], bool]  # see TaskTransport.on_started; False: left to the claim loop, woken for them
ProblemSink = Callable[[str, str], None]  # (counter, detail)


class Enqueued(enum.IntEnum):
    """What ``enqueue`` did with one task: refused (false), stored, or found its id already stored (both true)."""

    FULL = 0
    STORED = 1
    EXISTS = 2


@dataclass(frozen=True)
class Assignment:
    """A routed task ready to be stored, with the capacity the target accepts.

    ``node_id`` None stores it in the mesh-wide pending list instead, which
    holds at most ``capacity`` tasks (bounded backpressure queue). ``delay``:
    the task is held back that many seconds on the medium's clock (the task's
    own ``not_before`` is not read: the medium stamps it). ``awaited``: the
    submitter waits for the outcome (``run_task``), so a medium may answer the
    submission with it (gRPC: the task's one copy, see ``AWAITED_COPY_WINDOW``).
    """

    task: Task
    node_id: str | None
    node_name: str | None
    why: str
    capacity: int
    delay: float = 0.0
    awaited: bool = False


@dataclass(frozen=True)
class Reassignment:
    """Move a task that ``expected_node`` held at ``expected_attempt`` elsewhere.

    With ``node_id`` it is re-routed (or retried ``delay`` seconds later on the medium's clock) to that
    node; without, it goes to ``final_status``: back to the pending list
    (PENDING) or to an end (DEAD_LETTER, FAILED). ``bump_attempt`` gives the
    new holder a new fencing token (always when the old holder may have started
    it). ``error`` is kept on the old attempt; ``count_failure`` adds one to the
    task's failures. A task whose cancel was asked for ends cancelled instead,
    with no failure counted.
    """

    task_id: str
    expected_attempt: int
    expected_node: str | None
    node_id: str | None
    node_name: str | None
    why: str
    delay: float = 0.0
    bump_attempt: bool = True
    error: str | None = None
    count_failure: bool = False
    final_status: TaskStatus = TaskStatus.DEAD_LETTER


@dataclass(frozen=True)
class Completion:
    """Record the end of one attempt; applied only if that attempt still holds the task."""

    task_id: str
    attempt: int
    node_id: str
    status: TaskStatus  # succeeded | failed
    result_frame: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class Finished:
    """One entry of a submitter's result feed: how a task ended, enough to answer its waiter.

    ``complete`` False means the result was too large for the feed: read the task itself.
    """

    task_id: str
    status: TaskStatus
    attempt: int
    node_id: str | None
    node_name: str | None
    finished_at: float | None
    result: Any = None
    error: str | None = None
    complete: bool = True


@dataclass(frozen=True)
class Quarantined:
    """A stored record moved aside because it could not be read: its kind (``task``, ``node``, ``memory`` …),
    where it was, its raw bytes as stored, why, and when (the mover's wall clock)."""

    kind: str
    key: str
    reason: str
    at: float
    raw: bytes = b""


@dataclass
class MeshSnapshot:
    """Node records plus the current time on the clock that judges liveness.

    ``clock``: now in the frame that task leases and retry times are read in (Redis: ``TIME``, which stamps
    them; SQLite: the reader's wall clock, each time read as its now plus the time left on the machine clock
    that stamps them), so the sweeper compares them without comparing two processes' clocks.
    ``reference_wall``: the medium's idea of the wall time, read
    when this process's wall clock said ``local_wall``, known to within ± ``reference_error`` s (None: the
    medium has no reference); a node measures its own clock against it.
    ``judged``: the medium's own verdict per node (gRPC: its SWIM detector, on this process's monotonic
    clock), taken by the membership table instead of judging records by age; None on the hub media.
    ``aged``: every record's ``last_seen`` is on the clock of ``now`` (the medium's one clock), exact once it is
    older than the read's ``stamp_window`` (a younger one may read as ``now``): the table judges each record by
    its age on that clock at every read, not by watching ``heartbeat_seq`` change.
    """

    nodes: list[NodeInfo]
    now: float
    queued: dict[str, int] = field(default_factory=dict)
    clock: float = 0.0
    reference_wall: float | None = None
    local_wall: float = 0.0
    reference_error: float = 0.0
    judged: dict[str, NodeStatus] | None = None
    aged: bool = False


class MembershipMedium(abc.ABC):
    """Node records, heartbeats and the clock that judges liveness; wake-ups between nodes."""

    name: str = "base"
    # True when every node sweeps the tasks it owns (gRPC: no shared store, each owner answers for its own);
    # False: one node sweeps the whole mesh (``mesh_core.membership.sweeper``).
    sweeps_own_tasks: bool = False
    def __init__(self) -> None:
        self._signal_handler: SignalHandler | None = None
        # Problems the medium found (``quarantined_<kind>``), also told to the node that uses it (``report_to``).
        self.counters: Counter[str] = Counter()
        self._problem_sink: ProblemSink | None = None

    def report_to(self, sink: ProblemSink) -> None:
        """Tell ``sink(counter, detail)`` each problem this medium finds (a record quarantined …): the node counts,
        logs and publishes it as its own."""
        self._problem_sink = sink

    def found_problem(self, counter: str, detail: str) -> None:
        """Count a problem here and tell the node's sink (or log it when no node listens)."""
        self.counters[counter] += 1
        if self._problem_sink is not None:
            self._problem_sink(counter, detail)
        else:
            logging.getLogger("mesh.backend").warning("%s: %s", counter, detail)

    def on_signal(self, handler: SignalHandler) -> None:
        """Register the callback that receives wake-up topics for the local node."""
        self._signal_handler = handler

    def _deliver(self, topic: str) -> None:
        if self._signal_handler is not None:
            self._signal_handler(topic)

    @abc.abstractmethod
    async def open(self, local: NodeInfo) -> None:
        """Connect and start listening for wake-ups for ``local``.

        SQLite: open the shared file (WAL; a locked file is waited for with backoff), create or migrate the schema,
        bind a unix datagram socket named after the node. Redis: a blocking connection pool, the Lua scripts, and a
        pub/sub listener on the node's channel and the broadcast one (resubscribed with backoff). gRPC: start this
        node's server and dial the seed peers.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and listening sockets; safe to call twice."""

    @abc.abstractmethod
    async def heartbeat(self, node: NodeInfo) -> None:
        """Upsert ``node``'s record and refresh its presence on the judging clock.

        A heartbeat never undoes a leave of the same incarnation; a higher one rejoins.
        SQLite: one UPSERT setting ``last_seen`` from the machine clock. Redis: one script HSETs the record and stamps
        it with Redis ``TIME`` (Redis's clock judges liveness for everyone). Both wake every node when the node joins
        or changes incarnation. gRPC: the record is gossiped to peers, each of which stamps it with its own monotonic
        clock on receipt.
        """

    @abc.abstractmethod
    async def leave(self, node: NodeInfo) -> None:
        """Mark the node as having left gracefully and tell the others now.

        SQLite: ``left_mesh`` on its row. Redis: a leave mark holding the incarnation that left.
        """

    @abc.abstractmethod
    async def snapshot(self, stamp_window: float = 0.0) -> MeshSnapshot:
        """Every node record, ``now`` on the judging clock and tasks held per node.

        ``stamp_window``: seconds on the judging clock within which a heartbeat counts as fresh: the exact stamp
        of a record younger than this need not be read (it may read as ``now``, and the snapshot says so with
        ``MeshSnapshot.aged``), only those of older ones. A node's view passes its ``suspect_after_seconds``, so
        every age that can change a verdict is read exactly; 0 (every other read): every stamp exact.

        The hub media follow changes instead of re-reading every record: a record's content (not its stamp)
        bumps a mesh-wide version when it changes, and a reader keeps the records it has read and fetches only
        those changed since; stamps are read only for records older than ``stamp_window`` (an indexed range
        read), so a node's cost per refresh grows with what changed and log N, not with N. A record whose only
        change is its load gauges (cpu, counters, running …) bumps the version at most every
        ``shared.GAUGE_SECONDS``. A reader re-reads everything at its first read, when the store's version
        restarted, when its count of records disagrees with the store's, and every ``shared.FULL_READ_SECONDS``.
        SQLite: one read transaction over the changed rows of ``nodes``, the stale stamps and a GROUP BY on tasks.
        Redis: one script reads the changed records, leave marks and depths, the stale stamps and TIME (and
        drops ghosts dead past the retention period).
        gRPC: the local gossip table with receive times on the monotonic clock.
        """

    @abc.abstractmethod
    async def wake(self, node_ids: Iterable[str], topic: str) -> None:
        """Send a wake-up hint to these nodes (gossip, relays). SQLite: datagrams. Redis: PUBLISH."""

    @abc.abstractmethod
    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        """Take or renew lease ``name`` for ``holder`` if it is free, lapsed or already ours; return its holder.

        Judged by the store's clock. SQLite: a conditional UPSERT against the machine clock.
        Redis: one script sets the lease key with a PX expiry when it is absent or already ours.
        """

    def describe(self) -> dict[str, Any]:
        """What the status block shows about this backend."""
        return {"backend": self.name}

    async def at_rest(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` at a moment this process holds nothing other nodes wait for (how a node stops itself on
        Ctrl-Z). SQLite: on the write thread, between transactions, with this node's other writes held back; Redis
        and gRPC hold no lock another node waits for: at once."""
        fn()

    def why_stalled(self) -> str:
        """Why calls to the medium wait, when the medium can tell (one line; "" when it cannot or nothing holds
        them). SQLite: the process that holds the file's write lock, and whether it is stopped."""
        return ""


class TaskTransport(abc.ABC):
    """Tasks under fencing: store routed work, claim it, hold leases, record outcomes, move it.

    Every status change is one of the moves of ``mesh_core.tasks.TASK_MOVES`` and is applied only from
    the statuses it lists; anything else is refused (False), never half-applied.
    """

    # True when ``finished_for`` can block server-side for new entries (``wait``); otherwise the
    # node waits for a TOPIC_RESULTS wake-up between reads.
    blocking_results: bool = False

    @abc.abstractmethod
    async def enqueue(self, assignments: Sequence[Assignment]) -> list[Enqueued]:
        """Store routed tasks; each is refused (``FULL``) if its node is at capacity.

        A node's depth counts the tasks assigned to it or running on it; ``node_id`` None is checked
        against the pending list. A task id already stored is left as it is (``EXISTS``, whatever the depth).
        The capacity check and the insert are one atomic step. SQLite: one ``BEGIN IMMEDIATE`` transaction for the
        batch. Redis: one Lua script per batch checks each inbox's depth and ZADDs to it. gRPC: the target node's
        server accepts or refuses. Concurrent callers share one batch; each target node is woken once.
        """

    @abc.abstractmethod
    async def claim(self, node_id: str, limit: int, lease_seconds: float) -> list[Task]:
        """Atomically start up to ``limit`` tasks assigned to ``node_id`` whose time has come.

        Highest priority first, FIFO within a priority; each gets a lease of ``lease_seconds`` on the medium's clock.
        SQLite: ``UPDATE … RETURNING`` under ``BEGIN IMMEDIATE``, with the attempt recorded. Redis: one Lua script
        moves due tasks from the delayed set into the inbox, takes the head of the inbox sorted set (scored by
        priority, then arrival), writes the leases and returns the task hashes (no second round trip). gRPC: the
        node's own inbox, which it holds itself. SQLite and Redis also start a task at enqueue when its node has a
        free slot and nothing queued (``StartedTasks``): it comes in the wake-up and is handed over here first,
        without reading the medium, and each claim says how many slots the node has and hands on a started task whose
        wake-up was lost.
        """

    def on_started(self, handler: StartedHandler) -> None:
        """Register the worker's ``handler`` for tasks started here at enqueue (SQLite, Redis), called as their wake-up
        is read: with a free slot it takes them (``take_started``) and runs them, no claim loop pass between. gRPC
        (whose own tasks an enqueue starts here reach the claim loop) ignores it."""
        return None

    def take_started(self) -> list[Task]:
        """Tasks started here at enqueue that came and are still fresh, each attempt once, all of them (their leases
        run): no I/O."""
        return []

    @abc.abstractmethod
    async def next_due(self, node_id: str) -> float | None:
        """In how many seconds (≥ 0) the earliest task assigned to ``node_id`` but held back (retry backoff)
        becomes due on the medium's clock; None when nothing is held back. The claim loop sleeps that long, not
        a full poll, and compares no clocks."""

    @abc.abstractmethod
    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float,
                    progress: Mapping[str, TaskProgress] | None = None) -> set[str]:
        """Extend the leases on ``(task_id, attempt)`` still held; return the ids still held.

        ``progress`` (task id → the handler's latest report, validated) is stored with the task in the same
        write, only for an attempt still held: progress travels with the renewals, never on its own.
        A task missing from the answer was taken away (re-routed); its executor must stop working on it. SQLite: one
        conditional UPDATE per task in one transaction. Redis: one script for the batch. gRPC: the owner's store, from
        the ``LeaseRenewal``.
        """

    @abc.abstractmethod
    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        """Record each attempt's end if the attempt still holds its task (fencing).

        False means the result was refused as stale. A status outside ``TASK_MOVES[Move.COMPLETE].targets``
        (succeeded, failed, cancelled) is a caller's mistake: ValueError, nothing written. Concurrent callers share
        one batch. SQLite: conditional UPDATEs in one transaction, then a wake-up datagram to each submitter. Redis:
        one Lua compare-and-set per batch that also appends each outcome to its submitter's result feed (which wakes a
        submitter blocked on it). gRPC: the submitter-owned record.
        """

    @abc.abstractmethod
    async def move(self, moves: Sequence[Reassignment]) -> list[bool]:
        """Apply fenced moves (re-route, retry with backoff, back to pending, dead letter or failed); True per
        move applied.

        Each is applied only if the task is still at ``expected_attempt`` held by ``expected_node`` and its
        status is a source of that move in ``mesh_core.tasks.TASK_MOVES``; a task with a cancel asked for
        ends cancelled instead. A ``final_status`` no move leads to is a ValueError. Wakes each new holder
        and each submitter. SQLite: one conditional UPDATE per move in one transaction. Redis: one script
        for the batch.
        """

    @abc.abstractmethod
    async def cancel(self, task_ids: Sequence[str]) -> list[str]:
        """Cancel tasks: queued ones at once, running ones by asking their holder.

        Returns per task ``cancelled`` (it had not started: ``Move.CANCEL_QUEUED``),
        ``cancelling`` (running: its holder is marked and woken, ``Move.CANCEL_REQUEST``),
        the final status it already had, or ``missing``. The submitter of a task cancelled at once is woken.
        SQLite: one transaction. Redis: one script.
        """

    @abc.abstractmethod
    async def replay(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        """Send a dead-lettered, failed or cancelled task round again (new attempt, failures, result and
        cancel mark reset) to ``node_id``, or to the pending list when None. False if its status is not a
        source of ``Move.REPLAY``."""

    @abc.abstractmethod
    async def stranded(self, dead_nodes: Iterable[str], now: float) -> list[Task]:
        """What the sweeper looks at: unfinished tasks held by one of ``dead_nodes``, running tasks whose
        lease lapsed, and the tasks in the pending list; about 5000 at most per call. Their payload, result
        and context may be left unread (None, empty): the sweeper moves tasks, it never runs them.

        Each medium judges the lease on its own scheduling clock (SQLite: the machine clock; Redis: ``TIME``);
        ``now`` is that clock as the caller last read it (``MeshSnapshot.clock``) and is not used to judge.
        """

    @abc.abstractmethod
    async def cancel_requests(self, node_id: str) -> list[tuple[str, int]]:
        """``(task_id, attempt)`` of running tasks held by ``node_id`` that were asked to stop.

        SQLite: one indexed SELECT. Redis: the node's held set, then one pipelined read of the marks.
        """

    @abc.abstractmethod
    async def finished_for(self, submitter_id: str, after: Any, wait: float = 0.0) -> tuple[list[Finished], Any]:
        """How ``submitter_id``'s tasks ended, for those that reached a final state after cursor ``after``.

        ``after`` None answers nothing and the cursor of "now". A backend with
        ``blocking_results`` waits up to ``wait`` seconds for a first entry.
        SQLite: a feed table filled by a trigger on every final transition,
        joined with the task rows. Redis: the submitter's result stream (each
        entry carries the outcome, small results inline) read with XREAD BLOCK.
        gRPC: results pushed to the submitter and kept in its own table. An
        entry that cannot be read is skipped and counted (``refused_records``);
        a result that does not decode reads as ``{"__corrupt__": reason}``.
        """

    @abc.abstractmethod
    async def prune(self, tasks_kept: int, dead_letters_kept: int, limit: int = 5000) -> int:
        """Delete finished tasks older than the newest ``tasks_kept`` and the oldest dead letters past
        ``dead_letters_kept``, with their attempts; at most ``limit`` per call. Returns how many went.

        Unfinished tasks are never deleted. SQLite: DELETE by ``seq`` under one
        write transaction. Redis: a script that walks the task list from its
        oldest end. gRPC: each node prunes the records it owns.
        """

    @abc.abstractmethod
    async def task_states(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        """Current status of each task that exists (a cheap read, batched across callers).

        SQLite: one IN query per 500 ids on the read connection. Redis: one pipeline of HGETs.
        """

    @abc.abstractmethod
    async def get_tasks(self, task_ids: Sequence[str], with_attempts: bool | None = None) -> list[Task]:
        """Tasks by id, in the order asked, missing ones left out; with their attempts when asked (None: only
        for 50 tasks or fewer).

        A stored task that cannot be read is left out and counted (``refused_records``); a payload or
        result that does not decode reads as ``{"__corrupt__": reason}`` (``corrupt_values``).
        SQLite: IN queries on the read connection. Redis: one pipeline of HGETALLs.
        """

    @abc.abstractmethod
    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100, *,
                         parent_id: str | None = None) -> list[Task]:
        """Most recent tasks first, optionally of one status; with ``parent_id``, that task's subtasks
        (submitted by its handler) in the order they were submitted.

        SQLite: indexed SELECTs. Redis: pending, failed, dead_letter and cancelled from their own sorted
        sets; assigned and running from the inboxes and the lease set; succeeded by scanning the newest
        tasks (up to 100 000)."""

    @abc.abstractmethod
    async def task_counts(self) -> dict[str, int]:
        """Tasks per status across the whole mesh (statuses with none may be left out).

        SQLite: one GROUP BY. Redis: a hash of counters every script keeps up to date.
        """


class MemoryLog(abc.ABC):
    """The mesh's memory: an append-only log of codec frames read from a cursor, plus what anti-entropy needs."""

    # True when writers wait for the nodes' acks (gRPC: a write is held until the peers it was pushed to applied
    # it), so a node acks every batch it applied at once; False: acks feed compaction (and strong writes) only.
    acks_awaited: bool = False

    @property
    def repair_wanted(self) -> bool:
        """Whether an anti-entropy round is wanted before ``sync_interval_seconds`` is up: the medium knows of
        entries that did not reach a node (gRPC: a push dropped or refused, a gap in what a peer pushed here).
        A shared store holds every entry for every reader: never."""
        return False

    @abc.abstractmethod
    async def publish_memory(self, origin: str, entries: Sequence[tuple[str, str, bytes]],
                             broadcast: bool = True) -> Any:
        """Append ``(memory_type, key, frame)`` entries to the mesh's memory stream; return the last one's cursor.

        With ``broadcast`` every node is woken; without, the caller wakes whom it
        chooses (peer_to_peer gossip).

        Concurrent callers share one write. SQLite: rows in an append-only log
        table plus the newest entry per (key, origin) in ``memory_latest``, one
        transaction. Redis: one MULTI/EXEC of XADD to one stream (consumers keep
        their own cursors), the per-key hash of each origin's latest frame and
        the bucket's key set. gRPC: pushed to peers and kept in the sender's
        outbox until acknowledged.
        """

    @abc.abstractmethod
    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        """Entries after cursor ``after`` (None for the start), and the new cursor."""

    @abc.abstractmethod
    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        """Record that ``node_id`` has applied the memory stream up to ``cursor``.

        SQLite keeps the highest cursor acknowledged; Redis the latest (a node's own cursor only grows).
        """

    @abc.abstractmethod
    async def memory_acks(self) -> dict[str, Any]:
        """How far each node has applied the memory stream."""

    @abc.abstractmethod
    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        """True when ``cursor`` is at or past ``target`` in the memory stream."""

    @abc.abstractmethod
    async def put_digests(self, node_id: str, digests: dict[int, str]) -> None:
        """Publish this node's anti-entropy digests (bucket → hash of its frontier), replacing its last ones.

        SQLite: rows per bucket. Redis: one JSON value per node in a hash.
        """

    @abc.abstractmethod
    async def peer_digests(self) -> dict[str, dict[int, str]]:
        """Every node's last published digests (a node that published none of its buckets maps to {}).
        Unreadable ones are skipped and counted."""

    @abc.abstractmethod
    async def memory_bucket(self, bucket: int) -> list[bytes]:
        """Every stored entry whose key falls in ``bucket`` (for repairing a differing bucket).

        SQLite: the newest entry per key and origin (``memory_latest``, indexed by
        bucket). Redis: the per-key latest frames of the keys listed in the bucket's set.
        """

    @abc.abstractmethod
    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        """The newest entries (per origin) of many keys of one type, in one round trip.

        SQLite: one IN query per 500 keys. Redis: a pipeline of HGETALL on the per-key hashes.
        gRPC: one request to each peer.
        """

    @abc.abstractmethod
    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        """Every stored entry for one key (any memory type when None)."""

    @abc.abstractmethod
    async def memory_versions(self, memory_type: str | None, key: str) -> list[bytes]:
        """The newest ``MEMORY_VERSIONS_KEPT`` entries published for one key (any memory type when None):
        the replicated history, the same for every reader, kept through compaction.

        SQLite: the ``memory_versions`` table, trimmed per key as it is appended to. Redis: a capped list per key.
        """

    @abc.abstractmethod
    async def memory_horizon(self) -> Any:
        """A cursor such that a reader at or past it has missed nothing to compaction; None if nothing was dropped.

        A node whose cursor is behind it starts again from every key's newest entries.
        SQLite: one before the oldest row left. Redis: the highest cursor compaction trimmed to.
        """

    @abc.abstractmethod
    async def compact_memory(self, applied_everywhere: Any) -> int:
        """Drop memory stream entries before cursor ``applied_everywhere`` (every live node, active or suspect, has
        applied them); returns how many went. The newest entry per (key, origin) stays for ``memory_bucket`` and
        ``memory_for_key``, so a node that was away converges by anti-entropy.

        SQLite: DELETE from the log below the cursor (a per-key table keeps the latest). Redis: XTRIM MINID
        (the per-key hashes keep the latest). gRPC: each node drops what every peer acknowledged.
        """


class Backend(MembershipMedium, TaskTransport, MemoryLog):
    """A medium that gives all three contracts (SQLite, Redis: both built on ``shared.SharedStoreBackend``)."""

    @abc.abstractmethod
    async def quarantined(self, limit: int = 100) -> list[Quarantined]:
        """The newest ``limit`` records moved aside, newest first.

        A stored record that cannot be decoded, or has a field out of range, is never handed on: it is moved
        aside with its reason (so no loop reads it again), counted as ``quarantined_<kind>`` and logged once.
        SQLite: the ``quarantine`` table. Redis: a capped ``quarantine`` stream (scripts move bad entries
        there themselves and skip them).
        """
