"""grpc_mesh tasks: a client's submission is copied to the backup while its owner stores it.

The copy is provisional until the owner confirms it (it stored the task); when the owner answers ``EXISTS``
or ``FULL`` instead, the copy is dropped, and a provisional copy is never taken over: a refused submission
never gets a second owner, and an existing task's copy is never replaced by the refused one.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

from mesh_core import codec
from mesh_core.backends.contracts import Assignment, Enqueued
from mesh_core.backends.grpc.tasks import task_fields
from mesh_core.backends.sqlite.store import _write_transaction
from mesh_core.model import Task, TaskStatus

from ..backends.conftest import Cluster, eventually
from .conftest import backend_of


async def _async(value: Any) -> Any:
    return value


async def _rows(backend: Any, table: str, owner_id: str) -> dict[str, bytes]:
    rows = await backend.store._read(lambda c: c.execute(
        f"SELECT task_id, record FROM {table} WHERE owner_id=?", (owner_id,)).fetchall())
    return {task_id: record for task_id, record in rows}


async def _none_provisional(backend: Any, owner_id: str) -> bool:
    return not await _rows(backend, "grpc_provisional", owner_id)


async def _knows(backend: Any, task_id: str) -> bool:
    return task_id in await backend.store.task_states([task_id])


def _task(submitter_id: str, task_type: str = "echo") -> Task:
    return Task(task_id=uuid.uuid4().hex, task_type=task_type, payload={"x": 1}, submitter_id=submitter_id,
                submitted_at=time.time())


async def test_stored_submissions_are_confirmed_and_refused_ones_leave_no_copy(cluster: Cluster) -> None:
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    client = await cluster.client()
    b1, b2, cb = backend_of(w1), backend_of(w2), backend_of(client)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    await eventually(lambda: _async(cb.status_of(b1.node_id) is not None))
    name = w1.config.node_name

    # stored: the provisional copy becomes the backup's copy, as the owner stores the task
    kept = _task(cb.node_id, "no_such_type")  # nobody runs it: it stays assigned
    assert await cb.enqueue([Assignment(kept, b1.node_id, name, "test", 100)]) == [Enqueued.STORED]
    await eventually(lambda: _none_provisional(b2, b1.node_id))
    copy = b2._task_of((await _rows(b2, "grpc_backups", b1.node_id))[kept.task_id])
    # the record as the owner stored it (its sweeper may have moved it since: moves are copied later)
    assert (copy.status, copy.node_id, copy.attempt, copy.why, copy.payload) == (
        TaskStatus.ASSIGNED, b1.node_id, 1, "test", {"x": 1})

    # the same task again: EXISTS, and the backup's copy stays the stored one (the same record: the owner may copy
    # it again meanwhile, at a new revision, when its view of the peers changes, but never the refused submission)
    before = await b2.store._read(lambda c: c.execute("SELECT record FROM grpc_backups WHERE task_id=?",
                                                      (kept.task_id,)).fetchone())
    again = Task(**{**kept.__dict__, "payload": {"x": 2}, "payload_frame": None})
    assert await cb.enqueue([Assignment(again, b1.node_id, name, "again", 100)]) == [Enqueued.EXISTS]
    # FULL: the owner refuses it (capacity 0); the backup keeps nothing of it
    refused = _task(cb.node_id, "no_such_type")
    assert await cb.enqueue([Assignment(refused, b1.node_id, name, "full", 0)]) == [Enqueued.FULL]
    await eventually(lambda: _none_provisional(b2, b1.node_id))
    after = await b2.store._read(lambda c: c.execute("SELECT record FROM grpc_backups WHERE task_id=?",
                                                     (kept.task_id,)).fetchone())
    def held(row: Any) -> tuple[Any, ...]:
        task = b2._task_of(row[0])
        return task.task_id, task.payload, task.submitter_id, task.submitted_at
    assert held(after) == held(before) == (kept.task_id, {"x": 1}, kept.submitter_id, kept.submitted_at)
    assert refused.task_id not in await _rows(b2, "grpc_backups", b1.node_id)

    # the owner dies: the backup takes over the stored task, and never the refused one
    await cluster.crash(w1)
    await eventually(lambda: _knows(b2, kept.task_id), timeout=15)
    assert await b2.store.task_states([refused.task_id]) == {}
    assert await _rows(b2, "grpc_provisional", b1.node_id) == {}


async def test_a_provisional_copy_is_never_taken_over(cluster: Cluster) -> None:
    """A provisional copy whose owner died before confirming or dropping it is dropped at takeover: the owner
    may have refused the submission (the client then sent it elsewhere), and a task it did store is handed on
    by the client, which keeps every task it was told is stored."""
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    b1, b2 = backend_of(w1), backend_of(w2)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    unconfirmed = _task(uuid.uuid4().hex)
    copying = b1._send_copies([unconfirmed], set(), provisional=True)  # copied ahead; the owner never settles it
    assert await b1._copied(copying, set()) == set()
    assert unconfirmed.task_id in await _rows(b2, "grpc_provisional", b1.node_id)
    await cluster.crash(w1)
    await eventually(lambda: _none_provisional(b2, b1.node_id), timeout=15)
    assert await b2.store.task_states([unconfirmed.task_id]) == {}
    assert unconfirmed.status is TaskStatus.PENDING


async def _copies(backend: Any, owner_id: str) -> dict[str, int]:
    rows = await backend.store._read(lambda c: c.execute(
        "SELECT task_id, final FROM grpc_backups WHERE owner_id=?", (owner_id,)).fetchall())
    return dict(rows)


async def test_copies_of_ended_tasks_are_pruned_as_their_owner_prunes_its_own(cluster: Cluster,
                                                                              monkeypatch: Any) -> None:
    """Retention applies to the copies a backup holds as to the owner's own store: per owner, the newest
    ``tasks_kept`` copies stay, older copies of ended tasks go, copies of unfinished tasks always stay; a
    provisional copy never confirmed nor dropped goes after ``PROVISIONAL_KEPT``."""
    retention = {"task_distribution": {"tasks_kept": 5, "dead_letters_kept": 1}}
    w1 = await cluster.node("w1", **retention)
    w2 = await cluster.node("w2", **retention)
    client = await cluster.client()
    b1, b2 = backend_of(w1), backend_of(w2)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    stuck = _task(backend_of(client).node_id, "no_such_type")  # never runs: its copy stays whatever its age
    assert await backend_of(client).enqueue([Assignment(stuck, b1.node_id, w1.config.node_name, "t", 100)]) \
        == [Enqueued.STORED]
    ids = [await client.submit_task("echo", {"i": i}) for i in range(24)]
    ids += [await client.submit_task("fail", {"message": f"no {i}"}, max_retries=0) for i in range(4)]
    for task_id in ids:
        await client.wait_task(task_id, timeout=10)
    # a copy kept before copies were pruned: its ``final`` is not known until retention reads its record
    await b2.store._write(lambda c: c.execute("UPDATE grpc_backups SET final=-1 WHERE owner_id=?", (b1.node_id,)))
    unconfirmed = _task(uuid.uuid4().hex)
    assert await b1._copied(b1._send_copies([unconfirmed], set(), provisional=True), set()) == set()
    held = {owner.node_id: await _copies(holder, owner.node_id) for owner, holder in ((b1, b2), (b2, b1))}
    assert sum(len(c) for c in held.values()) == len(ids) + 1

    monkeypatch.setattr("mesh_core.backends.grpc.tasks.reads.PROVISIONAL_KEPT", 0.0)
    await w1.prune_tasks()
    await w2.prune_tasks()
    for owner, holder in ((b1, b2), (b2, b1)):
        before = held[owner.node_id]
        after = await _copies(holder, owner.node_id)
        assert set(after) <= set(before)
        ended = [t for t, final in after.items() if final == 1]
        dead = [t for t, final in after.items() if final == 2]
        assert len(ended) <= 5 and len(dead) <= 1, after
        assert -1 not in after.values() or len(after) <= 6  # the newest ones may stay unread
        revisions = dict(await holder.store._read(lambda c, o=owner: c.execute(
            "SELECT task_id, revision FROM grpc_backups WHERE owner_id=?", (o.node_id,)).fetchall()))
        newest = sorted(revisions, key=revisions.get, reverse=True)[:5]
        assert set(newest) <= set(after)  # the newest copies stay whatever their state
        [record] = await owner.store.get_tasks([newest[0]], with_attempts=False)
        assert record.task_id == newest[0]
    assert stuck.task_id in await _copies(b2, b1.node_id)  # unfinished: kept however old
    assert b1.counters["task_copies_pruned"] + b2.counters["task_copies_pruned"] >= len(ids) - 12
    assert await _none_provisional(b2, b1.node_id)


async def test_copies_kept_before_retention_are_read_when_retention_reaches_them(cluster: Cluster) -> None:
    """A store from before copies were pruned has no ``final`` column: it is added at start (every copy
    marked unknown), and retention reads an old copy's record when it reaches it."""
    folder = cluster.state / "nodes" / "w1"
    folder.mkdir(parents=True, mode=0o700)
    owner = uuid.uuid4().hex
    ended = [Task(**{**_task(owner).__dict__, "status": TaskStatus.SUCCEEDED, "finished_at": time.time()})
             for _ in range(3)]
    with sqlite3.connect(folder / "grpc.db") as conn:
        conn.execute("CREATE TABLE grpc_backups (owner_id TEXT NOT NULL, task_id TEXT NOT NULL, revision INTEGER "
                     "NOT NULL, record BLOB NOT NULL, PRIMARY KEY (owner_id, task_id)) WITHOUT ROWID")
        conn.executemany("INSERT INTO grpc_backups VALUES (?,?,?,?)", [
            (owner, t.task_id, n, codec.encode(task_fields(t, codec.DEFAULT_LIMITS))) for n, t in enumerate(ended)])
    w1 = await cluster.node("w1", task_distribution={"tasks_kept": 1})
    b1 = backend_of(w1)
    assert set((await _copies(b1, owner)).values()) == {-1}
    await w1.prune_tasks()
    assert await _copies(b1, owner) == {ended[2].task_id: -1}  # the newest stays (not read); the older two went
    assert b1.counters["task_copies_pruned"] == 2


async def _prune_steps(backend: Any, owner: str, copies: int, monkeypatch: Any) -> int:
    """SQLite VM steps of one retention pass over ``copies`` copies of ``owner``'s unfinished tasks (none may go),
    the only copies held, past the newest 1,000 (the pass runs on a connection of its own, on this thread, counting
    as it goes)."""
    record = codec.encode(task_fields(_task(owner), codec.DEFAULT_LIMITS))

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM grpc_backups")
        conn.executemany("INSERT INTO grpc_backups (owner_id, task_id, revision, record, final) VALUES (?,?,?,?,0)",
                         [(owner, f"t{n:06d}", n, record) for n in range(copies)])
    await backend.store._write(fill)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    async def counted(fn: Any, *, inline: bool = True) -> Any:
        conn = sqlite3.connect(backend.store.path, isolation_level=None)
        conn.set_progress_handler(count, 100)
        try:
            return _write_transaction(conn, fn)
        finally:
            conn.close()
    with monkeypatch.context() as patch:
        patch.setattr(backend.store, "_write", counted)
        assert await backend._prune_copies(1000, 10, 5000) == 0
    return steps[0]


async def test_retention_of_copies_reads_what_it_deletes_not_every_copy(cluster: Cluster, monkeypatch: Any) -> None:
    """The dead-letter copies past ``dead_letters_kept`` were looked for by walking every copy of an owner by
    revision and reading each row's ``final``: 0.7-1 s per retention pass at 100,000 copies, every 5 s on the
    write connection, and the writes of the task path queued behind it (a two-worker mesh fell from 2,700 to
    1,700 tasks/s within three minutes). An index on ``final`` makes the pass's work grow with what it deletes."""
    w1 = await cluster.node("w1")
    b1 = backend_of(w1)
    small = await _prune_steps(b1, "o" * 32, 2000, monkeypatch)
    large = await _prune_steps(b1, "p" * 32, 16000, monkeypatch)
    assert large < 1.5 * small, (small, large)
