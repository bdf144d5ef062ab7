"""The contract suite on Redis's high-availability set-ups: a primary found through Sentinel, and Redis Cluster.

Every contract test runs here on both (save the long memory-bound soak, which measures the node, not the
medium), with ``redis.wait_replicas: 1``: each acknowledged write also waits for a replica. Failover under load
is in ``tests/cluster/test_redis_failover.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import mesh_testing
from mesh_core.config import RedisConfig, load_config
from mesh_core.errors import ConfigError

from . import test_contract
from .conftest import FAST

SKIPPED = {"test_refusals_keep_memory_bounded"}  # 18 s of memory measuring that says nothing of the medium
for _name in dir(test_contract):
    if _name.startswith("test_") and _name not in SKIPPED:
        globals()[_name] = getattr(test_contract, _name)

HA_MODES = ["sentinel", "cluster"]


def ha_settings(request: pytest.FixtureRequest, mode: str) -> dict[str, Any]:
    """The ``redis:`` settings that put a mesh on the session's Sentinel set or Redis Cluster, WAIT 1 on."""
    if mode == "sentinel":
        ha = request.getfixturevalue("redis_sentinel")
        return {"sentinels": ha.sentinel_addresses, "service": ha.service, "wait_replicas": 1}
    rc = request.getfixturevalue("redis_cluster")
    return {"cluster_nodes": rc.node_addresses[:2], "wait_replicas": 1}


@pytest.fixture(params=HA_MODES)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[mesh_testing.Cluster]:
    c = mesh_testing.Cluster(tmp_path, "redis", settings={**FAST, "redis": ha_settings(request, request.param)})
    try:
        yield c
    finally:
        await c.close()


async def test_status_shows_the_mode_and_the_server_in_use(cluster: mesh_testing.Cluster) -> None:
    a = await cluster.node("a")
    shown = a.services.ctx.backend.describe()
    assert shown["mode"] in HA_MODES and shown["outages"] == 0 and shown["wait_timeouts"] == 0
    assert shown["serving"].startswith("127.0.0.1:"), shown


@pytest.mark.parametrize(("keys", "wrong"), [
    ({"sentinels": ["127.0.0.1:26379"], "cluster_nodes": ["127.0.0.1:7000"]}, "both set"),
    ({"sentinels": ["127.0.0.1:26379"], "url": "redis://127.0.0.1:6379/0"}, "redis.url are both set"),
    ({"sentinels": ["127.0.0.1:26379"], "service": " "}, "service is empty"),
    ({"cluster_nodes": ["127.0.0.1:7000"], "db": 2}, "only database 0"),
    ({"wait_replicas": 1, "wait_timeout_ms": 6000}, "not under"),
])
def test_bad_high_availability_settings_are_refused(keys: dict[str, Any], wrong: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in keys.items()})
    assert wrong in (str(caught.value) + (caught.value.hint or ""))


def test_high_availability_keys_come_from_the_environment() -> None:
    env = {"MESH_PROTOCOL": "redis_distributed", "MESH_REDIS_SENTINELS": "127.0.0.1:26379, [::1]:26380",
           "MESH_REDIS_SERVICE": "orders", "MESH_REDIS_WAIT_REPLICAS": "1", "MESH_REDIS_WAIT_TIMEOUT_MS": "250"}
    redis = load_config(None, env=env, use_default_file=False).redis
    assert (redis.sentinels, redis.service, redis.mode) == (("127.0.0.1:26379", "[::1]:26380"), "orders", "sentinel")
    assert (redis.wait_replicas, redis.wait_timeout_ms) == (1, 250)
    with pytest.raises(ConfigError, match=r"redis\.cluster_nodes\[1\]"):
        load_config(None, env={"MESH_REDIS_CLUSTER_NODES": "127.0.0.1:7000,nohost"}, use_default_file=False)
