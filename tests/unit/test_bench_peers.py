"""``python -m bench peers``: its arguments, and the report's mesh ÷ best peer per shape and level (issue #14)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench import peers, report
from bench.__main__ import build_parser, make_plan
from bench.cluster import BenchError, redis_binary


def _plan(*argv: str):  # type: ignore[no-untyped-def]
    return make_plan(build_parser().parse_args(["peers", *argv]))


def test_peers_default_to_every_peer_but_ray_in_both_shapes_with_the_mesh_measured_alike() -> None:
    plan = _plan("--quick")
    assert plan.peer.which == peers.DEFAULT_PEERS and "ray" not in plan.peer.which and not plan.peer.with_ray
    assert plan.peer.opt_in_if_installed  # Ray runs when its venv is there
    assert {"dramatiq", "dramatiq-short", "saq", "arq", "taskiq"} <= set(plan.peer.which)
    assert plan.peer.shapes == ("window", "waiters") == plan.redis_shapes
    assert plan.tasks_backends == ["redis"] and plan.redis_server is None
    assert make_plan(build_parser().parse_args(["tasks", "--backend", "redis"])).redis_shapes == ("waiters",)


def test_peer_selection_ray_shapes_and_redis_server_are_parsed(tmp_path: Path) -> None:
    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    plan = _plan("--only-peers", "huey,saq", "--with-ray", "--shapes", "waiters", "--redis-server", str(binary))
    assert plan.peer.which == ("huey", "saq") and plan.peer.with_ray
    assert not _plan("--only-peers", "huey").peer.opt_in_if_installed  # named peers only, installed Ray or not
    assert plan.peer.shapes == ("waiters",) == plan.redis_shapes and plan.redis_server == str(binary.resolve())
    with pytest.raises(SystemExit, match="no executable file"):
        _plan("--redis-server", str(tmp_path / "absent"))
    assert _plan("--only-peers", "ray").peer.with_ray  # naming ray asks for its venv too
    with pytest.raises(SystemExit):
        _plan("--only-peers", "huey,rq")
    with pytest.raises(SystemExit):
        _plan("--shapes", "window,burst")


def test_redis_server_path_must_be_an_executable(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no executable"):
        redis_binary(str(tmp_path / "absent"))
    plain = tmp_path / "redis-server"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(BenchError, match="no executable"):
        redis_binary(str(plain))
    plain.chmod(plain.stat().st_mode | stat.S_IXUSR)
    assert redis_binary(str(plain)) == str(plain.absolute()) and os.path.isabs(redis_binary(None))


def test_redis_server_path_keeps_the_name_it_was_given(tmp_path: Path) -> None:
    """Debian's /usr/bin/redis-server links to redis-check-rdb, which acts by the name it is called with."""
    real = tmp_path / "redis-check-rdb"
    real.write_text("#!/bin/sh\n")
    real.chmod(real.stat().st_mode | stat.S_IXUSR)
    link = tmp_path / "redis-server"
    link.symlink_to(real.name)
    assert redis_binary(str(link)) == str(link)


def _block(p50: float, window: dict[int, float], waiters: dict[int, float]) -> dict:  # type: ignore[type-arg]
    def runs(rates: dict[int, float], shape: str) -> list[dict]:  # type: ignore[type-arg]
        return [{"inflight": k, "tasks_per_second": v, "shape": shape, "tasks_finished": 10, "tasks_requested": 10,
                 "latency_under_load": {"n": 10, "p50_ms": 1.0, "p99_ms": 2.0}} for k, v in rates.items()]

    return {"idle_latency": {"round_trip": {"p50_ms": p50, "p99_ms": p50 * 2, "n": 10}},
            "throughput": runs(window, "window"),
            "best_tasks_per_second": max(window.values()),
            "shapes": {"window": runs(window, "window"), "waiters": runs(waiters, "waiters")}}


def test_best_peer_per_level_and_shape_and_for_idle_p50() -> None:
    data = {"tasks": {"redis": _block(1.0, {64: 6000.0, 256: 9000.0}, {64: 4000.0, 256: 8000.0})},
            "peers": {"options": {"n": 1}, "huey": _block(0.8, {64: 2000.0, 256: 2500.0}, {64: 1000.0}),
                      "dramatiq": _block(1.6, {64: 3000.0, 256: 2000.0}, {64: 2000.0, 256: 2600.0}),
                      "saq": {"error": "BenchError: no venv"}, "ray": {"skipped": "no virtual environment"}}}
    best = report.best_peer_ratios(data)
    assert best["idle_p50"] == {"best": "huey", "peer": 0.8, "mesh": 1.0, "ratio": 1.25}
    assert best["window"][64] == {"best": "dramatiq", "peer": 3000.0, "mesh": 6000.0, "ratio": 2.0}
    assert best["window"][256]["best"] == "huey" and best["window"][256]["ratio"] == 3.6
    assert best["waiters"][64]["best"] == "dramatiq" and best["waiters"][256] == {
        "best": "dramatiq", "peer": 2600.0, "mesh": 8000.0, "ratio": 3.08}
    summary = report.summary(data)
    assert summary["mesh_vs_best_peer_window_64_inflight"] == 2.0 and summary["best_peer_idle_p50"] == "huey"
    assert summary["peer_dramatiq_per_second_256_inflight_waiters"] == 2600.0
    assert report.failures(data) == ["peers[saq]"]  # a skipped peer is no failure, a failed one is
    text = report.render({"mode": "peers", **data})
    assert "Mesh ÷ best peer" in text and "left out: no virtual environment" in text


def test_no_ratio_without_the_mesh_or_a_peer_of_that_shape() -> None:
    mesh = _block(1.0, {64: 6000.0}, {64: 4000.0})
    assert report.best_peer_ratios({"tasks": {"redis": mesh}, "peers": {"huey": {"error": "x"}}}) == {}
    only_window = {"idle_latency": {"round_trip": {"p50_ms": 2.0}},
                   "throughput": [{"inflight": 64, "tasks_per_second": 100.0, "shape": "window"}]}
    best = report.best_peer_ratios({"tasks": {"redis": mesh}, "peers": {"celery": only_window}})
    assert set(best) == {"idle_p50", "window"} and best["idle_p50"]["ratio"] == 0.5
