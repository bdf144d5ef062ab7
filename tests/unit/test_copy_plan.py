"""A backup's plan for a batch of copies (``plan_copies``) leaves its tables as taking the copies one by one
would: the one-statement-per-copy reading of the rules, kept here as the reference, against the plan applied to
the same tables, for batches hypothesis makes (repeated tasks, revisions out of order, confirmations of copies
never seen, drops, deletions, tasks the backup owns)."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_core.backends.grpc.tasks.records import BACKUPS_SQL, CopyRow, plan_copies

OWNER = "owner-1"
TASKS = ["t1", "t2", "t3"]


def _tables() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(BACKUPS_SQL)
    conn.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY)")
    return conn


def _one_by_one(conn: sqlite3.Connection, rows: list[CopyRow]) -> tuple[set[str], int]:
    """The rules, one statement at a time per copy, in the order the copies came."""
    owned: set[str] = set()
    added = 0
    for task_id, revision, record, deleted, provisional, confirmed, final in rows:
        if provisional and deleted:
            conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=?",
                         (OWNER, task_id, revision))
            continue
        if confirmed:
            row = conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=? "
                               "RETURNING record", (OWNER, task_id, revision)).fetchone()
            if row is None:
                continue
            record, final = row[0], 0
        if conn.execute("SELECT 1 FROM tasks WHERE task_id=?", (task_id,)).fetchone() is not None:
            owned.add(task_id)
            continue
        if provisional and not confirmed:
            conn.execute("INSERT OR REPLACE INTO grpc_provisional (owner_id, task_id, revision, record) "
                         "VALUES (?,?,?,?)", (OWNER, task_id, revision, record))
            continue
        conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision<?",
                     (OWNER, task_id, revision))
        held = conn.execute("SELECT revision FROM grpc_backups WHERE owner_id=? AND task_id=?",
                            (OWNER, task_id)).fetchone()
        if deleted:
            if held is not None:
                conn.execute("DELETE FROM grpc_backups WHERE owner_id=? AND task_id=?", (OWNER, task_id))
                added -= 1
        elif held is None:
            conn.execute("INSERT INTO grpc_backups (owner_id, task_id, revision, record, final) VALUES (?,?,?,?,?)",
                         (OWNER, task_id, revision, record, final))
            added += 1
        elif revision > held[0]:
            conn.execute("UPDATE grpc_backups SET revision=?, record=?, final=? WHERE owner_id=? AND task_id=?",
                         (revision, record, final, OWNER, task_id))
    return owned, added


def _planned(conn: sqlite3.Connection, rows: list[CopyRow]) -> tuple[set[str], int]:
    """The same batch as the backup keeps it now: one read per table, the plan's writes."""
    owned = {r[0] for r in conn.execute("SELECT task_id FROM tasks")}
    provisional: dict[str, dict[int, bytes]] = {}
    for task_id, revision, record in conn.execute("SELECT task_id, revision, record FROM grpc_provisional"):
        provisional.setdefault(task_id, {})[revision] = record
    held = dict(conn.execute("SELECT task_id, revision FROM grpc_backups").fetchall())
    plan = plan_copies(rows, owned, provisional, held)
    conn.executemany("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=?",
                     [(OWNER, t, r) for t, r in plan.provisional_drop])
    conn.executemany("INSERT OR REPLACE INTO grpc_provisional (owner_id, task_id, revision, record) VALUES (?,?,?,?)",
                     [(OWNER, *p) for p in plan.provisional_put])
    conn.executemany("DELETE FROM grpc_backups WHERE owner_id=? AND task_id=?", [(OWNER, t) for t in plan.backups_drop])
    conn.executemany("INSERT OR REPLACE INTO grpc_backups (owner_id, task_id, revision, record, final) "
                     "VALUES (?,?,?,?,?)", [(OWNER, *b) for b in plan.backups_put])
    return plan.refused, plan.added


def _state(conn: sqlite3.Connection) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    backups = conn.execute("SELECT task_id, revision, record, final FROM grpc_backups ORDER BY task_id").fetchall()
    waiting = conn.execute("SELECT task_id, revision, record FROM grpc_provisional ORDER BY task_id, revision")
    return backups, waiting.fetchall()


copies = st.tuples(st.sampled_from(TASKS), st.integers(1, 6), st.binary(min_size=1, max_size=3), st.booleans(),
                   st.booleans(), st.booleans(), st.sampled_from([-1, 0, 1, 2]))
# what the backup held before: copies, provisional copies, tasks it owns itself
before = st.tuples(st.dictionaries(st.sampled_from(TASKS), st.tuples(st.integers(1, 6), st.binary(max_size=2))),
                   st.lists(st.tuples(st.sampled_from(TASKS), st.integers(1, 6), st.binary(max_size=2)), max_size=4),
                   st.sets(st.sampled_from(TASKS), max_size=1))


@settings(max_examples=400, deadline=None)
@given(before=before, batches=st.lists(st.lists(copies, max_size=8), min_size=1, max_size=3))
def test_a_planned_batch_leaves_the_tables_as_copies_taken_one_by_one(
        before: tuple[dict[str, tuple[int, bytes]], list[tuple[str, int, bytes]], set[str]],
        batches: list[list[CopyRow]]) -> None:
    held, provisional, owned = before
    reference, planned = _tables(), _tables()
    for conn in (reference, planned):
        conn.executemany("INSERT INTO grpc_backups (owner_id, task_id, revision, record, final) VALUES (?,?,?,?,0)",
                         [(OWNER, t, r, rec) for t, (r, rec) in held.items()])
        conn.executemany("INSERT OR REPLACE INTO grpc_provisional (owner_id, task_id, revision, record) "
                         "VALUES (?,?,?,?)", [(OWNER, *p) for p in provisional])
        conn.executemany("INSERT INTO tasks (task_id) VALUES (?)", [(t,) for t in owned])
    for batch in batches:
        assert _planned(planned, batch) == _one_by_one(reference, batch)
        assert _state(planned) == _state(reference)


def test_a_confirmation_moves_the_provisional_copy_and_a_later_outcome_replaces_it() -> None:
    plan = plan_copies([("t1", 5, b"", False, True, True, -1), ("t1", 6, b"done", False, False, False, 1)],
                       set(), {"t1": {5: b"task"}}, {})
    assert plan.provisional_drop == [("t1", 5)] and plan.provisional_put == []
    assert plan.backups_put == [("t1", 6, b"done", 1)] and plan.added == 1 and not plan.refused
