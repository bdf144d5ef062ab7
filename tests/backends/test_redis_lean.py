"""The Redis backend's own connections (``backends.redis.lean``): pipelined calls each answered with its own reply,
commands packed and errors raised as redis-py packs and raises them, a cancelled caller that leaves the replies in
step, a lost or silent connection that fails its callers and is opened again, credentials and database at connect,
scripts loaded again on a server that lost them; and the backend running its scripts and result reads on them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    DataError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mesh_core import AgentMeshManager
from mesh_core.backends.redis.lean import LeanLine, error_of, hash_reply, pack, stream_reply, usable
from mesh_core.config import RedisConfig
from mesh_core.model import TaskStatus
from mesh_testing.redis_server import RedisServer

from .conftest import Cluster


@pytest.fixture
async def line(redis_server: RedisServer) -> AsyncIterator[LeanLine]:
    made = LeanLine(RedisConfig(url=redis_server.url, socket_timeout_seconds=5), None)
    yield made
    made.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _key() -> str:
    return f"lean:{uuid.uuid4().hex}"


@pytest.mark.parametrize("args", [
    ("SET", "k", "v"), ("EVALSHA", b"\x00\xff", 1, -7, 0), ("X", 1.5, 1e-7, float("inf"), "ünï", b"", ""),
    ("HSET", bytearray(b"ab"), memoryview(b"cd"), 2**70)])
def test_commands_are_packed_as_redis_py_packs_them(args: tuple[Any, ...]) -> None:
    # a bytearray or memoryview goes as its bytes (redis-py before 8 refuses them: compared as bytes)
    as_bytes = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
    assert pack(args) == b"".join(aioredis.Connection().pack_command(*as_bytes))


def test_what_redis_py_refuses_to_send_is_refused_alike() -> None:
    for bad in (True, None, object()):
        with pytest.raises(DataError):
            aioredis.Connection().pack_command("SET", "k", bad)
        with pytest.raises(DataError):
            pack(("SET", "k", bad))


def test_error_replies_raise_what_redis_py_raises() -> None:
    assert isinstance(error_of(ResponseError("READONLY You can't write against a read only replica.")),
                      ReadOnlyError)
    assert isinstance(error_of(ResponseError("NOSCRIPT No matching script.")), NoScriptError)
    assert isinstance(error_of(ResponseError("WRONGPASS invalid username-password pair")), AuthenticationError)
    other = error_of(ResponseError("ERR unknown command 'NOPE'"))
    assert type(other) is ResponseError and "unknown command" in str(other)


def test_a_stream_read_comes_back_in_redis_py_shape() -> None:
    assert stream_reply(None) == []
    raw = [[b"s", [[b"1-0", [b"a", b"1", b"b", b"2"]], [b"2-0", None]]]]
    assert stream_reply(raw) == [[b"s", [(b"1-0", {b"a": b"1", b"b": b"2"}), (b"2-0", {})]]]


def test_only_one_server_without_extra_url_options_takes_this_path() -> None:
    assert usable(RedisConfig(url="redis://127.0.0.1:6379/2"))
    assert usable(RedisConfig(url="rediss://u:p@example.net:6380/0"))
    assert usable(RedisConfig(host="127.0.0.1", port=6380))
    assert not usable(RedisConfig(url="redis://127.0.0.1:6379/0?protocol=3"))
    assert not usable(RedisConfig(sentinels=("127.0.0.1:26379",), service="mesh"))
    assert not usable(RedisConfig(cluster_nodes=("127.0.0.1:7000",)))


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(line: LeanLine) -> None:
    replies = await asyncio.gather(*(line.call("ECHO", str(i)) for i in range(500)))
    assert replies == [str(i).encode() for i in range(500)]
    assert line.opened == 1


async def test_an_error_reply_fails_its_call_alone(line: LeanLine) -> None:
    key = _key()
    good, bad, after = await asyncio.gather(line.call("SET", key, "v"), line.call("NOPE"), line.call("GET", key),
                                            return_exceptions=True)
    assert good == b"OK" and after == b"v"
    assert type(bad) is ResponseError and "unknown command" in str(bad)
    assert line.opened == 1


async def test_a_batch_answers_each_command_in_its_place_errors_included(line: LeanLine) -> None:
    key, other = _key(), _key()
    await line.call("SET", other, "a string")
    got = await line.batch([("HSET", key, "f", "v"), ("HGETALL", other), ("HGETALL", key), ("NOPE",)])
    assert got[0] == 1 and hash_reply(got[2]) == {b"f": b"v"}
    assert type(got[1]) is ResponseError and str(got[1]).startswith("WRONGTYPE")
    assert type(got[3]) is ResponseError and "unknown command" in str(got[3])
    assert await line.call("PING") == b"PONG" and line.opened == 1  # still in step


async def test_a_transaction_runs_its_commands_and_raises_the_first_error(line: LeanLine) -> None:
    key, text = _key(), _key()
    assert await line.transaction([("INCR", key), ("INCRBY", key, 5)]) == [1, 6]
    await line.call("SET", text, "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await line.transaction([("INCR", key), ("HSET", text, "f", "v")])
    assert await line.call("GET", key) == b"7"  # MULTI runs the rest: as redis-py, the error is raised after
    with pytest.raises(ResponseError, match="unknown command"):  # refused while queued: nothing runs (EXECABORT)
        await line.transaction([("INCR", key), ("NOPE",)])
    assert await line.call("GET", key) == b"7" and line.opened == 1


async def test_a_caller_cancelled_mid_wait_leaves_the_replies_in_step(line: LeanLine) -> None:
    slow = asyncio.ensure_future(line.call("BLPOP", _key(), "0.3"))  # answers nil after 0.3 s
    await asyncio.sleep(0.05)
    slow.cancel()
    assert await line.call("ECHO", "after") == b"after"  # sent behind the BLPOP: its own reply, not the nil
    assert line.opened == 1


async def test_a_script_the_server_lost_is_loaded_again(line: LeanLine, raw: aioredis.Redis) -> None:
    body, key = "return redis.call('INCRBY', KEYS[1], ARGV[1])", _key()
    assert await line.script(body, [key], [2]) == 2
    await raw.script_flush()
    assert await line.script(body, [key], [3]) == 5


async def test_a_reply_that_does_not_come_times_out_and_the_next_call_opens_again(redis_server: RedisServer) -> None:
    line = LeanLine(RedisConfig(url=redis_server.url, socket_timeout_seconds=0.3), None)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = [asyncio.ensure_future(line.call("BLPOP", _key(), "3")), asyncio.ensure_future(line.call("PING"))]
        for call in waiting:  # the one behind the silent one hears it too
            with pytest.raises(RedisTimeoutError, match="no reply in 0.3 s"):
                await call
        assert 0.25 <= loop.time() - started < 2.5
        assert await line.call("PING") == b"PONG"
        assert line.opened == 2
        # a command that waits on the server (XREAD BLOCK) says so: its reply is due that much later
        assert await line.call("BLPOP", _key(), "0.6", blocks=0.6) is None
        assert line.opened == 2
    finally:
        line.close()


async def test_a_connection_the_server_drops_fails_its_callers_and_the_next_call_opens_again(
        line: LeanLine, raw: aioredis.Redis) -> None:
    own = await line.call("CLIENT", "ID")
    waiting = asyncio.ensure_future(line.call("BLPOP", _key(), "5"))
    await asyncio.sleep(0.05)
    assert await raw.execute_command("CLIENT", "KILL", "ID", own) == 1
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await line.call("PING") == b"PONG"
    assert line.opened == 2


async def test_a_server_that_is_not_there_is_a_connection_error() -> None:
    line = LeanLine(RedisConfig(url=f"redis://127.0.0.1:{_closed_port()}/0", socket_timeout_seconds=1), None)
    with pytest.raises(RedisConnectionError, match="Error connecting"):
        await line.call("PING")
    assert line.opened == 0


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_credentials_and_database_are_given_at_connect() -> None:
    with RedisServer(extra=("--requirepass", "s3cret", "--user", "alice", "on", ">pw", "~*", "&*", "+@all")) as server:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        line = LeanLine(RedisConfig(url=url), None)
        alice = LeanLine(RedisConfig(url=f"redis://alice:pw@127.0.0.1:{server.port}/0"), None)
        wrong = LeanLine(RedisConfig(url=f"redis://:nope@127.0.0.1:{server.port}/0"), None)
        check = aioredis.Redis.from_url(url)
        try:
            assert await line.call("SET", "k", "in-db-3") == b"OK"
            assert await check.get("k") == b"in-db-3"
            assert await alice.call("ACL", "WHOAMI") == b"alice"
            with pytest.raises(AuthenticationError):
                await wrong.call("PING")
        finally:
            for made in (line, alice, wrong):
                made.close()
            await check.aclose()


async def test_the_backend_runs_its_scripts_and_result_reads_on_its_own_connections(
        redis_server: RedisServer, tmp_path: Any) -> None:
    cluster = Cluster(tmp_path, "redis", redis_server.url)
    try:
        worker: AgentMeshManager = await cluster.node("worker")
        submitter: AgentMeshManager = await cluster.client()
        for i in range(5):
            task = await submitter.wait_task(await submitter.submit_task("echo", {"i": i}), 10)
            assert task.status is TaskStatus.SUCCEEDED and task.result == {"i": i}
        for node in (worker, submitter):
            medium = node.services.ctx.backend
            assert medium._line is not None and medium._reads is not None
            assert medium._line.opened == 1  # every script of the node (heartbeats, enqueue, claims …) on it
        assert submitter.services.ctx.backend._reads.opened == 1  # its result feed read there
    finally:
        await cluster.close()
