"""``sqlite_local``: tasks started at enqueue (see ``backends.started``), the statements and the parts that do no I/O
of their own."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ...model import NodeInfo
from ..shared import TASK_FIELDS, runs_of_bytes

TASK_COLUMNS = ", ".join(TASK_FIELDS)  # the columns are named as the Task's fields
START_MAX_BYTES = 48 * 1024  # a larger task (payload and context) is not started at enqueue: it would not fit a wake-up
DATAGRAM_BYTES = 64 * 1024  # started tasks per wake-up datagram, at most
# Started tasks sent to one node by one enqueue, at most: a node's socket holds ~200 KB of datagrams (Linux's
# default); the rest of a big burst waits in its inbox for a claim instead of being dropped on the way.
START_BATCH_BYTES = 128 * 1024
START_SQL = (
    "INSERT OR IGNORE INTO tasks (task_id, task_type, payload, priority, status, node_id, node_name, attempt,"
    " failures, max_retries, timeout_s, preferred, required, context, submitter_id, why, submitted_at, not_before,"
    " parent_id, signature, started_at, lease_expires) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    f" RETURNING {TASK_COLUMNS}")
UNANSWERED = ("task_id IN (SELECT g.task_id FROM granted g WHERE g.node_id=? AND g.at<? AND g.attempt=tasks.attempt)"
              " AND node_id=? AND status='running'")
AGAIN_SQL = (  # started tasks whose wake-up their node has not answered: a fresh lease, handed on by its claim
    f"UPDATE tasks SET lease_expires=? WHERE {UNANSWERED} AND cancel_requested=0 RETURNING seq, {TASK_COLUMNS}")
NEVER_RAN_SQL = (  # ... or, cancelled meanwhile, ended: they never ran
    "UPDATE tasks SET status='cancelled', finished_at=?, lease_expires=NULL, error='cancelled before it ran'"
    f" WHERE {UNANSWERED} AND cancel_requested=1 RETURNING submitter_id")


def free_slots(conn: sqlite3.Connection, targets: Sequence[str], local: NodeInfo | None, clock: float,
               depth: Mapping[str | None, int], queued: Mapping[str, int]) -> dict[str, list[float]]:
    """Nodes an enqueue may start tasks on: node → [free slots, lease seconds, 0]. Its last claim said so within
    GRANT_FRESH seconds, nothing waits in its inbox, and it is not this node (its own claim is a call away)."""
    own = local.node_id if local else None
    free: dict[str, list[float]] = {}
    marks = ",".join("?" * len(targets))
    for node, slots, lease, fresh in conn.execute(
            f"SELECT node_id, slots, lease, fresh_until FROM grants WHERE node_id IN ({marks})", targets):
        if node == own or queued.get(node) or not all(isinstance(v, int | float) for v in (slots, lease, fresh)):
            continue  # a row of the wrong type reads as no word at all; the node's next claim writes it again
        room = slots - (depth.get(node, 0) - queued.get(node, 0))
        if fresh > clock and room > 0 and lease > 0:
            free[node] = [room, lease, 0]  # and the bytes started there by this enqueue
    return free


def datagrams(rows: Sequence[Sequence[Any]]) -> list[list[Sequence[Any]]]:
    """Started task rows cut into parts that each fit one wake-up datagram (the payload and context dominate)."""
    return runs_of_bytes(rows, lambda row: len(row[2] or b"") + len(row[13] or b"") + 1024, DATAGRAM_BYTES)
