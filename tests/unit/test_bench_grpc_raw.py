"""The raw gRPC echo reference of ``bench grpcpeers``: real grpc.aio servers on 127.0.0.1, real worker processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from bench import grpc_refs, peer_grpc_raw, report, window


def _no_log(text: str) -> None:
    pass


async def _measure(client: peer_grpc_raw.EchoClient, n: int = 200) -> dict:
    return await window.measure("test", client.send, lambda: {"all": 0.0}, latency_n=20, n=n, windows=(1, 16),
                                budget_s=30.0, timeout=10.0, warmup=5, log=_no_log)


async def test_echo_over_two_streams_matches_every_reply_to_its_request() -> None:
    servers = [await peer_grpc_raw.start_server() for _ in range(2)]
    client = await peer_grpc_raw.EchoClient([f"127.0.0.1:{port}" for _, port in servers]).open()
    try:
        out = await _measure(client)
    finally:
        await client.close()
        for server, _ in servers:
            await server.stop(0)
    assert out["idle_latency"]["round_trips"] == 20 and out["idle_latency"]["failed"] == 0
    assert [r["inflight"] for r in out["throughput"]] == [1, 16]
    for run in out["throughput"]:
        assert (run["tasks_finished"], run["failed"], run["errors"]) == (200, 0, 0)
        assert run["tasks_per_second"] > 0 and run["latency_under_load"]["n"] == 200
    assert client.unmatched == 0 and not client.pending


async def test_mutual_tls_echoes_and_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    files = peer_grpc_raw.make_certs(tmp_path / "tls")
    server, port = await peer_grpc_raw.start_server(files)
    try:
        client = await peer_grpc_raw.EchoClient([f"127.0.0.1:{port}"], files).open()
        try:
            out = await _measure(client, n=50)
        finally:
            await client.close()
        assert out["throughput"][-1]["tasks_finished"] == 50 and out["throughput"][-1]["errors"] == 0

        # the CA alone (no client certificate): the server's handshake refuses it, the channel never gets ready
        anonymous = grpc.aio.secure_channel(f"127.0.0.1:{port}",
                                            grpc.ssl_channel_credentials(root_certificates=files.ca.read_bytes()))
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anonymous.channel_ready(), 1.5)
        finally:
            await anonymous.close()
    finally:
        await server.stop(0)


async def test_a_worker_gone_fails_its_requests_at_once_instead_of_timing_out() -> None:
    server, port = await peer_grpc_raw.start_server()
    client = await peer_grpc_raw.EchoClient([f"127.0.0.1:{port}"]).open()
    try:
        assert await asyncio.wait_for(await client.send(7), 5) == 7
        await server.stop(0)
        out = await window.window(client.send, 20, 4, budget_s=10.0, timeout=10.0)
    finally:
        await client.close()
    assert out["tasks_finished"] == 0 and out["errors"] == 20
    assert out["wall_seconds"] < 5.0
    assert "ConnectionError" in out["error_samples"][0]


async def test_run_grpc_references_raw_in_worker_processes_gives_the_tasks_shape() -> None:
    opts = grpc_refs.GrpcRefOptions(latency_n=20, n=300, windows=(8, 64), warmup=5, which=("raw",))
    data = {"grpcpeers": await grpc_refs.run_grpc_references(opts, _no_log)}
    raw = data["grpcpeers"]["raw"]
    assert "error" not in raw, raw
    assert raw["idle_latency"]["round_trip"]["n"] == 20 and raw["unmatched_echoes"] == 0
    assert [r["inflight"] for r in raw["throughput"]] == [8, 64]
    for run in raw["throughput"]:
        assert (run["tasks_finished"], run["errors"], run["failed"]) == (300, 0, 0)
        assert run["cpu_seconds"]["workers"] > 0 and run["cpu_ms_per_task"] > 0
    assert raw["best_tasks_per_second"] == max(r["tasks_per_second"] for r in raw["throughput"])
    assert report.failures(data) == []
    assert "raw: 64 in flight" in report.render(data)
    assert report.summary(data)["grpc_raw_per_second_64_inflight"] == raw["throughput"][1]["tasks_per_second"]


def _block(per_second: dict[int, float], p50: float, cpu_ms: float) -> dict:
    return {"idle_latency": {"round_trip": {"p50_ms": p50}},
            "throughput": [{"inflight": k, "tasks_per_second": v, "cpu_ms_per_task": cpu_ms}
                           for k, v in per_second.items()],
            "best_tasks_per_second": max(per_second.values())}


def test_mtls_cost_and_mesh_ratios_against_the_references() -> None:
    raw = _block({64: 7000.0, 256: 8000.0}, 0.2, 0.25)
    tls = _block({64: 6300.0, 256: 7600.0}, 0.25, 0.3)
    cost = grpc_refs.mtls_cost(raw, tls)
    assert cost["throughput_loss_pct_64_inflight"] == 10.0 and cost["throughput_loss_pct_256_inflight"] == 5.0
    assert cost["best_throughput_loss_pct"] == 5.0 and cost["idle_p50_ms_added"] == 0.05
    # the mesh's tasks block reports CPU as seconds per process; the ratio uses CPU per finished task
    mesh = _block({64: 3500.0, 256: 4000.0}, 0.6, 0.0)
    for run in mesh["throughput"]:
        del run["cpu_ms_per_task"]
        run.update(tasks_finished=1000, cpu_seconds={"bench": 0.4, "w1": 0.3, "w2": 0.3})
    r = report.grpc_ratios({"tasks": {"grpc": mesh}, "grpcpeers": {"raw": raw, "raw-tls": tls}})
    assert r["mesh_vs_raw_tasks_per_second_64_inflight"] == 0.5
    assert r["mesh_vs_raw_best_tasks_per_second"] == 0.5 and r["mesh_vs_raw_idle_p50"] == 3.0
    assert r["mesh_vs_raw_cpu_per_task_at_best"] == 4.0  # 1.0 ms against 0.25 ms
    assert r["mesh_vs_raw_tls_idle_p50"] == 2.4


def test_median_of_rounds_keeps_a_real_run_per_level() -> None:
    rounds = [_block({64: v}, p, 0.3) for v, p in ((5000.0, 0.3), (3000.0, 0.5), (7000.0, 0.2))]
    out = grpc_refs.median_of_rounds(rounds)
    assert out["throughput"][0]["tasks_per_second"] == 5000.0
    assert out["throughput"][0]["tasks_per_second_per_round"] == [5000.0, 3000.0, 7000.0]
    assert out["idle_latency"]["round_trip"]["p50_ms"] == 0.3 and out["rounds"] == 3
