"""Every task move of ``mesh_core.tasks.TASK_MOVES``, from every status, on every backend.

Each case builds a task in one status through the backend contract (enqueue, claim, complete, move, cancel),
applies one move fenced at the task's current attempt and holder, and checks that the move was applied
exactly when the table allows it, with the status the table says, and that a refused move changed nothing.
The cases are generated from the table, so a backend whose SQL or Lua lets one more status through fails here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh_core.backends.contracts import Assignment, Backend, Completion, Enqueued, Reassignment
from mesh_core.backends.redis import RedisBackend
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.config import RedisConfig
from mesh_core.model import NodeInfo, Task, TaskStatus
from mesh_core.tasks import TASK_MOVES, Move

from .conftest import BACKENDS

S = TaskStatus
WORKER, OTHER = "a" * 32, "b" * 32
CASES = [(move, target, source) for move, rule in TASK_MOVES.items() for target in sorted(rule.targets)
         for source in TaskStatus]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    medium: Backend
    if request.param == "sqlite":
        medium = SqliteBackend(str(tmp_path / "mesh.db"))
    else:
        url = request.getfixturevalue("redis_server").url
        medium = RedisBackend(RedisConfig(url=url, cluster=tmp_path.name))
    await medium.open(NodeInfo(node_id=WORKER, name="w1"))
    try:
        yield medium
    finally:
        await medium.close()


async def read(backend: Backend, task_id: str) -> Task:
    (task,) = await backend.get_tasks([task_id])
    return task


async def task_in(backend: Backend, status: TaskStatus) -> Task:
    """A fresh task brought to ``status`` by the moves that lead there."""
    task = Task(uuid.uuid4().hex, "echo", {"n": 1}, submitter_id=WORKER, submitted_at=time.time())
    node = None if status is S.PENDING else WORKER
    assert await backend.enqueue([Assignment(task, node, node and "w1", "test", capacity=100)]) == [True]
    if status not in (S.PENDING, S.ASSIGNED):
        assert [t.task_id for t in await backend.claim(WORKER, 10, 30.0)] == [task.task_id]
        if status is S.DEAD_LETTER:
            assert await backend.move([Reassignment(task.task_id, 1, WORKER, None, None, "spent", error="boom",
                                                    count_failure=True, final_status=S.DEAD_LETTER)]) == [True]
        elif status is not S.RUNNING:
            assert await backend.complete([Completion(task.task_id, 1, WORKER, status, None, "x")]) == [True]
    found = await read(backend, task.task_id)
    assert found.status is status
    return found


async def drive(backend: Backend, move: Move, target: TaskStatus, task: Task) -> bool:
    """Apply ``move`` (towards ``target``) to ``task`` through the contract; True when the backend applied it."""
    fence = (task.task_id, task.attempt, task.node_id)
    if move is Move.CLAIM:
        return task.task_id in {t.task_id for t in await backend.claim(WORKER, 10, 30.0)}
    if move is Move.COMPLETE:
        done = Completion(task.task_id, task.attempt, task.node_id or WORKER, target, None, "x")
        return (await backend.complete([done]))[0]
    if move is Move.REROUTE:
        return (await backend.move([Reassignment(*fence, OTHER, "w2", "re-routed", count_failure=True)]))[0]
    if move is Move.REQUEUE:
        return (await backend.move([Reassignment(*fence, None, None, "waiting", count_failure=True,
                                                 final_status=S.PENDING)]))[0]
    if move is Move.FINAL:
        return (await backend.move([Reassignment(*fence, None, None, "spent", error="boom", count_failure=True,
                                                 final_status=target)]))[0]
    if move in (Move.CANCEL_QUEUED, Move.CANCEL_REQUEST):
        # cancel() answers the status a finished task already had, so "cancelled" from cancelled is no move
        word = "cancelled" if move is Move.CANCEL_QUEUED else "cancelling"
        return await backend.cancel([task.task_id]) == [word] and task.status is not S.CANCELLED
    if move is Move.CANCELLED:  # ask to cancel, then the holder's failure moves it on
        await backend.cancel([task.task_id])
        now = await read(backend, task.task_id)
        fence = (now.task_id, now.attempt, now.node_id)
        return (await backend.move([Reassignment(*fence, OTHER, "w2", "retry", error="boom",
                                                 count_failure=True)]))[0]
    assert move is Move.REPLAY
    to = OTHER if target is S.ASSIGNED else None
    return await backend.replay(task.task_id, to, to and "w2", "replayed")


def expected(move: Move, target: TaskStatus, source: TaskStatus) -> tuple[bool, TaskStatus]:
    """(applied, status after) as the table says."""
    if move in (Move.CANCEL_QUEUED, Move.CANCEL_REQUEST):
        # One method, cancel(), applies whichever of the two cancel moves starts from the task's status.
        for kind in (Move.CANCEL_QUEUED, Move.CANCEL_REQUEST):
            if TASK_MOVES[kind].allows(source):
                (status,) = TASK_MOVES[kind].targets
                return kind is move, status
        return False, source
    if move is not Move.CANCELLED:
        allowed = TASK_MOVES[move].allows(source)
        return allowed, target if allowed else source
    # The cancel request is its own move; then the move of a marked task ends it cancelled where the table
    # allows, and an unmarked task moves as any other.
    marked = TASK_MOVES[Move.CANCEL_REQUEST].allows(source)
    after_cancel = S.CANCELLED if TASK_MOVES[Move.CANCEL_QUEUED].allows(source) else source
    if marked and TASK_MOVES[Move.CANCELLED].allows(after_cancel):
        return True, S.CANCELLED
    allowed = TASK_MOVES[Move.REROUTE].allows(after_cancel)
    return allowed, S.ASSIGNED if allowed else after_cancel


@pytest.mark.parametrize(("move", "target", "source"), CASES,
                         ids=[f"{m.value}-to-{t.value}-from-{s.value}" for m, t, s in CASES])
async def test_a_move_applies_exactly_when_the_table_allows_it(backend: Backend, move: Move, target: TaskStatus,
                                                               source: TaskStatus) -> None:
    task = await task_in(backend, source)
    applied = await drive(backend, move, target, task)
    after = await read(backend, task.task_id)
    want_applied, want_status = expected(move, target, source)
    assert (applied, after.status) == (want_applied, want_status), (
        f"{backend.name}: {move.value} from {source.value} applied={applied} → {after.status.value}; "
        f"the table says applied={want_applied} → {want_status.value}")
    if want_status is source and not want_applied:  # refused: nothing about the task changed
        assert (after.attempt, after.node_id, after.failures, after.error, after.finished_at) == (
            task.attempt, task.node_id, task.failures, task.error, task.finished_at)
    if move is Move.CANCELLED and want_status is S.CANCELLED and source is not S.CANCELLED:
        assert after.failures == task.failures  # ended because someone asked, not because it failed
    if move is Move.FINAL and want_applied:
        assert after.failures == task.failures + 1 and after.error == "boom"
    if move is Move.CANCEL_REQUEST and want_applied:
        assert (task.task_id, task.attempt) in await backend.cancel_requests(WORKER)
    if move is Move.REPLAY and want_applied:
        assert (after.attempt, after.failures, after.node_id) == (task.attempt + 1, 0, OTHER if target is S.ASSIGNED
                                                                  else None)


async def test_a_move_to_a_status_the_table_never_leads_to_is_a_caller_error(backend: Backend) -> None:
    task = await task_in(backend, S.RUNNING)
    with pytest.raises(ValueError, match="complete move leads to"):
        await backend.complete([Completion(task.task_id, task.attempt, WORKER, S.PENDING)])
    with pytest.raises(ValueError, match="final move leads to"):
        await backend.move([Reassignment(task.task_id, task.attempt, WORKER, None, None, "x",
                                         final_status=S.SUCCEEDED)])
    assert (await read(backend, task.task_id)).status is S.RUNNING


async def test_a_held_back_task_is_claimed_once_due_and_next_due_says_when(backend: Backend) -> None:
    """Retry backoff: a task assigned held back 0.4 s on the medium's clock waits; the claimer learns in how many
    seconds to look (no clocks compared)."""
    assert await backend.next_due(WORKER) is None or (await backend.claim(WORKER, 10, 30.0)) == []
    sent = time.monotonic()
    task = Task(uuid.uuid4().hex, "echo", None, submitter_id=WORKER, submitted_at=time.time())
    assert await backend.enqueue([Assignment(task, WORKER, "w1", "test", capacity=100, delay=0.4)]) == [True]
    assert await backend.claim(WORKER, 10, 30.0) == []
    when = await backend.next_due(WORKER)
    elapsed = time.monotonic() - sent
    assert when is not None and 0.4 - elapsed - 0.05 < when <= 0.4 + 0.05
    await asyncio.sleep(when + 0.05)
    assert [t.task_id for t in await backend.claim(WORKER, 10, 30.0)] == [task.task_id]
    assert await backend.next_due(WORKER) is None  # nothing held back any more


async def test_enqueue_says_stored_full_or_already_stored(backend: Backend) -> None:
    """An id already stored is left as it is and said so (an idempotency key is checked only then), even when
    the target is full; a new task to a full node is refused."""
    first = await task_in(backend, S.ASSIGNED)
    again = Task(first.task_id, "echo", {"n": 2}, submitter_id=OTHER, submitted_at=time.time())
    other = Task(uuid.uuid4().hex, "echo", None, submitter_id=WORKER, submitted_at=time.time())
    assert await backend.enqueue([Assignment(again, WORKER, "w1", "test", capacity=1),
                                  Assignment(other, WORKER, "w1", "test", capacity=1)]) == \
        [Enqueued.EXISTS, Enqueued.FULL]
    stored = await read(backend, first.task_id)
    assert (stored.payload, stored.submitter_id) == ({"n": 1}, WORKER)  # left as it was
    assert await backend.enqueue([Assignment(other, WORKER, "w1", "test", capacity=5)]) == [Enqueued.STORED]
