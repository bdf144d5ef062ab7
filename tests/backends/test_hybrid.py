"""hybrid at start: real probes against a real redis-server, real gRPC servers on 127.0.0.1 and dead ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh_core import AgentMeshManager
from mesh_core.backends import choose_backend
from mesh_core.backends.choice import SeedOutcome
from mesh_core.backends.grpc import API_KEY_HEADER
from mesh_core.backends.grpc._generated import mesh_pb2, mesh_pb2_grpc
from mesh_core.backends.hybrid import Caller, choose, probe_redis, probe_seed
from mesh_core.codec import DEFAULT_LIMITS
from mesh_core.commands import render_status, status_data
from mesh_core.config import GrpcConfig, MeshConfig, load_config
from mesh_testing import free_port

CURRENT = mesh_pb2.PROTOCOL_VERSION_CURRENT
ME = Caller(node_id="ab" * 16, node_name="prober", incarnation=3)


class Seed(mesh_pb2_grpc.MeshServicer):
    """A node that serves only ``Handshake``: answers as ``name``, speaks ``version``; records who asked."""

    def __init__(self, name: str, version: int = CURRENT, *, api_key: str | None = None, delay: float = 0.0,
                 refuse_version: bool = False) -> None:
        self.name, self.version, self.api_key, self.delay = name, version, api_key, delay
        self.refuse_version = refuse_version
        self.heard: list[tuple[Any, dict[str, str]]] = []

    async def Handshake(self, request: Any, context: Any) -> Any:  # noqa: N802 - the generated name
        metadata = {k: v for k, v in context.invocation_metadata() or ()}
        self.heard.append((request, metadata))
        if self.api_key is not None and metadata.get(API_KEY_HEADER) != self.api_key:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong api key")
        if self.refuse_version and request.protocol_version != self.version:
            said = f"peer speaks mesh protocol {request.protocol_version}, this node speaks {self.version}"
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, said)
        await asyncio.sleep(self.delay)
        return mesh_pb2.Hello(protocol_version=self.version, node_id="cd" * 16, node_name=self.name, incarnation=1,
                              address="")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Seed], Any]]:
    servers: list[grpc.aio.Server] = []

    async def start(servicer: Seed) -> str:
        server = grpc.aio.server()
        mesh_pb2_grpc.add_MeshServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(0)


def dead_seed() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def hybrid(tmp_path: Path, **overrides: Any) -> MeshConfig:
    base = {"protocol": "hybrid", "sqlite_db_path": str(tmp_path / "mesh.db"), "state_dir": str(tmp_path / "state")}
    return load_config(None, env={}, overrides={**base, **overrides}, use_default_file=False)


# -- gRPC seeds ---------------------------------------------------------------------------------

async def test_a_live_seed_answers_the_handshake_with_its_name(serve):
    seed = Seed("hub1")
    address = await serve(seed)
    got = await probe_seed(address, GrpcConfig(), ME)
    assert got.outcome is SeedOutcome.ANSWERED and got.node_name == "hub1" and got.version == CURRENT
    hello, _ = seed.heard[0]
    assert (hello.protocol_version, hello.node_id, hello.node_name, hello.incarnation) == (CURRENT, ME.node_id,
                                                                                         "prober", 3)


async def test_hybrid_chooses_grpc_mesh_when_one_of_two_seeds_answers(serve, tmp_path):
    live = await serve(Seed("hub1"))
    dead = dead_seed()
    choice = await choose(hybrid(tmp_path, **{"grpc.seeds": [dead, live]}), ME)
    assert choice.protocol == "grpc_mesh"
    assert choice.reason == f"hybrid chose grpc_mesh: seed {live} (hub1) answered; 1 of 2 seeds up"


async def test_a_seed_speaking_another_version_does_not_count(serve, tmp_path):
    newer = await serve(Seed("future", version=CURRENT + 1))
    refusing = await serve(Seed("strict", version=CURRENT + 1, refuse_version=True))
    got = await probe_seed(newer, GrpcConfig(), ME)
    assert got.outcome is SeedOutcome.OTHER_VERSION and got.version == CURRENT + 1
    choice = await choose(hybrid(tmp_path, **{"grpc.seeds": [newer, refusing]}), ME)
    assert choice.protocol == "sqlite_local"
    assert f"seed {newer} (future) speaks mesh protocol {CURRENT + 1}, this node {CURRENT}" in choice.reason
    assert f"seed {refusing} speaks another mesh protocol, this node {CURRENT}" in choice.reason


async def test_the_api_key_travels_as_metadata(serve, tmp_path):
    address = await serve(Seed("locked", api_key="s3cret"))
    assert (await probe_seed(address, GrpcConfig(), ME, api_key="s3cret")).outcome is SeedOutcome.ANSWERED
    wrong = await probe_seed(address, GrpcConfig(), ME, api_key="nope")
    assert wrong.outcome is SeedOutcome.REFUSED and "UNAUTHENTICATED" in wrong.error
    choice = await choose(hybrid(tmp_path, **{"grpc.seeds": [address], "security.api_key": "s3cret"}), ME)
    assert choice.protocol == "grpc_mesh"


async def test_silent_seeds_are_probed_at_once_and_given_up_on_in_about_a_second(serve, tmp_path):
    slow = [await serve(Seed(f"slow{i}", delay=5)) for i in range(3)]
    started = time.monotonic()
    choice = await choose(hybrid(tmp_path, **{"grpc.seeds": slow}), ME)
    took = time.monotonic() - started
    assert choice.protocol == "sqlite_local"
    assert f"seeds {', '.join(slow)} did not answer (no answer within 1 s)" in choice.reason
    assert took < 2.0, took  # concurrently: not three seconds


async def test_a_dead_port_is_connection_refused_quickly():
    started = time.monotonic()
    got = await probe_seed(dead_seed(), GrpcConfig(), ME)
    assert got.outcome is SeedOutcome.SILENT and got.error == "connection refused"
    assert time.monotonic() - started < 1.5


# -- Redis --------------------------------------------------------------------------------------

async def test_a_live_redis_is_chosen_and_the_node_runs_on_it(redis_server, tmp_path):
    config = hybrid(tmp_path, **{"redis.url": redis_server.url, "redis.cluster": tmp_path.name,
                                 "grpc.seeds": [dead_seed()]})
    probe = await probe_redis(config.redis)
    assert probe.answered and probe.ms < 1000
    async with AgentMeshManager(config) as mesh:
        assert mesh.backend_name == "redis_distributed"
        assert mesh.backend_reason.startswith(f"hybrid chose redis_distributed: {redis_server.url} answered in ")
        text = render_status(await status_data(mesh))
    assert "  • Protocol: hybrid→redis_distributed" in text
    assert [line for line in text.splitlines() if "hybrid chose" in line] == [f"  • Backend: {mesh.backend_reason}"]


async def test_a_live_sentinel_set_or_cluster_is_chosen_and_the_node_runs_on_it(redis_sentinel, redis_cluster,
                                                                                  tmp_path):
    sentinel = hybrid(tmp_path / "s", **{"redis.sentinels": redis_sentinel.sentinel_addresses,
                                         "redis.service": redis_sentinel.service, "redis.cluster": "hybrid-s"})
    cluster = hybrid(tmp_path / "c", **{"redis.cluster_nodes": redis_cluster.node_addresses,
                                        "redis.cluster": "hybrid-c"})
    for config, shown in ((sentinel, f"sentinel {redis_sentinel.service} via "), (cluster, "cluster ")):
        probe = await probe_redis(config.redis)
        assert probe.answered and probe.url.startswith(shown), probe
        async with AgentMeshManager(config) as mesh:
            assert mesh.backend_name == "redis_distributed"
            assert mesh.backend_reason.startswith(f"hybrid chose redis_distributed: {shown}"), mesh.backend_reason


async def test_sentinels_that_do_not_answer_fall_back_to_sqlite_naming_them(tmp_path):
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    config = hybrid(tmp_path, **{"redis.sentinels": dead, "redis.service": "mymaster"})
    started = time.monotonic()
    async with AgentMeshManager(config) as mesh:
        assert mesh.backend_name == "sqlite_local"
        assert mesh.backend_reason.startswith(f"hybrid chose sqlite_local: sentinel mymaster via {','.join(dead)} "
                                              "did not answer"), mesh.backend_reason
    assert time.monotonic() - started < 10


async def test_a_dead_redis_and_no_seeds_falls_back_to_sqlite_naming_the_url(tmp_path):
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    config = hybrid(tmp_path, **{"redis.url": url})
    async with AgentMeshManager(config) as mesh:
        assert mesh.backend_name == "sqlite_local"
        assert mesh.backend_reason == (f"hybrid chose sqlite_local: redis://user:***@127.0.0.1:{url.split(':')[3]} "
                                       "did not answer (connection refused); no grpc.seeds configured")
    assert "hunter2" not in mesh.backend_reason


async def test_nothing_configured_runs_on_sqlite_and_says_why(tmp_path):
    async with AgentMeshManager(hybrid(tmp_path)) as mesh:
        assert mesh.backend_name == "sqlite_local"
        assert mesh.backend_reason == "hybrid chose sqlite_local: no redis.url or grpc.seeds configured"
        text = render_status(await status_data(mesh))
    assert "  • Protocol: hybrid→sqlite_local" in text
    assert "  • Backend: hybrid chose sqlite_local: no redis.url or grpc.seeds configured" in text


async def test_a_configured_protocol_is_not_probed(tmp_path):
    config = hybrid(tmp_path, protocol="sqlite_local", **{"redis.url": f"redis://127.0.0.1:{free_port()}/0"})
    backend, reason = await choose_backend(config, DEFAULT_LIMITS)
    assert (backend.name, reason) == ("sqlite_local", "sqlite_local as configured")
