"""grpc_mesh on /metrics: every counter of the medium is served, not only the problems a node reports once."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc.wire import Peer

from ..backends.conftest import Cluster, eventually
from .conftest import backend_of


async def _async(value: Any) -> Any:
    return value


async def test_metrics_count_every_refusal_of_a_peer_not_only_its_first(cluster: Cluster) -> None:
    """A peer that sends bad input again and again is reported once (``mesh_problems_total``: a log line, an event)
    and counted each time: ``mesh_backend_events_total`` serves every counter of the medium, as ``status`` shows
    the refusals."""
    worker = await cluster.node("w", **{"metrics.port": 0})
    wb = backend_of(worker)
    stranger = Peer("e" * 32, "sender", "", 1, True)
    for n in range(3):
        wb._on_tasks(stranger, pb.TaskMessage(offers=[pb.TaskOffer(task_id=f"bad-{n}", attempt=1, task=b"\x00junk")]))
    await eventually(lambda: _async(wb.counters["refused_records"] == 3), timeout=5)
    assert worker.metrics_address is not None
    host, port = worker.metrics_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    body = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")[2].decode()
    writer.close()
    samples = {(s.name, s.labels.get("kind")): s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("mesh_backend_events_total", "refused_records")] == 3
    assert samples[("mesh_problems_total", "refused_records")] == 1
    assert worker.backend_info()["refused_records"] == 3
