"""Task progress end to end: a real ``mesh-tui --no-ui`` worker reports it, ``mesh-tui submit --wait`` shows it."""

from __future__ import annotations

import json

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.slow

HANDLERS = '''
import asyncio

from mesh_core import handler


@handler("steps")
async def steps(payload, ctx):
    for i in range(1, 3):
        ctx.progress(i / 5, f"step {i}/5")
        await asyncio.sleep(1.5)  # past a lease renewal (heartbeat 0.5 s) and a poll of the waiting client
    return "done"
'''


def test_submit_wait_prints_plain_progress_lines_when_not_a_terminal(cluster: Cluster) -> None:
    (cluster.root / "progress_probe.py").write_text(HANDLERS)
    cluster.start("w1", "--handlers", "progress_probe")
    done = cluster.cli("submit", "steps", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '"done"'  # standard output stays the result a script reads
    lines = [line for line in done.stderr.splitlines() if line.startswith("progress ")]
    assert lines == ["progress 20% step 1/5", "progress 40% step 2/5"], done.stderr
    reply = json.loads(cluster.cli("submit", "steps", "--wait", "--json").stdout)
    assert reply["status"] == "succeeded" and reply["progress"] == 0.4 and reply["progress_message"] == "step 2/5"
