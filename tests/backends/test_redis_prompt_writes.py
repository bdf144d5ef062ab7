"""Redis connections write each command in the caller's own task (``backends.redis.prompt``), with the same write
timeout and the same failures as redis-py's own method: a stalled write times out and drops the connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from mesh_core.backends.redis import RedisBackend
from mesh_core.backends.redis.prompt import PromptWrites, prompt
from mesh_core.config import RedisConfig
from mesh_testing.redis_server import RedisServer


async def test_the_mesh_writes_each_command_without_a_loop_pass(redis_server: RedisServer) -> None:
    medium = RedisBackend(RedisConfig(url=redis_server.url, cluster="prompt", socket_timeout_seconds=5))
    client = medium._connect()
    try:
        pool = client.connection_pool
        assert issubclass(pool.connection_class, PromptWrites)
        conn = await pool.get_connection()
        try:
            await conn.send_command("PING")  # connected and healthy: what follows is the write alone
            assert await conn.read_response() == b"PONG"
            passes = []
            asyncio.get_running_loop().call_soon(passes.append, 1)
            await conn.send_command("SET", "prompt:k", "v")
            # the write went out and the caller went on within the same pass (redis-py's wait_for took one more
            # for its task, and a second to resume the caller, on Python 3.11)
            assert passes == []
            assert await conn.read_response() == b"OK"
        finally:
            await pool.release(conn)
        assert await client.get("prompt:k") == b"v"
    finally:
        await client.aclose()


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that takes connections and never reads from them (small buffers: a large write stalls)."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()


async def test_a_stalled_write_times_out_and_drops_the_connection(silent_server: tuple[str, int]) -> None:
    host, port = silent_server
    connection = prompt(aioredis.Connection)(host=host, port=port, socket_timeout=0.3, socket_connect_timeout=1)
    await connection._connect()  # the socket alone: the silent server would never answer redis-py's handshake
    assert connection.is_connected
    started = asyncio.get_running_loop().time()
    with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
        await connection.send_packed_command(b"x" * (64 << 20), check_health=False)
    assert 0.25 <= asyncio.get_running_loop().time() - started < 5
    assert not connection.is_connected


def test_the_mixin_is_added_once_per_class() -> None:
    made = prompt(aioredis.Connection)
    assert prompt(aioredis.Connection) is made and prompt(made) is made
    assert issubclass(prompt(aioredis.SSLConnection), aioredis.SSLConnection)
