"""Task lifecycle policy (pure): retries with backoff, dead letters, re-routing of stranded work.

The manager asks these functions what to do and hands the answer to the
backend as fenced operations; nothing here performs I/O.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .model import Task, TaskStatus


@dataclass(frozen=True)
class RetryPolicy:
    enabled: bool = True
    max_retries: int = 3
    base_seconds: float = 0.2
    max_seconds: float = 30.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base·2^(n-1))]."""
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** max(0, failures - 1)))
        return (rng or random).uniform(0, ceiling) if ceiling > 0 else 0.0


@dataclass(frozen=True)
class Retry:
    not_before: float
    failures: int


@dataclass(frozen=True)
class DeadLetter:
    failures: int
    reason: str


def after_failure(task: Task, policy: RetryPolicy, now: float, rng: random.Random | None = None) -> Retry | DeadLetter:
    """What happens to ``task`` whose current attempt just failed."""
    failures = task.failures + 1
    allowed = task.max_retries if task.max_retries >= 0 else policy.max_retries
    if not policy.enabled:
        return DeadLetter(failures, "retries are disabled")
    if failures > allowed:
        return DeadLetter(failures, f"failed {failures} time(s), over max_task_retries={allowed}")
    return Retry(now + policy.delay(failures, rng), failures)


@dataclass(frozen=True)
class Stranded:
    """A task whose holder is gone or whose lease lapsed; ``started`` means bump the fencing token."""

    task: Task
    reason: str
    started: bool


def classify_stranded(tasks: Collection[Task], node_status: Mapping[str, str], now: float) -> list[Stranded]:
    """Which of ``tasks`` must move now, and why. ``node_status`` maps node id → judged status."""
    out = []
    for task in tasks:
        if task.status not in (TaskStatus.ASSIGNED, TaskStatus.RUNNING):
            continue
        status = node_status.get(task.node_id or "", "dead")
        started = task.status is TaskStatus.RUNNING
        if status in ("dead", "left"):
            out.append(Stranded(task, f"node {status}", started))
        elif started and task.lease_expires is not None and task.lease_expires < now:
            out.append(Stranded(task, "lease lapsed", True))
    return out
