"""Every loop survives any one record (issue 11, defects 1 and 2), on every backend.

Bad records are written behind the mesh's back (raw SQL on the real file, raw commands on the real
redis-server); then: the loops go on, good records still flow, the bad record is in the quarantine with its
reason, the node's counter moved, and the CLI still answers with exit 0.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import pytest
import redis

from mesh_core import AgentMeshManager
from mesh_core.backends.contracts import Backend, Quarantined
from mesh_core.backends.redis import RedisBackend
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.config import RedisConfig
from mesh_core.memory.digest import bucket_of
from mesh_core.model import NodeInfo

from .conftest import STORE_BACKENDS, Cluster, cluster_for, eventually


@pytest.fixture(params=STORE_BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Only the media with a shared store: these tests write bad records into it behind the mesh's back."""
    async with cluster_for(request, tmp_path) as c:
        yield c


@contextmanager
def sql(cluster: Cluster) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(cluster.db, timeout=30)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


@contextmanager
def raw_redis(cluster: Cluster) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(cluster.redis_url or "")
    try:
        yield client, f"mesh:{{{cluster.name}}}:"
    finally:
        client.close()


async def quarantine_of(cluster: Cluster) -> list[Quarantined]:
    """The mesh's quarantine, read through the backend contract by a medium of its own."""
    medium: Backend
    if cluster.backend == "sqlite":
        medium = SqliteBackend(str(cluster.db))
    else:
        medium = RedisBackend(RedisConfig(url=cluster.redis_url, cluster=cluster.name))
    await medium.open(NodeInfo(node_id=uuid.uuid4().hex, name="reader"))
    try:
        return await medium.quarantined(1000)
    finally:
        await medium.close()


async def assert_quarantined(cluster: Cluster, kind: str, key: str, why: str) -> None:
    async def found() -> bool:
        return any(q.kind == kind and key in q.key and why in q.reason for q in await quarantine_of(cluster))
    await eventually(found, timeout=15)


async def cli_ok(cluster: Cluster, *args: str) -> str:
    done = await asyncio.to_thread(cluster.cli, *args, timeout=60)
    assert done.returncode == 0, f"mesh-tui {' '.join(args)}: {done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


async def a_task_runs(client: AgentMeshManager, n: int) -> None:
    task_id = await client.submit_task("echo", {"n": n})
    assert await client.wait_for(task_id, timeout=20) == {"n": n}


def bad_task_rows(cluster: Cluster, node_id: str) -> list[str]:
    """Tasks assigned to ``node_id`` with a field that is not a number; their ids."""
    ids = [f"bad-{field}-{uuid.uuid4().hex[:8]}" for field in ("priority", "not_before", "attempt")]
    if cluster.backend == "sqlite":
        with sql(cluster) as conn:
            for task_id, (field, value) in zip(ids, (("priority", "high"), ("not_before", "soon"), ("attempt", "one")),
                                               strict=True):
                row = {"task_id": task_id, "task_type": "echo", "priority": 1, "status": "assigned", "node_id": node_id,
                       "node_name": "n1", "attempt": 1, "max_retries": 0, "submitted_at": time.time(),
                       "not_before": 0, field: value}
                conn.execute(f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                             list(row.values()))
        return ids
    with raw_redis(cluster) as (r, p):
        for n, (task_id, (field, value)) in enumerate(
                zip(ids, (("prio", "high"), ("seq", "soon"), ("attempt", "one")), strict=True)):
            fields = {"spec": msgpack.packb({"type": "echo", "payload": b""}), "node": node_id, "node_name": "n1",
                      "attempt": 1, "failures": 0, "prio": 1, "seq": 10_000 + n, "status": "assigned",
                      "not_before": 0, "submitted": time.time(), field: value}
            r.hset(f"{p}t:{task_id}", mapping=fields)
            # one held back (its due time is now: the claim moves it to the inbox), the others in the inbox
            r.zadd(f"{p}delayed:{node_id}" if n < 2 else f"{p}inbox:{node_id}", {task_id: 0})
    return ids


async def test_a_bad_task_in_a_queue_is_quarantined_and_the_claim_loop_goes_on(cluster: Cluster) -> None:
    n1 = await cluster.node("n1")
    client = await cluster.client()
    await a_task_runs(client, 0)
    bad = bad_task_rows(cluster, n1.node_id)
    for n in range(1, 4):
        await a_task_runs(client, n)
    await eventually(lambda: n1.counters["quarantined_task"] >= len(bad), timeout=15)
    for task_id in bad:
        await assert_quarantined(cluster, "task", task_id, "")
    await a_task_runs(client, 9)  # still claiming after the bad entries went
    assert n1.counters["backend_errors"] == 0 and n1.healthy  # no claim failed as a whole
    assert {t.task_id for t in await client.list_tasks(limit=100)}.isdisjoint(bad)
    await cli_ok(cluster, "status")
    await cli_ok(cluster, "tasks")


def bad_memory(cluster: Cluster) -> None:
    """A memory entry whose frame is TEXT (SQLite) or not a frame (Redis), in the log and as a key's latest."""
    if cluster.backend == "sqlite":
        with sql(cluster) as conn:
            conn.execute("INSERT INTO memory_log (origin, memory_type, key, frame, created_at, bucket)"
                         " VALUES ('evil', 'fact', 'spoiled', 'not a blob', ?, ?)",
                         (time.time(), bucket_of("fact", "spoiled")))
            conn.execute("INSERT INTO memory_latest (memory_type, key, origin, frame, bucket)"
                         " VALUES ('fact', 'spoiled', 'evil', 'not a blob', ?)", (bucket_of("fact", "spoiled"),))
        return
    with raw_redis(cluster) as (r, p):
        r.xadd(f"{p}memlog", {"o": "evil", "t": "fact", "k": "spoiled", "f": "not a frame"})
        r.hset(f"{p}mk:fact\0spoiled", "evil", "not a frame")
        r.sadd(f"{p}bk:{bucket_of('fact', 'spoiled')}", "fact\0spoiled")


async def test_a_memory_row_that_is_not_a_frame_stops_no_replica(cluster: Cluster) -> None:
    n1 = await cluster.node("n1")
    n2 = await cluster.node("n2")
    await n1.sync_memory_item("fact", {"v": 0}, key="before")
    await eventually(lambda: _recalled(n2, "before"), timeout=15)
    bad_memory(cluster)
    for i in range(5):  # acknowledged after the bad entry: every one must reach every replica
        await n1.sync_memory_item("fact", {"v": i}, key=f"after-{i}")
    for node in (n2, await cluster.node("n3")):  # n3 joins afterwards: it starts from every key's newest
        for i in range(5):
            await eventually(lambda node=node, i=i: _recalled(node, f"after-{i}"), timeout=20)
    await assert_quarantined(cluster, "memory", "spoiled", "frame")
    assert sum(n.counters["quarantined_memory"] for n in cluster.nodes) >= 1
    out = await cli_ok(cluster, "recall", "after-4", "--json")
    assert json.loads(out)["value"] == {"v": 4}


async def _recalled(node: AgentMeshManager, key: str) -> bool:
    try:
        await node.recall(key)
    except Exception:
        return False
    return True


def bad_members(cluster: Cluster) -> tuple[list[str], list[str]]:
    """Membership records with a field that cannot be read: the ids they are under, and of those the ones no
    node may list (on Redis a bad leave mark goes aside alone; the node's record itself is sound)."""
    if cluster.backend == "sqlite":
        with sql(cluster) as conn:
            columns = ("node_id, name, node_type, role, incarnation, capabilities, task_types, capacity, last_seen,"
                       " left_mesh")
            conn.execute(f"INSERT INTO nodes ({columns}) VALUES ('roleless', 'x', 'general', 'qq', 1, '[]', '[]', 5,"
                         " ?, 0)", (time.time(),))
            conn.execute(f"INSERT INTO nodes ({columns}) VALUES ('leftish', 'y', 'general', 'worker', 1, '[]', '[]',"
                         " 5, ?, 'maybe')", (time.time(),))
        return ["roleless", "leftish"], ["roleless", "leftish"]
    with raw_redis(cluster) as (r, p):
        record = msgpack.packb({"name": "z", "type": "general", "role": "worker", "inc": 1, "caps": [], "types": [],
                                "cap": 5})
        r.hset(f"{p}nodes", mapping={"timeless": record, "leftish": record})
        r.hset(f"{p}seen", mapping={"timeless": "yesterday", "leftish": time.time()})
        r.hset(f"{p}left", "leftish", "1.5x")
    return ["timeless", "leftish"], ["timeless"]


async def test_a_bad_membership_record_breaks_neither_the_mesh_nor_the_cli(cluster: Cluster) -> None:
    n1 = await cluster.node("n1")
    client = await cluster.client()
    await a_task_runs(client, 0)
    bad, gone = bad_members(cluster)
    await cli_ok(cluster, "status")  # the one-shot client reads the bad records first: it must not crash
    for n in range(1, 4):
        await a_task_runs(client, n)
    for node_id in bad:
        await assert_quarantined(cluster, "node", node_id, "")
    await eventually(lambda: sum(n.counters["quarantined_node"] for n in cluster.nodes) >= 1, timeout=10)
    assert n1.healthy and client.healthy
    assert n1.counters["backend_errors"] == 0 and client.counters["backend_errors"] == 0
    assert {m.info.node_id for m in n1.members()}.isdisjoint(gone)
    await cli_ok(cluster, "status")
    await cli_ok(cluster, "tasks")


def wrong_type_memory_keys(cluster: Cluster, n: int) -> None:
    """``n`` keys listed in the memory buckets that are not what the mesh stores there."""
    if cluster.backend == "sqlite":
        with sql(cluster) as conn:
            conn.executemany("INSERT INTO memory_latest (memory_type, key, origin, frame, bucket) VALUES (?,?,?,?,?)",
                             [("fact", f"junk-{i}", "evil", i, bucket_of("fact", f"junk-{i}")) for i in range(n)])
        return
    with raw_redis(cluster) as (r, p):
        for i in range(n):
            r.set(f"{p}mk:fact\0junk-{i}", "a string, not a hash")
            r.sadd(f"{p}bk:{bucket_of('fact', f'junk-{i}')}", f"fact\0junk-{i}")


async def test_memory_keys_of_the_wrong_type_do_not_stop_a_joining_node(cluster: Cluster) -> None:
    n1 = await cluster.node("n1")
    wrong_type_memory_keys(cluster, 100)
    await n1.sync_memory_items("fact", {f"good-{i}": i for i in range(78)})
    late = await cluster.node("late")  # bootstraps from every bucket, then anti-entropy
    for i in range(78):
        await eventually(lambda i=i: _recalled(late, f"good-{i}"), timeout=20)
    assert await late.recall("good-77") == 77
    await eventually(lambda: sum(n.counters["quarantined_memory"] for n in cluster.nodes) >= 100, timeout=10)
    await assert_quarantined(cluster, "memory", "junk-", "")
    await cli_ok(cluster, "recall", "good-1")


async def test_redis_keys_every_script_reads_may_hold_anything(cluster: Cluster) -> None:
    """Mesh-wide keys of the wrong type or value (the task counts, the pending and lease sets, a node's inbox):
    each is moved aside by the first script that meets it, and work goes on."""
    if cluster.backend != "redis":
        return
    n1 = await cluster.node("n1")
    client = await cluster.client()
    await a_task_runs(client, 0)
    with raw_redis(cluster) as (r, p):
        r.hset(f"{p}counts", mapping={"assigned": "many", "running": "1.5", "succeeded": "x"})
        r.delete(f"{p}leases", f"{p}inbox:{n1.node_id}")
        r.set(f"{p}leases", "not a sorted set")
        r.set(f"{p}inbox:{n1.node_id}", "not a sorted set")
    for n in range(1, 4):
        await a_task_runs(client, n)
    await assert_quarantined(cluster, "count", "running", "not an integer")  # an idle node starts it at once
    await assert_quarantined(cluster, "key", "inbox:", "WRONGTYPE")
    await cli_ok(cluster, "status")
    await cli_ok(cluster, "tasks")


async def test_redis_memory_log_keys_may_hold_anything(cluster: Cluster) -> None:
    """The memory stream and its compaction horizon of the wrong type or value: moved aside, and a node that
    joins afterwards still gets every key (from the per-key hashes)."""
    if cluster.backend != "redis":
        return
    n1 = await cluster.node("n1")
    await n1.sync_memory_items("fact", {f"k{i}": i for i in range(20)})
    with raw_redis(cluster) as (r, p):
        r.delete(f"{p}memlog")
        r.hset(f"{p}memlog", "not", "a stream")
        r.set(f"{p}memlog:horizon", "yesterday")
    await n1.sync_memory_item("fact", "after", key="k-after")  # its publish meets the bad stream first
    late = await cluster.node("late")
    for key in [f"k{i}" for i in range(20)] + ["k-after"]:
        await eventually(lambda key=key: _recalled(late, key), timeout=20)
    await assert_quarantined(cluster, "memory", "memlog", "")
    assert n1.counters["backend_errors"] == 0 and late.counters["backend_errors"] == 0
