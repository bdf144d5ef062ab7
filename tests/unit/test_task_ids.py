"""Task ids: made in time order (so the media's id-keyed tables append), told apart on screen by their random end."""

from __future__ import annotations

import time

from mesh_core.model import new_task_id, short_id


def test_made_ids_are_32_hex_digits_that_start_with_the_microsecond_they_were_made() -> None:
    before = time.time_ns() // 1000
    task_id = new_task_id()
    after = time.time_ns() // 1000
    assert len(task_id) == 32 and int(task_id, 16) >= 0 and task_id == task_id.lower()
    assert before <= int(task_id[:14], 16) <= after


def test_ids_made_one_after_another_sort_in_the_order_they_were_made_and_never_repeat() -> None:
    made = [new_task_id() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    stamps = [int(t[:14], 16) for t in made]
    assert stamps == sorted(stamps)  # the clock did not go back in this run; equal stamps differ in the random part


def test_the_short_id_of_made_ids_tells_apart_ids_made_in_the_same_instant() -> None:
    made = [new_task_id() for _ in range(2_000)]
    # their starts are the time (to 256 µs): ids made together start alike, unless 2,000 took over 0.1 s to make
    assert len({t[:12] for t in made}) < len(made) // 4
    assert len({short_id(t) for t in made}) == len(made)
    assert all(len(short_id(t)) == 12 and t.endswith(short_id(t)) for t in made)


def test_a_caller_s_own_id_shows_its_start() -> None:
    assert short_id("invoice-2026-12-05-customer-42") == "invoice-2026"
    assert short_id("job-7") == "job-7"
    assert short_id("A" * 32) == "A" * 12  # not lowercase hex: not a made id
