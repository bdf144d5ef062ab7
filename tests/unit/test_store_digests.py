"""A replica keeps its anti-entropy digests as it changes (``ReplicaStore.digests``): after any sequence of applied
batches, local writes, undone writes and rolled-back transactions they equal a computation from scratch over its
frontier (``digest.digests(frontier_marks())``), also after a restart; and two replicas fed the same writes in
different orders and batches have equal digests."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_core.memory.digest import LATELY_KEPT, BucketDigests, bucket_of, digests, line_hash
from mesh_core.memory.resolve import STRATEGIES, fold_batch, local_write
from mesh_core.memory.store import COUNT_EXACT_SECONDS, KeyState, ReplicaStore
from mesh_core.model import MemoryItem
from tests.unit.test_convergence import RANKING, op
from tests.unit.test_fold_batch import one_by_one, writes_for


class Refused(Exception):
    """A change given up half way (the replica rolls it back)."""


def apply_batch(store: ReplicaStore, batch: list[MemoryItem], strategy_of: Callable[[str], str]) -> None:
    """Fold a batch as a node applies a log read (in the caller's transaction when it holds one)."""
    names = [(i.memory_type, i.key) for i in batch]
    store.replace_many(list(fold_batch(store.states(names), batch, strategy_of, ranking=RANKING).values()))


def write_locally(store: ReplicaStore, item: MemoryItem, hlc: int) -> None:
    """A node's own write over what the key holds, as ``MemoryService`` stores it."""
    siblings, sources = store.state(item.memory_type, item.key)
    mine = local_write(sources or siblings, replace(item, vv={}, hlc=hlc, value={"own": hlc}), "me")
    store.replace_siblings(mine.memory_type, mine.key, (mine,), tuple(siblings), "local write", sources=(mine,))


def agrees(store: ReplicaStore) -> bool:
    return store.digests() == digests(store.frontier_marks())


# (what, where in the writes, a second number)
step = st.tuples(st.sampled_from(["batch", "one by one", "local", "undo", "refused", "reopen"]), st.integers(0, 60),
                 st.integers(1, 8))


@settings(max_examples=120, deadline=None)
@given(st.lists(op, min_size=1, max_size=18), st.integers(0, 2**16), st.booleans(), st.sampled_from(STRATEGIES),
       st.sampled_from(STRATEGIES), st.lists(step, min_size=1, max_size=14))
def test_kept_digests_equal_a_computation_from_the_frontier(ops: list[tuple[bool, int, int, int]], seed: int,
                                                            compatible: bool, fact_strategy: str, note_strategy: str,
                                                            steps: list[tuple[str, int, int]]) -> None:
    writes = writes_for(ops, seed, compatible)
    strategy_of = {"fact": fact_strategy, "note": note_strategy}.__getitem__
    with tempfile.TemporaryDirectory() as root:
        path = str(Path(root) / "memory.db")
        store = ReplicaStore(path)
        store.digests()  # kept from here on
        saved: list[KeyState] = []
        at, clock = 0, 10**9
        try:
            for what, where, size in steps:
                item = writes[where % len(writes)]
                if what == "batch":
                    with store.batch():
                        apply_batch(store, writes[at:at + size], strategy_of)
                    at = (at + size) % len(writes)
                elif what == "one by one":  # a key's sources left as they are when a write keeps them
                    with store.batch():
                        one_by_one(store, writes[at:at + size], strategy_of)
                    at = (at + size) % len(writes)
                elif what == "local":
                    saved.append(store.key_state(item.memory_type, item.key))
                    clock += 1
                    write_locally(store, item, clock)
                elif what == "undo" and saved:
                    with store.batch():
                        store.restore(saved.pop(where % len(saved)))
                elif what == "refused":
                    with pytest.raises(Refused), store.batch():
                        apply_batch(store, writes[at:at + size], strategy_of)  # its savepoint released, then undone
                        clock += 1
                        write_locally(store, item, clock)
                        raise Refused
                elif what == "reopen":
                    store.close()
                    store = ReplicaStore(path)
                assert agrees(store), what
                # the key count follows the keys writes create; past changes it did not follow, it reads them again
                exact = store._db.execute("SELECT count(DISTINCT memory_type || '/' || key) FROM items").fetchone()[0]
                assert store.count() == exact or store._count_stale, what
                store._counted_at -= COUNT_EXACT_SECONDS
                assert store.count() == exact, what
        finally:
            store.close()


def test_the_key_count_is_not_read_again_at_every_ask_under_steady_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat asks for the key count every second. It was read again (a scan of the whole replica) at the
    first ask after any write: under steady writes, every second, on the node's loop."""
    store = ReplicaStore(None)
    counts: list[str] = []
    store._db.set_trace_callback(lambda sql: counts.append(sql) if "DISTINCT memory_type, key" in sql else None)
    writes = [MemoryItem(memory_type="fact", key=f"k{i % 50}", value=i, origin="o", hlc=10**9 + i, vv={"o": i + 1})
              for i in range(200)]
    asked = []
    for start in range(0, 200, 10):
        apply_batch(store, writes[start:start + 10], lambda _: "latest_wins")
        asked.append(store.count())
    assert asked[-1] == 50 and asked[:5] == [10, 20, 30, 40, 50]  # new keys counted as they come, not read
    assert len(counts) <= 2, counts  # the first ask, and one more once the rewrites of keys made it stale


@settings(max_examples=80, deadline=None)
@given(st.lists(op, min_size=1, max_size=18), st.integers(0, 2**16), st.booleans(), st.sampled_from(STRATEGIES),
       st.lists(st.integers(0, 60), max_size=4), st.lists(st.integers(0, 60), max_size=4))
def test_replicas_with_one_frontier_have_equal_kept_digests_whatever_the_order(
        ops: list[tuple[bool, int, int, int]], seed: int, compatible: bool, strategy: str, cuts_a: list[int],
        cuts_b: list[int]) -> None:
    writes = writes_for(ops, seed, compatible)
    shuffled = list(writes)
    random.Random(seed).shuffle(shuffled)
    replicas = []
    for order, cuts in ((writes, cuts_a), (shuffled, cuts_b)):
        store = ReplicaStore(None)
        store.digests()
        bounds = sorted({0, len(order), *(c % (len(order) + 1) for c in cuts)})
        for start, end in zip(bounds, bounds[1:], strict=False):
            apply_batch(store, order[start:end], lambda _: strategy)
        replicas.append(store)
    a, b = replicas
    assert sorted(a.frontier_marks()) == sorted(b.frontier_marks())
    assert a.digests() == b.digests() == digests(a.frontier_marks())


def test_a_bucket_digest_is_a_sum_that_lines_leave_as_they_came() -> None:
    lines = [("fact", f"k{i}", "n1", i) for i in range(200)]
    kept = BucketDigests()
    kept.add(lines)
    kept.add([("fact", "k0", "n2", 7)])
    kept.remove([("fact", "k0", "n2", 7)])
    assert kept.as_dict() == digests(reversed(lines))
    kept.remove(lines)
    assert kept.as_dict() == {}  # an emptied bucket is left out, as one never filled
    assert line_hash("fact", "k", "n1", 1) != line_hash("fact", "k", "n1", 2)


def test_a_digest_this_replica_had_lately_is_known_and_one_it_never_had_is_not() -> None:
    kept = BucketDigests()
    kept.add([])
    lines = [("fact", f"k{i}", "n1", i) for i in range(300)]
    snapshots = []
    for start in range(0, 300, 50):  # batches, as a log read applies them; a peer published after the third
        kept.replace([], lines[start:start + 50])
        snapshots.append(kept.as_dict())
    behind = snapshots[2]
    assert all(kept.had(bucket, digest) for bucket, digest in behind.items())
    assert kept.had(5, None)  # a peer's empty bucket holds nothing this one lacks
    # a peer that holds a line this replica never had: its digest was never this replica's
    other = BucketDigests()
    other.add([*lines[:100], ("fact", "k0", "n2", 7)])
    bucket = bucket_of("fact", "k0")
    assert not kept.had(bucket, other.as_dict()[bucket])
    assert not kept.had(bucket, "not hex")
    # a replaced line: the sum before the replacement is still one this replica had (the peer holds the old line)
    before = kept.as_dict()[bucket]
    kept.replace([("fact", "k0", "n1", 0)], [("fact", "k0", "n1", 1000)])
    assert kept.had(bucket, before)
    kept.forget(bucket)  # an undone change: the sums it passed through are not vouched for any more
    assert not kept.had(bucket, before) and kept.had(bucket, kept.as_dict()[bucket])
    for i in range(LATELY_KEPT + 10):  # bounded: the oldest go first
        kept.replace([], [("fact", "k0", f"x{i}", i)])
    assert len(kept.lately[bucket]) == LATELY_KEPT


def old_items_table(conn: sqlite3.Connection) -> None:
    """``items`` as releases before schema 8 made it: keyed by (type, key, ...), with an index of its key beside."""
    conn.execute("CREATE TABLE items (memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL,"
                 " hlc INTEGER NOT NULL, value BLOB NOT NULL, vv TEXT NOT NULL, priority INTEGER NOT NULL,"
                 " tombstone INTEGER NOT NULL, checksum INTEGER NOT NULL, PRIMARY KEY (memory_type, key, origin, hlc))")
    conn.execute("CREATE INDEX items_key ON items (key)")


def test_a_replica_an_earlier_release_made_is_keyed_by_the_key_first_and_keeps_its_items(tmp_path: Path) -> None:
    """``items`` was keyed by (type, key, ...) with an index of its key beside: three b-trees written per item. A
    replica from then is rebuilt at open, keyed by the key first (two b-trees), with every item and digest kept."""
    path = str(tmp_path / "replica.db")
    store = ReplicaStore(path)
    writes = [MemoryItem(memory_type=t, key=f"k{i}", value=i, origin="o", hlc=10**9 + 2 * i + n, vv={"o": 2 * i + n})
              for i in range(30) for n, t in enumerate(("fact", "note"))]
    apply_batch(store, writes, lambda _: "latest_wins")
    held, marks = {(i.memory_type, i.key): i for i in writes}, store.digests()
    store.close()
    with sqlite3.connect(path) as conn:  # as an earlier release left it
        conn.execute("ALTER TABLE items RENAME TO items_new")
        old_items_table(conn)
        conn.execute("INSERT INTO items SELECT * FROM items_new")
        conn.execute("DROP TABLE items_new")
    store = ReplicaStore(path)
    try:
        schema = dict(store._db.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name LIKE 'items%'"))
        assert set(schema) == {"items", "sqlite_autoindex_items_1"}
        assert "PRIMARY KEY (key, memory_type, origin, hlc)" in schema["items"]
        assert store.count() == 60 and store.digests() == marks
        assert [(i.memory_type, i.value) for i in store.find("k7")] == [("note", 7)]  # its newest type
        assert store.siblings("note", "k3") == [held[("note", "k3")]]
        apply_batch(store, [replace(held[("fact", "k3")], value="new", hlc=2 * 10**9, vv={"o": 100})],
                    lambda _: "latest_wins")
        assert [i.value for i in store.siblings("fact", "k3")] == ["new"] and agrees(store)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:  # an earlier release opens it again: its schema adds the key index back
        conn.execute("CREATE INDEX IF NOT EXISTS items_key ON items (key)")
    store = ReplicaStore(path)  # and this one drops it
    try:
        assert not store._db.execute("SELECT 1 FROM sqlite_master WHERE name='items_key'").fetchone()
        assert store.count() == 60
    finally:
        store.close()


def test_a_replica_that_cannot_be_rebuilt_stays_as_it_was_and_says_why(tmp_path: Path) -> None:
    """The rebuild needs room for a second copy of the items (a full disk refuses it) and a free name: refused, the
    replica stays as an earlier release made it, which reads and writes as before, and says why (a node counts it:
    ``test_a_node_whose_replica_cannot_be_rebuilt_starts_and_counts_why``)."""
    path = str(tmp_path / "replica.db")
    with sqlite3.connect(path) as conn:
        old_items_table(conn)
        conn.execute("CREATE TABLE items_old (x)")  # in the way of the rebuild
    store = ReplicaStore(path)
    try:
        assert store.not_upgraded and "items_old" in store.not_upgraded
        assert store._db.execute("SELECT 1 FROM sqlite_master WHERE name='items_key'").fetchone()  # rolled back
        item = MemoryItem(memory_type="fact", key="k", value=1, origin="o", hlc=10**9, vv={"o": 1})
        apply_batch(store, [item], lambda _: "latest_wins")
        assert store.find("k") == [item] and store.count() == 1 and agrees(store)
    finally:
        store.close()


def test_a_commit_refused_with_the_transaction_left_open_is_undone_and_the_next_write_works(tmp_path: Path) -> None:
    """SQLite keeps a transaction open after some refused COMMITs (here: a deferred constraint that a table in the
    same file checks at the commit). The replica's next BEGIN then failed with "cannot start a transaction within a
    transaction" at every write until a restart, and the refused change would have gone out with the next commit
    that worked. It is undone now, for a batch and for a change alone."""
    store = ReplicaStore(str(tmp_path / "replica.db"))
    db = store._db
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    try:
        refused = MemoryItem(memory_type="fact", key="refused", value=1, origin="o", hlc=10**9, vv={"o": 1})
        for all_or_nothing in (store.batch, store._savepoint):
            with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), all_or_nothing():
                apply_batch(store, [refused], lambda _: "latest_wins")
                db.execute("INSERT INTO child VALUES (7)")  # refused at the commit
            assert not db.in_transaction
        later = MemoryItem(memory_type="fact", key="later", value=2, origin="o", hlc=10**9 + 1, vv={"o": 2})
        apply_batch(store, [later], lambda _: "latest_wins")
        assert store.find("refused") == [] and store.find("later") == [later]
        assert store.count() == 1 and agrees(store)
    finally:
        store.close()
    store = ReplicaStore(str(tmp_path / "replica.db"))
    try:
        assert store.find("refused") == [] and store.count() == 1
    finally:
        store.close()
