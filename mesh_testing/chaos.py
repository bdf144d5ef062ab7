"""A Jepsen-style history for the chaos suite: what was acknowledged, what ran, what was recorded, what converged.

Two halves. The pure half (``History``, ``check``, ``Verdict``) holds no I/O:
a history is plain data and ``check`` judges it. The recording half
(``Workload``, ``read_executions``, ``replica_keys``, ``rss_mb``) fills a
history from a real mesh: every task the workload submits (acknowledged or
not), every attempt start the ``chaos_probe`` handler appended to its file,
every result the mesh recorded, every memory write the mesh acknowledged, and
what each node's replica holds. ``ChaosRun`` puts the two together for one
nemesis on one ``Cluster``; ``Scale`` says how big a run is (``CHAOS_SCALE``).

``python -m mesh_testing.chaos --config FILE --tasks N --writes M --out FILE``
runs the workload as its own process (the partition and packet-loss nemeses
run it inside a network namespace) and writes the history as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mesh_testing.chaos_probe import TASK_TYPE

WRITE_TYPE = "chaos_fact"
WRITE_PREFIX = "chaos-w"


# -- the history (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class Execution:
    """One attempt start, as the handler saw it."""

    task_id: str
    attempt: int
    node: str


@dataclass
class Outcome:
    """What the mesh recorded for one task at the end of the run."""

    status: str
    successes: int  # attempts that finished without an error: exactly-once recording means 1
    attempt: int  # the task's attempt number (the fencing token of the recorded result)
    result_attempt: int | None  # the attempt the recorded result says produced it


@dataclass
class History:
    """Everything one run recorded. ``replicas``: node name → the write keys its replica holds at the end."""

    submitted: dict[str, bool] = field(default_factory=dict)  # task id → acknowledged
    executions: list[Execution] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    writes: dict[str, bool] = field(default_factory=dict)  # memory key → acknowledged
    replicas: dict[str, set[str]] = field(default_factory=dict)
    last_fault_at: float | None = None  # monotonic seconds when the last fault was healed
    converged_at: float | None = None  # monotonic seconds when every replica held every acknowledged write
    detection_s: float | None = None  # fault to the others' "dead" (or None: nobody had to notice)
    rss_growth_mb: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["replicas"] = {node: sorted(keys) for node, keys in self.replicas.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> History:
        return cls(submitted=dict(data["submitted"]),
                   executions=[Execution(**e) for e in data["executions"]],
                   outcomes={k: Outcome(**v) for k, v in data["outcomes"].items()},
                   writes=dict(data["writes"]),
                   replicas={node: set(keys) for node, keys in data["replicas"].items()},
                   last_fault_at=data.get("last_fault_at"), converged_at=data.get("converged_at"),
                   detection_s=data.get("detection_s"), rss_growth_mb=dict(data.get("rss_growth_mb", {})))

    def merge(self, other: History) -> None:
        """Take the workload's half (tasks, writes) recorded by another process."""
        self.submitted.update(other.submitted)
        self.outcomes.update(other.outcomes)
        self.writes.update(other.writes)


@dataclass
class Verdict:
    """The checker's figures for one run, and every broken promise in words (empty: the run is clean)."""

    tasks_acknowledged: int
    tasks_recorded_once: int
    tasks_lost: int
    tasks_duplicated: int
    late_results_accepted: int
    executions: int
    writes_acknowledged: int
    writes_lost: int
    convergence_s: float | None
    detection_s: float | None
    rss_growth_mb: float
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self, nemesis: str) -> str:
        """One line of the per-nemesis report."""
        conv = "never" if self.convergence_s is None else f"{self.convergence_s:.1f}s"
        det = "-" if self.detection_s is None else f"{self.detection_s:.1f}s"
        return (f"{nemesis}: tasks ack {self.tasks_acknowledged} / once {self.tasks_recorded_once} / lost "
                f"{self.tasks_lost} / dup {self.tasks_duplicated} / late {self.late_results_accepted} "
                f"(executions {self.executions}); writes ack {self.writes_acknowledged} / lost {self.writes_lost}; "
                f"convergence {conv}; detection {det}; rss +{self.rss_growth_mb:.1f} MB")

    def __str__(self) -> str:
        return "\n".join(["checker found:", *(f"  - {p}" for p in self.problems[:20])]) if self.problems else "ok"


def _sample(ids: Iterable[str], n: int = 5) -> str:
    items = sorted(ids)
    return ", ".join(items[:n]) + (f" … (+{len(items) - n})" if len(items) > n else "")


def check(history: History, *, converge_within: float, rss_limit_mb: float | None = None) -> Verdict:
    """Judge a history against the mesh's promises.

    Every acknowledged task has exactly one recorded result (succeeded, one
    successful attempt, produced by the attempt the task ended on); every
    acknowledged write is on every replica; the replicas held them all within
    ``converge_within`` seconds of the last fault; RSS grew less than ``rss_limit_mb``.
    """
    problems: list[str] = []
    acked = {t for t, ok in history.submitted.items() if ok}
    lost = {t for t in acked if t not in history.outcomes or history.outcomes[t].status != "succeeded"}
    dup = {t for t in acked if t in history.outcomes and history.outcomes[t].successes > 1}
    late = {t for t in acked - lost if history.outcomes[t].result_attempt not in (None, history.outcomes[t].attempt)}
    once = {t for t in acked - lost - dup if history.outcomes[t].successes == 1} - late
    ran = {e.task_id for e in history.executions}
    if lost:
        statuses = Counter(history.outcomes[t].status if t in history.outcomes else "missing" for t in lost)
        problems.append(f"{len(lost)} acknowledged tasks have no recorded result {dict(statuses)}: {_sample(lost)}")
    if dup:
        problems.append(f"{len(dup)} tasks have more than one recorded result: {_sample(dup)}")
    if late:
        problems.append(f"{len(late)} tasks kept a result from an older attempt (late result accepted): "
                        f"{_sample(late)}")
    unrun = {t for t in once if t not in ran}
    if unrun:
        problems.append(f"{len(unrun)} tasks have a result but no execution start was recorded: {_sample(unrun)}")
    ghosts = ran - set(history.submitted)
    if ghosts:
        problems.append(f"{len(ghosts)} executions of tasks nobody submitted: {_sample(ghosts)}")
    acked_writes = {k for k, ok in history.writes.items() if ok}
    missing = {node: acked_writes - keys for node, keys in history.replicas.items() if acked_writes - keys}
    writes_lost = set().union(*missing.values()) if missing else set()
    for node, keys in sorted(missing.items()):
        problems.append(f"replica {node} lacks {len(keys)} acknowledged writes: {_sample(keys)}")
    if not history.replicas and acked_writes:
        problems.append("no replica was read: convergence not checked")
    convergence = None
    if history.converged_at is not None:
        convergence = max(0.0, history.converged_at - (history.last_fault_at or history.converged_at))
    if convergence is None and acked_writes and history.replicas:
        problems.append("the replicas never converged")
    elif convergence is not None and convergence > converge_within:
        problems.append(f"replicas converged {convergence:.1f} s after the last fault (allowed {converge_within:g} s)")
    growth = max(history.rss_growth_mb.values(), default=0.0)
    if rss_limit_mb is not None and growth >= rss_limit_mb:
        worst = max(history.rss_growth_mb, key=lambda n: history.rss_growth_mb[n])
        problems.append(f"node {worst} grew {growth:.1f} MB of RSS (allowed < {rss_limit_mb:g} MB)")
    return Verdict(tasks_acknowledged=len(acked), tasks_recorded_once=len(once), tasks_lost=len(lost),
                   tasks_duplicated=len(dup), late_results_accepted=len(late), executions=len(history.executions),
                   writes_acknowledged=len(acked_writes), writes_lost=len(writes_lost), convergence_s=convergence,
                   detection_s=history.detection_s, rss_growth_mb=growth, problems=problems)


def parse_executions(text: str) -> list[Execution]:
    """The handler's lines ``TASK_ID ATTEMPT NODE``; a torn last line (a node killed mid-write) is skipped."""
    out: list[Execution] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            out.append(Execution(parts[0], int(parts[1]), parts[2]))
    return out


def write_key(i: int) -> str:
    return f"{WRITE_PREFIX}{i:05d}"


# -- recording from a real mesh ----------------------------------------------------------------
def read_executions(path: Path) -> list[Execution]:
    try:
        return parse_executions(path.read_text(errors="replace"))
    except OSError:
        return []


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB; 0 when it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss / 1e6
    except psutil.Error:
        return 0.0


def replica_keys(node: Any, pattern: str = WRITE_PREFIX + "*") -> set[str] | None:
    """The write keys in a node process's own replica (``/mesh_memory`` on its stdin; no sync is forced).

    None when the node does not answer (frozen, dead or busy past the timeout).
    """
    try:
        reply = node.command(f"/mesh_memory {pattern}", timeout=5)
    except AssertionError:
        return None
    rows = reply.get("data")
    if not reply.get("ok") or not isinstance(rows, list):
        return None
    return {row["key"] for row in rows if isinstance(row, dict) and "key" in row}


@dataclass
class Workload:
    """The client side of a run: ``tasks`` probe tasks and ``writes`` memory writes, recorded as they are answered.

    ``task_seconds``: how long each probe sleeps; ``submit_timeout``: seconds a
    single submission or write may take before it counts as not acknowledged.
    """

    tasks: int
    writes: int = 0
    task_seconds: float = 0.05
    submit_timeout: float = 10.0
    history: History = field(default_factory=History)
    first: int = 0  # number of the first task and write: a second workload on the same mesh starts past the first
    lanes: int = 8  # callers submitting at once

    def task_id(self, i: int) -> str:
        return f"chaos-t{self.first + i:05d}"

    async def submit(self, mesh: Any, i: int) -> None:
        task_id = self.task_id(i)
        try:
            await asyncio.wait_for(mesh.submit_task(TASK_TYPE, {"seconds": self.task_seconds, "i": i},
                                                    task_id=task_id, queue=True, max_retries=10),
                                   self.submit_timeout)
            self.history.submitted[task_id] = True
        except Exception:  # any refusal, timeout or error: the caller was not told "ok"
            self.history.submitted[task_id] = False

    async def write(self, mesh: Any, i: int) -> None:
        key = write_key(self.first + i)
        try:
            await asyncio.wait_for(mesh.sync_memory_item(WRITE_TYPE, {"i": i}, key=key), self.submit_timeout)
            self.history.writes[key] = True
        except Exception:
            self.history.writes[key] = False

    async def run(self, mesh: Any, *, spread_s: float = 0.0) -> None:
        """Submit every task and write, interleaved, over about ``spread_s`` seconds (0: as fast as answered), from
        ``lanes`` callers at once: one caller waiting for each answer in turn keeps the mesh only as busy as its own
        round trip allows, which on a loaded machine is too little for a nemesis to land on work in flight."""
        total = max(self.tasks, self.writes)
        pause = spread_s / total if total else 0.0
        numbers = iter(range(total))

        async def lane() -> None:
            for i in numbers:  # one iterator shared by the lanes: each number is taken once
                if i < self.tasks:
                    await self.submit(mesh, i)
                if i < self.writes:
                    await self.write(mesh, i)
                if pause:
                    await asyncio.sleep(pause * self.lanes)
        await asyncio.gather(*(lane() for _ in range(self.lanes)))

    async def collect(self, mesh: Any, timeout: float) -> None:
        """Wait (up to ``timeout`` s in all) for every acknowledged task to end; record what the mesh kept."""
        deadline = time.monotonic() + timeout
        acked = [t for t, ok in self.history.submitted.items() if ok]
        for task_id in acked:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await mesh.wait_task(task_id, timeout=left)
            except Exception:
                continue  # judged below from what the mesh has
        for start in range(0, len(acked), 50):
            for task in await mesh.get_tasks(acked[start:start + 50]):
                self.history.outcomes[task.task_id] = outcome_of(task)


def outcome_of(task: Any) -> Outcome:
    successes = sum(1 for a in task.attempts if a.finished_at is not None and a.error is None)
    result_attempt = task.result.get("attempt") if isinstance(task.result, dict) else None
    return Outcome(status=task.status.value, successes=successes, attempt=task.attempt,
                   result_attempt=result_attempt if isinstance(result_attempt, int) else None)


@dataclass(frozen=True)
class Scale:
    """How big a chaos run is: the short one runs in ``make test``, the long one in ``make chaos``."""

    name: str
    tasks: int
    writes: int
    in_flight: int  # tasks assigned or running when the kill -9 lands
    task_seconds: float
    partition_s: float
    loss_s: float
    fuzz_entries: int
    skews: tuple[float, ...]  # clock offsets tried, seconds
    collect_s: float  # how long the acknowledged tasks get to end after the workload (a lost one waits it out)


SHORT = Scale("short", tasks=1000, writes=100, in_flight=100, task_seconds=0.2, partition_s=5.0, loss_s=5.0,
              fuzz_entries=2000, skews=(300.0,), collect_s=30.0)
LONG = Scale("long", tasks=1000, writes=200, in_flight=100, task_seconds=0.2, partition_s=10.0, loss_s=20.0,
             fuzz_entries=10_000, skews=(300.0, -300.0), collect_s=90.0)
SCALE_ENV = "CHAOS_SCALE"


def scale_from_env(env: Mapping[str, str]) -> Scale:
    """``CHAOS_SCALE=long`` picks the long run; anything else (or nothing) the short one."""
    return LONG if env.get(SCALE_ENV, "").strip().lower() == "long" else SHORT


class ChaosRun:
    """One nemesis on one mesh: worker processes running ``chaos_probe``, a workload, a fault, and the history.

    ``cluster`` is a ``mesh_testing.Cluster`` whose settings give the timings;
    ``sync_interval`` is its ``sync_interval_seconds``. The nemesis is a plain
    function of this run, run in a thread beside the workload; it calls
    ``healed()`` when its last fault ends, and may use ``in_flight()``,
    ``kill()``, ``detect_dead()``.
    """

    def __init__(self, cluster: Any, scale: Scale, *, sync_interval: float) -> None:
        from mesh_testing.chaos_probe import EXECUTION_LOG_ENV

        self.cluster = cluster
        self.scale = scale
        self.sync_interval = sync_interval
        self.execution_log = Path(cluster.logs if hasattr(cluster, "logs") else cluster.root) / "executions.log"
        self.execution_log.parent.mkdir(parents=True, exist_ok=True)
        cluster.env[EXECUTION_LOG_ENV] = str(self.execution_log)
        self.workers: list[Any] = []
        self.gone: set[str] = set()  # node names the nemesis killed for good
        self.history = History()
        self.rss_before: dict[str, float] = {}
        self._mesh: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._healed_at: float | None = None

    # -- the mesh ----------------------------------------------------------------------------
    def start_workers(self, count: int = 3, *, prefixes: Mapping[str, list[str]] | None = None,
                      capacity: int = 1000, watchers: Iterable[str] | None = None,
                      hosts: Mapping[str, str] | None = None) -> list[Any]:
        """Start ``w0``…: node processes with the probe handler; wait until each (or each of ``watchers``) sees all
        as active. ``hosts`` (grpc): the address each one's server binds (see ``Cluster.spawn``)."""
        from mesh_testing.wait import until

        names = [f"w{i}" for i in range(count)]
        for name in names:  # one after the other: a concurrent start is a nemesis of its own (issue #11 defect 4)
            self.workers.append(self.cluster.start(name, "--handlers", "mesh_testing.chaos_probe", "--capacity",
                                                   str(capacity), prefix=(prefixes or {}).get(name, ()),
                                                   host=(hosts or {}).get(name)))
        everyone = {name: "active" for name in names}
        for node in self.workers if watchers is None else [self.worker(name) for name in watchers]:
            def sees_everyone(node: Any = node) -> bool:
                return everyone.items() <= node.view().items()

            try:
                until(sees_everyone, timeout=30)
            except AssertionError:
                raise AssertionError(f"{node.name} does not see every worker active: {node.view()}") from None
        self.mark_rss()
        return self.workers

    def mark_rss(self) -> None:
        """RSS growth is measured from now."""
        self.rss_before = {n.name: rss_mb(n.proc.pid) for n in self.workers}

    def worker(self, name: str) -> Any:
        return next(n for n in self.workers if n.name == name)

    def survivors(self) -> list[Any]:
        return [n for n in self.workers if n.name not in self.gone and n.alive]

    # -- for the nemesis ---------------------------------------------------------------------
    def healed(self) -> None:
        """The last fault has ended now: convergence is timed from here."""
        self._healed_at = time.monotonic()

    def in_flight(self) -> int:
        """Tasks assigned or running, from the in-process client (in-process runs only)."""
        assert self._mesh is not None and self._loop is not None, "in_flight() needs an in-process workload"
        counts = asyncio.run_coroutine_threadsafe(self._mesh.task_counts(), self._loop).result(30)
        return int(counts.get("assigned", 0)) + int(counts.get("running", 0))

    def wait_in_flight(self, at_least: int, timeout: float = 60.0) -> int:
        """Block until at least ``at_least`` tasks are in flight; how many there were."""
        from mesh_testing.wait import until

        return int(until(lambda: (n := self.in_flight()) >= at_least and n, timeout=timeout, interval=0.05)[0])

    def stop_holding_work(self, name: str, timeout: float = 30.0) -> tuple[float, set[str]]:
        """SIGSTOP worker ``name`` at a moment it holds running tasks, as the store says while it is stopped; the
        monotonic time of the stop that held and the ids it held.

        A stop that caught it holding nothing (its last task just finished), or, on SQLite, holding the shared
        file's write lock, is undone at once, well inside ``suspect_after``, and tried again. A process stopped
        inside a write freezes the file for every node (they cannot write until it continues: no death can be
        recorded, nothing moves), which is another fault than a stopped node; the nodes then name it
        (tests/backends/test_sqlite_lock.py)."""
        from mesh_core.backends.sqlite.locks import write_lock_holder
        from mesh_core.model import TaskStatus

        def held() -> set[str]:
            assert self._mesh is not None and self._loop is not None, "stop_holding_work() needs an in-process workload"
            running = asyncio.run_coroutine_threadsafe(
                self._mesh.list_tasks(TaskStatus.RUNNING, limit=1000), self._loop).result(30)
            return {task.task_id for task in running if task.node_name == name}

        def holds_the_file(pid: int) -> bool:
            if self.cluster.backend != "sqlite":
                return False
            holder = write_lock_holder(str(self.cluster.db))
            return holder is not None and holder.pid == pid

        pid = self.worker(name).proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not held():
                time.sleep(0.05)
                continue
            stopped = self.kill(name, signal.SIGSTOP)
            if not holds_the_file(pid) and (holding := held()):
                return stopped, holding
            self.kill(name, signal.SIGCONT)
            time.sleep(0.05)
        raise AssertionError(f"{name} was never stopped holding running tasks (and not the file's lock) in {timeout} s")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal a worker (kill -9 by default; such a node is gone for good); the monotonic time it was sent."""
        node = self.worker(name)
        node.kill(sig)
        if sig == signal.SIGKILL:
            self.gone.add(name)
        return time.monotonic()

    def detect_dead(self, name: str, since: float, timeout: float = 30.0) -> float | None:
        """Seconds from ``since`` until a surviving worker's own view calls ``name`` dead (None: never)."""
        watchers = [n for n in self.survivors() if n.name != name]
        deadline = time.monotonic() + timeout
        while watchers and time.monotonic() < deadline:
            try:
                if watchers[0].view().get(name) == "dead":
                    self.history.detection_s = time.monotonic() - since
                    return self.history.detection_s
            except AssertionError:
                pass  # a busy watcher missed the reply deadline: ask again
            time.sleep(0.1)
        return None

    def remember(self, name: str, i: int, timeout: float = 5.0) -> bool:
        """Write fact number ``i`` through worker ``name``'s own command line; record whether it was acknowledged."""
        key = write_key(i)
        try:
            ok = bool(self.worker(name).command(f'/mesh_remember --type {WRITE_TYPE} {key} {{"i": {i}}}',
                                                timeout=timeout).get("ok"))
        except AssertionError:
            ok = False
        self.history.writes[key] = ok
        return ok

    def deaths_seen(self, name: str) -> list[dict[str, Any]]:
        """Every ``dead`` verdict on ``name`` in the other workers' own event logs so far."""
        return [{"watcher": node.name, **line} for node in self.workers if node.name != name for line in node.lines
                if line.get("event") == "NodeStatusChanged" and line.get("name") == name
                and line.get("new") == "dead"]

    def views(self, timeout: float = 5.0) -> dict[str, dict[str, str]]:
        """Each surviving worker's own view of every node (left out: a worker that did not answer in ``timeout``)."""
        out: dict[str, dict[str, str]] = {}
        for node in self.survivors():
            try:
                reply = node.command("/mesh_status", timeout=timeout)
            except AssertionError:
                continue
            if reply.get("ok"):
                out[node.name] = {n["name"]: n["status"] for n in reply["data"]["nodes"]}
        return out

    # -- the run -----------------------------------------------------------------------------
    async def run(self, nemesis: Any, *, workload: Workload | None = None) -> History:
        """Run the workload with ``nemesis(self)`` beside it, then settle and record the history."""
        workload = workload or Workload(self.scale.tasks, self.scale.writes, task_seconds=self.scale.task_seconds,
                                        history=self.history)
        workload.history = self.history
        self._healed_at = None
        self._mesh = mesh = await self.cluster.client(node_name="chaos-client")
        self._loop = asyncio.get_running_loop()
        await asyncio.gather(workload.run(mesh), asyncio.to_thread(nemesis, self))
        await asyncio.to_thread(self.settle)
        await workload.collect(mesh, timeout=self.scale.collect_s)
        await mesh.stop()
        self.finish()
        return self.history

    def run_outside(self, nemesis: Any, driver_prefix: list[str], *, spread_s: float = 0.0,
                    timeout: float = 300.0, config: Path | None = None) -> History:
        """Run the workload as its own process (``python -m mesh_testing.chaos`` after ``driver_prefix``).

        Its submissions and writes are spread over ``spread_s`` seconds; ``nemesis(self)`` runs here meanwhile.
        ``config``: the file the workload reads instead of the cluster's (a grpc client in a namespace needs
        its own ``grpc.host``).
        """
        import subprocess

        self._healed_at = None
        out = self.execution_log.with_name("workload.json")
        config = config or self.cluster.config
        cmd = [*driver_prefix, sys.executable, "-m", "mesh_testing.chaos", "--config", str(config), "--tasks",
               str(self.scale.tasks), "--writes", str(self.scale.writes), "--task-seconds",
               str(self.scale.task_seconds), "--spread", str(spread_s), "--timeout", str(self.scale.collect_s),
               "--out", str(out)]
        err = self.execution_log.with_name("workload.err")
        with open(err, "wb") as errors:
            driver = subprocess.Popen(cmd, env=self.cluster.env, stdout=errors, stderr=subprocess.STDOUT)
            try:
                nemesis(self)
                driver.wait(timeout)
            finally:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait(10)
        if driver.returncode != 0:
            raise RuntimeError(f"the workload process failed ({driver.returncode}): "
                               f"{err.read_text(errors='replace')[-3000:]}")
        self.history.merge(History.from_json(json.loads(out.read_text())))
        self.settle()
        self.finish()
        return self.history

    def settle(self, patience: float | None = None) -> None:
        """Poll every surviving replica until it holds every acknowledged write (or ``patience`` s pass).

        The default patience, 5 × ``sync_interval``, is long enough to time a convergence the checker then finds
        too slow (it allows 2 ×).

        Convergence is timed from the later of the last fault's end and now
        (the last write's answer), so writes made after the fault count too.
        """
        start = time.monotonic()
        patience = 5 * self.sync_interval if patience is None else patience
        self.history.last_fault_at = max(self._healed_at or start, start)
        want = {k for k, ok in self.history.writes.items() if ok}
        while True:
            replicas = {n.name: replica_keys(n) for n in self.survivors()}
            have = {name: keys for name, keys in replicas.items() if keys is not None}
            self.history.replicas = have
            if len(have) == len(replicas) and all(want <= keys for keys in have.values()):
                self.history.converged_at = time.monotonic()
                return
            if time.monotonic() - start > patience:
                return
            time.sleep(0.2)

    def finish(self) -> None:
        self.history.executions = read_executions(self.execution_log)
        self.history.rss_growth_mb = {n.name: rss_mb(n.proc.pid) - self.rss_before.get(n.name, 0.0)
                                      for n in self.survivors()}

    def verdict(self, *, rss_limit_mb: float | None = None) -> Verdict:
        return check(self.history, converge_within=2 * self.sync_interval, rss_limit_mb=rss_limit_mb)


async def _drive(args: argparse.Namespace) -> History:
    from mesh_core.config import load_config
    from mesh_core.manager import AgentMeshManager
    from mesh_core.model import NodeRole

    config = load_config(Path(args.config), overrides={"node_name": "chaos-client"}, env={})
    workload = Workload(args.tasks, args.writes, task_seconds=args.task_seconds)
    async with AgentMeshManager(config, role=NodeRole.CLIENT) as mesh:
        await workload.run(mesh, spread_s=args.spread)
        await workload.collect(mesh, timeout=args.timeout)
    return workload.history


def main(argv: list[str] | None = None) -> int:
    """Run a workload against the mesh a config file names; write its history as JSON."""
    parser = argparse.ArgumentParser(prog="python -m mesh_testing.chaos")
    parser.add_argument("--config", required=True)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--writes", type=int, default=0)
    parser.add_argument("--task-seconds", type=float, default=0.05)
    parser.add_argument("--spread", type=float, default=0.0, help="seconds over which to submit")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the results")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    history = asyncio.run(_drive(args))
    Path(args.out).write_text(json.dumps(history.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
