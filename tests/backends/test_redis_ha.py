"""The contract suite on Redis's high-availability set-ups: a primary found through Sentinel, and Redis Cluster.

A subset of the contract suite (``KEPT``) runs here on both, with ``redis.wait_replicas: 1``: each
acknowledged write also waits for a replica. Failover under load is in ``tests/cluster/test_redis_failover.py``.
"""

from __future__ import annotations

import asyncio
import os
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

import mesh_testing
from mesh_core.commands import render_status, status_data
from mesh_core.config import RedisConfig, load_config
from mesh_core.errors import BackendUnavailable, ConfigError
from mesh_testing import RedisServer, eventually
from mesh_testing.redis_ha import RedisClusterSet

from . import test_contract
from .conftest import FAST

# A subset that takes every script and pipeline of the backend through the HA client at least once (the whole
# suite passes too, in some 70 s more than CI has): membership, each task move, fencing, feeds, memory log,
# quarantine, compaction, anti-entropy digests, signatures.
KEPT = [
    "test_nodes_join_and_see_each_other", "test_crashed_node_goes_suspect_then_dead",
    "test_restart_keeps_identity_with_higher_incarnation", "test_submit_and_wait_from_a_client",
    "test_full_mesh_answers_no_capacity", "test_failing_task_retries_then_dead_letters_with_every_error",
    "test_task_on_crashed_node_is_rerouted_with_new_attempt", "test_late_result_from_old_attempt_is_refused",
    "test_exactly_once_recording_under_crash", "test_submitting_the_same_task_id_twice_makes_one_task",
    "test_cancel_queued_at_once_and_running_cooperatively", "test_dead_letter_is_replayed",
    "test_queue_option_waits_in_pending_list_until_a_node_frees_up",
    "test_retention_deletes_old_finished_tasks_and_extra_dead_letters_never_unfinished",
    "test_a_large_result_reaches_its_waiter_whole", "test_parent_fans_out_fifty_children_across_three_nodes",
    "test_a_client_can_wait_for_a_task_another_client_submitted", "test_memory_write_is_recalled_on_other_nodes",
    "test_concurrent_writes_converge_latest_wins", "test_corrupt_memory_frame_is_quarantined_and_counted",
    "test_a_batch_of_writes_reaches_every_node_and_is_all_or_nothing",
    "test_compaction_drops_applied_log_entries_and_a_late_node_still_converges",
    "test_anti_entropy_repairs_a_dropped_and_a_corrupted_write",
    "test_api_key_keeps_out_unsigned_nodes_tasks_and_memory",
]
for _name in KEPT:
    # the function alone, without the contract suite's marks: a test it runs on some media only is parametrised
    # over its ``cluster`` there, and here ``cluster`` is this module's (one per HA mode)
    _test = getattr(test_contract, _name)
    globals()[_name] = types.FunctionType(_test.__code__, _test.__globals__, _name, _test.__defaults__,
                                          _test.__closure__)

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
    text = render_status(await status_data(a))
    line = next(line for line in text.splitlines() if line.startswith("  • Redis: "))
    assert line == f"  • Redis: {shown['mode']}, serving {shown['serving']}; acknowledged after 1 replica(s)", line


@pytest.mark.parametrize(("keys", "wrong"), [
    ({"sentinels": ["127.0.0.1:26379"], "cluster_nodes": ["127.0.0.1:7000"]}, "both set"),
    ({"sentinels": ["127.0.0.1:26379"], "url": "redis://127.0.0.1:6379/0"}, "redis.url are both set"),
    ({"sentinels": ["127.0.0.1:26379"], "service": " "}, "service is empty"),
    ({"cluster_nodes": ["127.0.0.1:7000"], "db": 2}, "only database 0"),
    ({"wait_replicas": 1, "wait_timeout_ms": 6000}, "not under"),
    ({"cluster_nodes": ["127.0.0.1:7000"], "tls_ca_file": "ca.pem"}, "not supported yet"),
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


async def test_a_write_no_replica_confirms_in_time_is_an_error_and_counted(tmp_path: Path,
                                                                            redis_server: RedisServer) -> None:
    """One server and no replica: with ``wait_replicas: 1`` nothing acknowledges, each refusal says why."""
    c = mesh_testing.Cluster(tmp_path, "redis", redis_server.url,
                             settings={**FAST, "redis": {"wait_replicas": 1, "wait_timeout_ms": 50}})
    try:
        await c.node("a")
        client = await c.client()
        with pytest.raises(BackendUnavailable, match=r"only 0 of redis.wait_replicas = 1 replicas confirmed"):
            await client.submit_task("echo", {"x": 1}, task_id="unconfirmed")
        with pytest.raises(BackendUnavailable, match="may not survive a failover"):
            await client.sync_memory_item("fact", {"x": 1}, key="unconfirmed")
        backend = client.services.ctx.backend
        assert backend.wait_timeouts == 2 and client.counters["redis_wait_timeouts"] == 2  # type: ignore[attr-defined]
        assert backend.describe()["wait_timeouts"] == 2
    finally:
        await c.close()


async def test_the_cluster_client_retries_a_failed_call_at_once() -> None:
    """redis-py 8.2 waits its retry's backoff between a cluster call's retries (8.1 ignored it): with its default
    backoff a call was held 3-4 s through a failover and then succeeded, so a node could see no outage at all (0 in
    ``redis_outages``, never degraded). The node's client waits for nothing, on whatever version is installed."""
    from redis.backoff import NoBackoff

    from mesh_core.backends.redis import RedisBackend
    from mesh_core.backends.redis.client import CLUSTER_RETRIES

    client = RedisBackend(RedisConfig(cluster_nodes=("127.0.0.1:7000",)))._connect()  # no connection made yet
    try:
        assert isinstance(client.retry._backoff, NoBackoff)
        assert client.retry.get_retries() == CLUSTER_RETRIES
    finally:
        await client.aclose()


async def test_a_driver_fault_mid_failover_reads_as_unreachable_and_ours_stays_a_bug() -> None:
    """redis-py's cluster client can use a connection another task has just closed (its writer is None). Up to
    redis-py 8.1 that ends in an AttributeError inside the driver, which the client reads as the server unreachable
    (``_raised_in_driver``); from 8.2 the driver raises its own ConnectionError, which is read so like any. The same
    error raised in the mesh's own code stays a bug."""
    from redis.asyncio.connection import Connection

    from mesh_core.backends.redis.client import DRIVER_FOLDER, _raised_in_driver
    try:
        await Connection()._send_packed_command([b"PING"])  # no writer: what the race ends in
    except AttributeError as exc:  # redis-py before 8.2
        assert _raised_in_driver(exc)
    except redis.exceptions.ConnectionError:  # redis-py 8.2 on: a RedisError, unreachable as any
        pass
    else:
        pytest.fail("a call on a connection with no writer raised nothing")
    # the rule itself, whatever the installed version does: the innermost frame in the driver's folder, or not
    with pytest.raises(AttributeError) as in_driver:
        exec(compile("None.writelines([])", os.path.join(DRIVER_FOLDER, "asyncio", "connection.py"), "exec"))
    assert _raised_in_driver(in_driver.value)
    with pytest.raises(AttributeError) as in_ours:
        None.writelines([])  # type: ignore[attr-defined]
    assert not _raised_in_driver(in_ours.value)


async def test_the_cluster_client_reading_its_map_again_leaves_the_wake_up_subscription_alone(
        tmp_path: Path, redis_cluster: RedisClusterSet) -> None:
    """redis-py's cluster client closes every connection of its nodes when it reads the slot map again, as it does
    after a CLUSTERDOWN, a slot not covered or a run of MOVED (all seen during a failover). The node's wake-up
    subscription is not one of them: a wake-up sent right after each re-read reaches the node, and nothing had to
    subscribe again. (It was a connection of those nodes: every re-read closed it, the wake-ups sent until it
    subscribed again were lost, and one closed mid-command ended the listener for good, which left the node
    without wake-ups after a failover.)"""
    c = mesh_testing.Cluster(tmp_path, "redis",
                             settings={**FAST, "redis": {"cluster_nodes": redis_cluster.node_addresses[:2]}})
    try:
        a = await c.node("a")
        backend: Any = a.services.ctx.backend
        heard: list[str] = []
        backend.on_signal(lambda topic: (heard.append(topic), a.services.ctx.on_signal(topic)))
        channel = f"{backend.prefix}wake:{a.node_id}"
        with redis.RedisCluster(host="127.0.0.1", port=redis_cluster.primary_for(backend.prefix).port) as r:
            await eventually(lambda: r.publish(channel, "ready") and "ready" in heard, 10)
            sent = [f"after-re-read-{i}" for i in range(20)]
            for wake in sent:
                await backend._client.aclose()  # what redis-py does itself on CLUSTERDOWN: every connection closed
                await backend.snapshot()  # a call: the client reads its map again
                await asyncio.to_thread(r.publish, channel, wake)
                await asyncio.sleep(0.05)
            await eventually(lambda: set(sent) <= set(heard), 5)
        assert backend.reconnects == 0
    finally:
        await c.close()
