"""The chaos suite's task handler: ``--handlers mesh_testing.chaos_probe`` on a node process.

Task type ``chaos_probe``: appends one line ``TASK_ID ATTEMPT NODE_NAME`` to the
file named by the environment variable ``CHAOS_EXECUTION_LOG`` when an attempt
starts (one ``write`` on an ``O_APPEND`` file, so lines from several processes
never interleave), sleeps ``payload["seconds"]``, and returns which attempt on
which node produced the result, so the checker can tell a late result from an
old attempt.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mesh_core import TaskContext, handler

EXECUTION_LOG_ENV = "CHAOS_EXECUTION_LOG"
TASK_TYPE = "chaos_probe"


def _record_start(line: str) -> None:
    path = os.environ.get(EXECUTION_LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@handler(TASK_TYPE, capabilities={"chaos"})
async def chaos_probe(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    _record_start(f"{ctx.task_id} {ctx.attempt} {ctx.node_name}\n")
    seconds = payload.get("seconds", 0.0) if isinstance(payload, dict) else 0.0
    await asyncio.sleep(float(seconds))
    return {"attempt": ctx.attempt, "node": ctx.node_name}
