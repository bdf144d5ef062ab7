"""The fuzzer: malformed entries over everything the mesh reads; then tasks still flow and memory converges."""

from __future__ import annotations

import asyncio

import pytest

from mesh_testing.chaos import ChaosRun, Workload
from mesh_testing.fuzz import fuzz_redis, fuzz_sqlite

from .conftest import RSS_LIMIT_MB, SCALE, MakeRun, judge, reported

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(900 if SCALE.name == "long" else 240)]


def _quiet(run: ChaosRun) -> None:
    run.healed()


def test_fuzzed_entries_everywhere_then_tasks_flow_and_memory_converges(
        make_run: MakeRun, backend: str, mesh_url: str | None) -> None:
    run = make_run(backend, mesh_url)
    run.start_workers(3)
    # a first workload leaves a real record of every kind (task, attempt, memory, ack, digest) to copy and break
    asyncio.run(run.run(_quiet, workload=Workload(30, 10, task_seconds=0.01)))
    run.mark_rss()
    cluster = run.cluster
    if backend == "sqlite":
        written = fuzz_sqlite(str(cluster.db), SCALE.fuzz_entries, seed=11)
    else:
        written = fuzz_redis(str(mesh_url), f"mesh:{{{cluster.name}}}:", SCALE.fuzz_entries, seed=11)
    print(f"fuzzed {sum(written.values())} entries: {dict(written)}")
    assert sum(written.values()) >= SCALE.fuzz_entries * 0.8, written
    with reported(f"fuzzer ({sum(written.values())} entries)", run):
        cluster.check_alive()
        asyncio.run(run.run(_quiet, workload=Workload(SCALE.tasks, SCALE.writes, task_seconds=0.01, first=10_000)))
    print("RSS growth per node (MB):", {n: round(mb, 1) for n, mb in sorted(run.history.rss_growth_mb.items())})
    judge(f"fuzzer ({sum(written.values())} entries)", run, rss_limit_mb=RSS_LIMIT_MB)
    cluster.check_alive()
