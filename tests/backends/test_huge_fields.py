"""A medium may hold values of any size (issue 11, H): a record with a huge field is quarantined, and what the
quarantine keeps of it (raw value, reason) and what the node logs and publishes about it stay small."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from mesh_core.backends.shared import QUARANTINE_RAW_BYTES, REASON_CHARS, raw_bytes, shortened

from .conftest import STORE_BACKENDS, Cluster, cluster_for, eventually
from .test_quarantine import a_task_runs, quarantine_of, raw_redis, sql


@pytest.fixture(params=STORE_BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Only the media with a shared store: these tests write bad records into it behind the mesh's back."""
    async with cluster_for(request, tmp_path) as c:
        yield c


HUGE = 256 * 1024


def huge_members(cluster: Cluster) -> list[str]:
    """Membership records with a 256 KB name or a 256 KB port; the ids they are under."""
    if cluster.backend == "sqlite":
        with sql(cluster) as conn:
            columns = ("node_id, name, node_type, role, port, incarnation, capabilities, task_types, capacity,"
                       " last_seen, left_mesh")
            conn.execute(f"INSERT INTO nodes ({columns}) VALUES ('hugename', ?, 'general', 'worker', 0, 1, '[]', '[]',"
                         " 5, ?, 0)", ("x" * HUGE, time.time()))
            conn.execute(f"INSERT INTO nodes ({columns}) VALUES ('hugeport', 'p', 'general', 'worker', ?, 1, '[]',"
                         " '[]', 5, ?, 0)", (b"\xff" * HUGE, time.time()))
        return ["hugename", "hugeport"]
    with raw_redis(cluster) as (r, p):
        record = {"name": "z", "type": "general", "role": "worker", "inc": 1, "caps": [], "types": [], "cap": 5}
        r.hset(f"{p}nodes", mapping={"hugename": msgpack.packb({**record, "name": "x" * HUGE}),
                                     "hugeport": msgpack.packb({**record, "port": "\xff" * HUGE})})
        r.hset(f"{p}seen", mapping={"hugename": time.time(), "hugeport": time.time()})
    return ["hugename", "hugeport"]


async def test_a_record_with_a_huge_field_is_quarantined_and_kept_small(cluster: Cluster) -> None:
    n1 = await cluster.node("n1")
    client = await cluster.client()
    await a_task_runs(client, 0)
    huge = huge_members(cluster)
    problems: list[str] = []

    async def all_aside() -> bool:
        keys = {q.key for q in await quarantine_of(cluster) if q.kind == "node"}
        return all(any(node_id in k for k in keys) for node_id in huge)
    await eventually(all_aside, timeout=15)
    for q in await quarantine_of(cluster):
        if q.kind == "node" and any(node_id in q.key for node_id in huge):
            problems.append(q.reason)
            assert len(q.raw) <= QUARANTINE_RAW_BYTES, f"{q.key}: the quarantine kept {len(q.raw)} raw bytes"
            assert len(q.reason) <= REASON_CHARS + 40, f"{q.key}: a reason of {len(q.reason)} characters"
    assert problems
    assert not {m.info.node_id for m in n1.members()} & set(huge)
    assert all(len(m.info.name) <= 1024 for m in n1.members())
    await a_task_runs(client, 1)
    assert n1.healthy and client.healthy


def test_a_quarantined_raw_value_and_reason_are_cut() -> None:
    assert len(raw_bytes(b"\xff" * HUGE)) == QUARANTINE_RAW_BYTES
    assert len(raw_bytes({"name": "x" * HUGE, "port": b"\xff" * HUGE, "n": 1})) <= QUARANTINE_RAW_BYTES
    assert len(raw_bytes(("id", "x" * HUGE, 2.5))) <= QUARANTINE_RAW_BYTES
    assert raw_bytes(b"small") == b"small"
    cut = shortened("y" * HUGE)
    assert len(cut) <= REASON_CHARS + 40 and cut.endswith(f"({HUGE} characters)")
    assert shortened("short") == "short"
