"""The machine pace every bench prints: CPU per unit of fixed engine-like work, so that figures from two runs
(this 2-core machine's speed swung 2x within hours) compare in proportion to their paces."""

from __future__ import annotations

from bench import report


def test_the_pace_is_cpu_per_unit_and_steady_from_one_call_to_the_next() -> None:
    first, second = report.machine_pace(repeats=3), report.machine_pace(repeats=3)
    assert 0 < first < 10_000 and 0 < second < 10_000  # µs per unit: a unit is a few µs of work, not seconds
    # best of the repeats of CPU time (not wall time): other work on the machine hardly moves it
    assert max(first, second) / min(first, second) < 3, (first, second)


def test_every_bench_header_names_the_pace_of_its_run() -> None:
    info = report.machine_info()
    assert info["pace_us"] > 0
    text = report.render({"mode": "tasks", "machine": info, "pace_us_end": 7.5})
    assert f"pace at start {info['pace_us']}, end 7.5 µs per unit" in text.splitlines()[0]
