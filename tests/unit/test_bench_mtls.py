"""``python -m bench tasks --backend grpc --tls``: the plan runs the mesh over mutual TLS too, and the report says
what TLS cost against the plaintext run of the same invocation."""

from __future__ import annotations

from bench import report
from bench.__main__ import build_parser, make_plan


def test_tls_flag_plans_the_mtls_run() -> None:
    plan = make_plan(build_parser().parse_args(["tasks", "--backend", "grpc", "--tls", "--no-refs", "--quick"]))
    assert plan.tasks_tls and plan.tasks_backends == ["grpc"] and not plan.grpc_refs
    assert not make_plan(build_parser().parse_args(["tasks", "--backend", "grpc"])).tasks_tls


def test_mtls_cost_per_level_and_best() -> None:
    plain = {"best_tasks_per_second": 1000.0, "throughput": [{"inflight": 64, "tasks_per_second": 1000.0},
                                                             {"inflight": 256, "tasks_per_second": 800.0}]}
    mtls = {"best_tasks_per_second": 900.0, "throughput": [{"inflight": 64, "tasks_per_second": 900.0},
                                                           {"inflight": 256, "tasks_per_second": 820.0}]}
    cost = report.mtls_cost(plain, mtls)
    assert cost["64_inflight"] == {"plain_per_second": 1000.0, "mtls_per_second": 900.0, "cost_pct": 10.0,
                                   "plain_cpu_ms_per_task": None, "mtls_cpu_ms_per_task": None}
    assert cost["256_inflight"]["cost_pct"] == -2.5
    assert cost["best_cost_pct"] == 10.0 and cost["target_met"] is True
    assert report.mtls_cost(plain, {"error": "x"}) == {}
