"""Tasks started at enqueue (SQLite and Redis): the rules both media follow, in one place.

An enqueue starts a task on a node with a free slot and nothing queued, as that node's last claim said
(valid for GRANT_FRESH seconds), and sends the task as the node's wake-up. The node runs a wake-up while it is
fresh; a claim hands on a started task left unanswered for ``unanswered_after`` (or ends it cancelled if its
cancel was asked meanwhile). The Redis scripts take these figures from here (``lua_common``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence

from ..model import Task

GRANT_FRESH = 1.5  # seconds a node's word on its free slots stays good (an idle worker claims every 0.5 s)
GRANT_LOST = 1.0  # see ``unanswered_after``
HANDED_KEPT = 10_000  # attempts remembered as handed to the worker (a late duplicate wake-up is seconds old at most)


def unanswered_after(lease_seconds: float) -> float:
    """Seconds after which a task started at enqueue whose wake-up its worker did not answer is handed on by the
    worker's claim (the Redis scripts apply the same rule): well before the lease granted with it
    lapses."""
    return min(GRANT_LOST, lease_seconds / 4)


class StartedTasks:
    """The tasks a medium started for this node at enqueue (the lease granted there, the task sent in the wake-up),
    handed to the worker by its next claim without a round trip; the claim reads the medium only when a wake-up
    said the inbox has work, or when no started task came (a poll).

    A wake-up is run only while it is fresh (younger than half of ``unanswered_after`` on the medium's clock): a
    late one (the node was stopped, its loop was slow) is dropped and its task left to the medium, whose claim
    hands it on later if it is still this node's and not cancelled meanwhile, so a task cancelled before it ran
    never runs. Each attempt reaches the worker once."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Task, float]] = []  # task, monotonic time until which it may still be run
        self.inbox_news = True  # a 'tasks' wake-up came since the medium was last claimed from (or none was yet)
        self.lease: float | None = None  # the lease the worker's claims ask for (the medium grants the same)
        self._handed: OrderedDict[tuple[str, int], None] = OrderedDict()
        # Started tasks taken from a wake-up that the medium has not been told of: the next claim tells it first
        # (``answers``), so that its look for unanswered wake-ups never hands on, or ends, a task this node runs.
        self._answers: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.in_wakeups = 0  # tasks run from a wake-up
        self.late = 0  # wake-ups too old to run: their tasks are left to a claim
        self.handed_again = 0  # started tasks a claim handed on that this node had not had (wake-up lost or late)

    def arrived(self, tasks: Sequence[tuple[Task, float | None]]) -> None:
        """Tasks from a wake-up, each with its age on the medium's clock (None: unknown, so not run from here)."""
        now = time.monotonic()
        fresh = unanswered_after(self.lease) / 2 if self.lease else 0.0
        for task, age in tasks:
            if age is not None and age < fresh:
                self._waiting.append((task, now + fresh - age))
            else:
                self.late += 1

    def take(self, limit: int) -> tuple[list[Task], int]:
        """The started tasks that came and are still fresh (``take_fresh``), and how many a claim of the medium may
        start besides them (0: no claim is needed now)."""
        started = self.take_fresh()
        room = limit - len(started)
        if room <= 0 or (started and not self.inbox_news):
            return started, 0
        self.inbox_news = False
        return started, room

    def take_fresh(self) -> list[Task]:
        """The started tasks that came and are still fresh, each attempt once (all of them, past any limit: their
        leases are running); a late one is counted and left to the medium."""
        waiting, self._waiting = self._waiting, []
        now = time.monotonic()
        started = [t for t, until in waiting if until > now]
        self.late += len(waiting) - len(started)
        out = self.first_hands(started)
        self.in_wakeups += len(out)
        self._answers.update(((t.task_id, t.attempt), None) for t in out)
        while len(self._answers) > HANDED_KEPT:
            self._answers.popitem(last=False)
        return out

    def answers(self) -> list[tuple[str, int]]:
        """The started attempts taken from wake-ups that the medium has not been told of (``told`` forgets them).
        A claim tells the medium before it looks for unanswered ones: else a task whose cancel was asked while it
        ran here (past its point of no return, so it went on) was ended "cancelled before it ran" by that look,
        and its outcome refused."""
        return list(self._answers)

    def told(self, answers: Sequence[tuple[str, int]]) -> None:
        """The medium holds ``answers`` answered now (a claim committed them)."""
        for answer in answers:
            self._answers.pop(answer, None)

    def handed_on(self, claimed: Iterable[Task], again: Collection[str]) -> list[Task]:
        """What a claim of the medium gave, each attempt once (``first_hands``). ``again``: the ids of the started
        tasks it handed on as unanswered; only those this node had not taken from a wake-up count as handed again
        (a wake-up lost or late). One it runs already is no news: its wake-up came, and the task outlived
        ``unanswered_after`` (the medium answers a started task only when it ends)."""
        out = self.first_hands(claimed)
        if again:
            self.handed_again += sum(1 for t in out if t.task_id in again)
        return out

    def first_hands(self, tasks: Iterable[Task]) -> list[Task]:
        out = []
        for t in tasks:
            key = (t.task_id, t.attempt)
            if key not in self._handed:
                self._handed[key] = None
                out.append(t)
        while len(self._handed) > HANDED_KEPT:
            self._handed.popitem(last=False)
        return out

    def describe(self) -> dict[str, int]:
        return {"tasks_started_in_wakeups": self.in_wakeups, "tasks_handed_again": self.handed_again,
                "started_wakeups_late": self.late}
