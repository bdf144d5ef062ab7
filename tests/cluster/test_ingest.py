"""Who and what a node takes in (issue #11): idempotency keys from the CLI, and the allowlist and api_key on
every ingest path, on real processes."""

from __future__ import annotations

import json

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.slow


def test_a_task_id_names_one_request_from_the_cli(cluster: Cluster) -> None:
    cluster.start("w1")
    first = cluster.cli("submit", "echo", "--payload", '{"n": 1}', "--task-id", "job-1", "--wait", "--json")
    assert first.returncode == 0, first.stderr
    again = cluster.cli("submit", "echo", "--payload", '{"n": 1}', "--task-id", "job-1", "--wait", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["result"] == json.loads(first.stdout)["result"] == {"n": 1}
    other = cluster.cli("submit", "echo", "--payload", '{"n": 2}', "--task-id", "job-1", "--wait")
    assert other.returncode == 2
    assert "Traceback" not in other.stderr and other.stdout == ""
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "job-1" in lines[0] and "different payload" in lines[0], other.stderr
    assert len(cluster.cli_json("tasks")) == 1
