"""Of two nodes' answers for one task, the record further along wins, whichever node answered first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh_core.model import Task, TaskStatus
from mesh_core.tasks import further_along

records = st.builds(lambda attempt, status, node: Task("t1", "echo", status=status, attempt=attempt, node_name=node),
                    st.integers(0, 4), st.sampled_from(list(TaskStatus)), st.sampled_from(["a", "b"]))


def test_the_owners_final_record_beats_a_copy_of_the_same_attempt_still_running() -> None:
    running = Task("t1", "sleep", status=TaskStatus.RUNNING, attempt=2, node_name="b")
    done = Task("t1", "sleep", status=TaskStatus.SUCCEEDED, attempt=2, node_name="b")
    assert further_along(running, done) is done and further_along(done, running) is done


def test_a_later_attempt_beats_an_earlier_one_that_ended() -> None:
    failed = Task("t1", "sleep", status=TaskStatus.FAILED, attempt=1)
    retried = Task("t1", "sleep", status=TaskStatus.ASSIGNED, attempt=2)
    assert further_along(failed, retried) is retried and further_along(retried, failed) is retried


@given(st.lists(records, min_size=1, max_size=6))
def test_the_answer_does_not_depend_on_which_node_answered_first(answers: list[Task]) -> None:
    def rank(t: Task) -> tuple[int, bool]:
        return t.attempt, t.status.is_final

    forward = answers[0]
    for t in answers[1:]:
        forward = further_along(forward, t)
    backward = answers[-1]
    for t in reversed(answers[:-1]):
        backward = further_along(backward, t)
    assert rank(forward) == rank(backward) == max(rank(t) for t in answers)
