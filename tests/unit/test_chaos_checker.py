"""The chaos suite's history checker, on histories written by hand."""

from __future__ import annotations

import random

from mesh_testing.chaos import LONG, SHORT, Execution, History, Outcome, check, parse_executions, scale_from_env
from mesh_testing.fuzz import HUGE, garbage


def _clean() -> History:
    h = History()
    for i in range(3):
        h.submitted[f"t{i}"] = True
        h.executions.append(Execution(f"t{i}", 1, "w1"))
        h.outcomes[f"t{i}"] = Outcome("succeeded", 1, 1, 1)
    h.submitted["refused"] = False
    h.writes = {"k1": True, "k2": True, "k3": False}
    h.replicas = {"w1": {"k1", "k2"}, "w2": {"k1", "k2", "k3"}}
    h.last_fault_at, h.converged_at = 100.0, 103.0
    h.rss_growth_mb = {"w1": 3.0, "w2": 12.5}
    return h


def test_a_clean_history_passes_with_its_figures() -> None:
    v = check(_clean(), converge_within=5, rss_limit_mb=50)
    assert v.ok, v.problems
    assert (v.tasks_acknowledged, v.tasks_recorded_once, v.tasks_lost, v.tasks_duplicated) == (3, 3, 0, 0)
    assert (v.writes_acknowledged, v.writes_lost, v.convergence_s, v.rss_growth_mb) == (2, 0, 3.0, 12.5)
    assert "tasks ack 3 / once 3 / lost 0 / dup 0" in v.line("kill9")


def test_a_retried_execution_with_one_recorded_result_is_fine() -> None:
    h = _clean()
    h.executions.append(Execution("t0", 2, "w2"))  # at-least-once execution
    h.outcomes["t0"] = Outcome("succeeded", 1, 2, 2)
    assert check(h, converge_within=5).ok


def test_lost_duplicated_and_late_results_are_named() -> None:
    h = _clean()
    h.outcomes["t0"] = Outcome("dead_letter", 0, 4, None)
    h.outcomes["t1"] = Outcome("succeeded", 2, 2, 2)
    h.outcomes["t2"] = Outcome("succeeded", 1, 2, 1)  # the result of attempt 1 kept after attempt 2 began
    v = check(h, converge_within=5)
    assert (v.tasks_lost, v.tasks_duplicated, v.late_results_accepted, v.tasks_recorded_once) == (1, 1, 1, 0)
    text = " ".join(v.problems)
    assert "dead_letter" in text and "t0" in text and "more than one" in text and "older attempt" in text


def test_an_acknowledged_task_missing_from_the_mesh_is_lost() -> None:
    h = _clean()
    del h.outcomes["t2"]
    v = check(h, converge_within=5)
    assert v.tasks_lost == 1 and "missing" in v.problems[0]


def test_a_lost_write_slow_convergence_and_rss_growth_fail() -> None:
    h = _clean()
    h.replicas["w1"] = {"k1"}
    h.converged_at = 112.0
    h.rss_growth_mb["w2"] = 60.0
    v = check(h, converge_within=5, rss_limit_mb=50)
    assert v.writes_lost == 1 and not v.ok
    text = " ".join(v.problems)
    assert "w1 lacks 1" in text and "12.0 s after" in text and "w2 grew 60.0 MB" in text


def test_never_converged_is_a_problem() -> None:
    h = _clean()
    h.converged_at = None
    v = check(h, converge_within=5)
    assert v.convergence_s is None and "never converged" in " ".join(v.problems)


def test_results_without_a_recorded_start_and_ghost_executions_are_named() -> None:
    h = _clean()
    h.executions = [e for e in h.executions if e.task_id != "t1"] + [Execution("nobody", 1, "w1")]
    text = " ".join(check(h, converge_within=5).problems)
    assert "no execution start" in text and "nobody submitted" in text


def test_execution_lines_skip_a_torn_last_line() -> None:
    assert parse_executions("t1 1 w1\nt2 2 w2\nt3 1") == [Execution("t1", 1, "w1"), Execution("t2", 2, "w2")]


def test_history_round_trips_through_json() -> None:
    h = _clean()
    assert History.from_json(h.to_json()) == h


def test_the_scale_comes_from_the_environment() -> None:
    assert scale_from_env({"CHAOS_SCALE": "long"}) is LONG and scale_from_env({}) is SHORT
    assert LONG.tasks == 1000 and LONG.in_flight >= 100 and LONG.fuzz_entries == 10_000
    assert LONG.partition_s == 10 and LONG.loss_s == 20 and set(LONG.skews) == {300.0, -300.0}


def test_the_fuzzer_makes_every_kind_of_bad_value_and_is_repeatable() -> None:
    real = b"\x85\xa1k\xa3key\xa1v\x01"
    values = [garbage(random.Random(seed), real) for seed in range(400)]
    assert values == [garbage(random.Random(seed), real) for seed in range(400)]
    assert any(isinstance(v, bytes) and 0 < len(v) < len(real) and real.startswith(v) for v in values)  # truncated
    assert any(isinstance(v, bytes) and len(v) == len(real) and v != real for v in values)  # bit flips
    assert any(isinstance(v, bytes) and len(v) >= HUGE for v in values)
    assert any(isinstance(v, int) and v >= 2**63 - 1 for v in values) and any(isinstance(v, str) for v in values)
