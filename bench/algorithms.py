"""``algorithms``: the tasks bench once per load-balancing algorithm (the submitter's config), on SQLite.

Each algorithm gets a fresh 2-worker cluster and a fresh database, so no run
inherits a larger task table or a warmer page cache from the one before. The
workers keep the engine defaults; only the submitter's
``task_distribution.load_balancing_algorithm`` changes. With ``rounds`` > 1 the
order alternates (forward, backward, ...) so a drift in the machine's load does
not favour the algorithms that ran first; every round is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mesh_core.config import ALGORITHMS
from mesh_core.errors import MeshError
from mesh_testing import RedisServer

from . import tasks
from .cluster import BenchError


@dataclasses.dataclass(frozen=True)
class AlgorithmsOptions:
    algorithms: tuple[str, ...] = ALGORITHMS
    backend: str = "sqlite"
    latency_n: int = 200
    throughput_n: int = 5000
    inflight: tuple[int, ...] = (256,)
    warmup: int = 20
    budget_s: float = 20.0
    worker_concurrency: int | None = None
    rounds: int = 2
    keep_dir: bool = False


async def run(opts: AlgorithmsOptions, log: Any = print, redis: RedisServer | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"options": opts.__dict__.copy(), "backend": opts.backend, "runs": {}, "rounds": {}}
    order = [(r, a) for r in range(opts.rounds)
             for a in (opts.algorithms if r % 2 == 0 else tuple(reversed(opts.algorithms)))]
    for round_no, algorithm in order:
        topts = tasks.TasksOptions(latency_n=opts.latency_n, throughput_n=opts.throughput_n, inflight=opts.inflight,
                                   warmup=opts.warmup, throughput_budget_s=opts.budget_s,
                                   worker_concurrency=opts.worker_concurrency, backend=opts.backend,
                                   algorithm=algorithm, keep_dir=opts.keep_dir)
        try:
            result = await tasks.run(topts, log, redis)
        except (BenchError, MeshError, OSError, RuntimeError, ValueError) as exc:  # report it, run the next one
            log(f"algorithms: {algorithm}: FAILED: {exc}")
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["round"] = round_no + 1
        out["rounds"].setdefault(algorithm, []).append(result)
    for algorithm, results in out["rounds"].items():
        out["runs"][algorithm] = _combine(results)
    return out


def _combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The first round as the headline block, every round's throughput listed, and the mean tasks/s."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    head = dict(ok[0])
    head["throughput"] = [dict(thr, round=r["round"]) for r in ok for thr in r.get("throughput", [])]
    rates = [r["best_tasks_per_second"] for r in ok]
    head["best_tasks_per_second_per_round"] = rates
    head["mean_tasks_per_second"] = round(sum(rates) / len(rates), 1)
    head["failed_rounds"] = len(results) - len(ok)
    return head
