"""The memory tests of the backend contract suite, run on grpc_mesh (real gRPC servers on 127.0.0.1) until grpc
joins ``mesh_testing.BACKENDS`` with the task tests (then the contract suite runs them itself and this goes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..backends.conftest import Cluster
from ..backends.test_contract import (  # noqa: F401 (collected here, on the grpc cluster below)
    test_a_batch_of_writes_reaches_every_node_and_is_all_or_nothing,
    test_a_node_back_from_an_absence_past_compaction_converges_without_waiting_for_anti_entropy,
    test_concurrent_writes_converge_latest_wins,
    test_corrupt_memory_frame_is_quarantined_and_counted,
    test_history_and_rollback,
    test_manual_conflict_is_resolved_once_for_everyone,
    test_memory_write_is_recalled_on_other_nodes,
    test_merge_compatible_falls_back_to_manual_naming_the_paths,
    test_merge_compatible_merges_disjoint_fields,
    test_peer_to_peer_gossip_reaches_every_node_through_relays,
    test_source_priority_prefers_the_ranked_node,
    test_version_vector_keeps_siblings_until_a_write_that_saw_them,
)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, "grpc")
    try:
        yield c
    finally:
        await c.close()
