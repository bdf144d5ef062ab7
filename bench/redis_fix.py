"""A bench-only variant of the engine's Redis backend, to size a suggested fix — never the headline figure.

``mesh_core.backends.redis.RedisBackend._connect`` builds a plain ``redis.asyncio`` client. Since
redis-py 6 its pool holds at most 100 connections and raises ``MaxConnectionsError`` ("Too many
connections") at once instead of waiting, so a submitter with more than ~100 concurrent calls sees
``BackendUnavailable``. ``BlockingRedisBackend`` only swaps in a ``BlockingConnectionPool`` (callers wait
for a free connection); everything else is the shipped backend. The bench runs it only when asked
(``--redis-client-pool blocking``) and labels those figures as such.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from mesh_core.backends.redis import RedisBackend

POOL_SIZE = 64


class BlockingRedisBackend(RedisBackend):
    def _connect(self) -> aioredis.Redis:
        common: dict[str, Any] = {"socket_timeout": self.cfg.socket_timeout_seconds,
                                  "socket_connect_timeout": self.cfg.socket_timeout_seconds,
                                  "health_check_interval": 15}
        pool = aioredis.BlockingConnectionPool.from_url(
            self._where(), max_connections=POOL_SIZE, timeout=self.cfg.socket_timeout_seconds,
            username=self.cfg.username, password=self.cfg.password, **common)
        return aioredis.Redis(connection_pool=pool)
