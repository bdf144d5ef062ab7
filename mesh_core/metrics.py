"""This node's Prometheus metrics: their names, and how each is read from the node (no I/O here).

One ``CollectorRegistry`` per node (several nodes share a test process, so never
the global default one). Per-task figures are observed when the worker records an
outcome (``mesh_tasks_total``, the two histograms); everything else already exists
in the node and is read at scrape time by ``NodeCollector``, so a gauge costs nothing
between scrapes. The mesh-wide task counts and the replicas' memory lag need the medium: the HTTP endpoint
(``mesh_core.metrics_server``) has ``gather`` read them first and hands them to ``render``.

Names follow Prometheus conventions: ``mesh_`` prefix, ``_total`` counters, ``_seconds`` units.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .model import NodeStatus, Task, TaskStatus

if TYPE_CHECKING:
    from .manager import AgentMeshManager
    from .node.backpressure import ReplicaLag

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "NodeCollector", "NodeMetrics", "Readings"]

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the text format: text/plain; version=...; charset=utf-8
# Handlers run from milliseconds (echo) to minutes (task_timeout_seconds defaults to 300).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                     300.0)
# Outcomes of one attempt as the worker records it: the final statuses, "retry" (moved on for another
# attempt), and "stale" (the record was refused by fencing: the task had moved on).
OUTCOMES = ("succeeded", "failed", "dead_letter", "cancelled", "retry", "stale")
OTHER_TYPE = "other"  # the task_type label of a task this node has no handler for


@dataclass(frozen=True)
class Readings:
    """What a scrape read from the medium (``NodeMetrics.gather``)."""

    task_counts: Mapping[str, int] | None
    lag: ReplicaLag | None


class NodeMetrics:
    """The registry of one node: the per-task instruments it observes and the collector of everything else."""

    def __init__(self, mesh: AgentMeshManager) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._mesh = mesh
        self._handlers = mesh.services.ctx.handlers
        self.tasks: Counter[tuple[str, str]] = Counter()  # (task type, outcome) -> attempts recorded here
        self.duration = Histogram("mesh_task_duration_seconds", "Handler run time of tasks executed on this node",
                                  ["task_type"], registry=self.registry, buckets=DURATION_BUCKETS)
        self.queue_wait = Histogram("mesh_task_queue_wait_seconds",
                                    "Time from submission to the start of the attempt executed on this node",
                                    ["task_type"], registry=self.registry, buckets=DURATION_BUCKETS)
        self.collector = NodeCollector(mesh, self)
        self.registry.register(self.collector)

    def observe(self, task: Task, outcome: str, seconds: float) -> None:
        """One attempt's outcome as the worker recorded it (``seconds``: how long its handler ran)."""
        # A type this node has no handler for (it failed here) is labelled "other": a label per such name
        # would let any submitter grow the series without bound.
        task_type = task.task_type if self._handlers.get(task.task_type) is not None else OTHER_TYPE
        self.tasks[(task_type, outcome)] += 1
        self.duration.labels(task_type).observe(max(0.0, seconds))
        if task.started_at is not None and task.submitted_at:
            self.queue_wait.labels(task_type).observe(max(0.0, task.started_at - task.submitted_at))

    async def gather(self) -> Readings:
        """What a scrape needs from the medium, read just before ``render``: the mesh-wide task counts and the
        replicas' lag behind this node's memory writes (each None when the medium does not answer)."""
        mesh = self._mesh
        task_counts: dict[str, int] | None
        try:
            task_counts = await mesh.task_counts()
        except Exception:  # the medium is away (or closing): left out; mesh_backend_up says so
            task_counts = None
        try:
            lag = await mesh.services.memory.backpressure.lag()
        except Exception:
            lag = None
        return Readings(task_counts, lag)

    def render(self, readings: Readings) -> bytes:
        """The exposition text, with what ``gather`` read just before."""
        self.collector.task_counts, self.collector.lag = readings.task_counts, readings.lag
        return generate_latest(self.registry)


class NodeCollector:
    """Reads the node's own state at scrape time (on the node's event loop, between its own steps)."""

    def __init__(self, mesh: AgentMeshManager, metrics: NodeMetrics) -> None:
        self.mesh = mesh
        self.metrics = metrics
        self.task_counts: Mapping[str, int] | None = None
        self.lag: ReplicaLag | None = None

    def collect(self) -> Iterable[Metric]:
        mesh = self.mesh
        info = GaugeMetricFamily("mesh_node_info", "This node (always 1)",
                                 labels=["node_id", "name", "node_type", "protocol", "role"])
        info.add_metric([mesh.node_id, mesh.name, mesh.config.node_type, mesh.backend_name, mesh.role.value], 1)
        yield info

        tasks = CounterMetricFamily("mesh_tasks", "Task attempts executed on this node, by type and outcome",
                                    labels=["task_type", "outcome"])
        for (task_type, outcome), n in sorted(self.metrics.tasks.items()):
            tasks.add_metric([task_type, outcome], n)
        yield tasks

        yield GaugeMetricFamily("mesh_tasks_running", "Tasks running on this node now",
                                value=len(mesh.running_tasks()))
        if self.task_counts is not None:
            queued = GaugeMetricFamily("mesh_tasks_in_mesh", "Tasks in the whole mesh, by status",
                                       labels=["status"])
            for status in TaskStatus:
                queued.add_metric([status.value], self.task_counts.get(status.value, 0))
            yield queued

        nodes = GaugeMetricFamily("mesh_nodes", "Worker nodes by status, as this node judges them",
                                  labels=["status"])
        seen = Counter(m.status.value for m in mesh.members())
        for node_status in NodeStatus:
            nodes.add_metric([node_status.value], seen.get(node_status.value, 0))
        yield nodes

        yield GaugeMetricFamily("mesh_memory_items", "Items in this node's memory replica", value=mesh.memory_count())
        yield GaugeMetricFamily("mesh_memory_conflicts_open", "Open conflicts in this node's replica",
                                value=len(mesh.conflicts()))
        if self.lag is not None:  # followed only with memory_sync.max_lag_items on (the default)
            yield GaugeMetricFamily("mesh_memory_sync_lag_items",
                                    "This node's memory writes the slowest active replica has not applied yet",
                                    value=self.lag.items)
            yield GaugeMetricFamily("mesh_memory_sync_lag_seconds",
                                    "Age of this node's oldest memory write some active replica has not applied",
                                    value=self.lag.oldest_seconds)
        yield GaugeMetricFamily("mesh_backend_up", "1 while the medium answers, 0 while it is unreachable",
                                value=1 if mesh.backend_healthy else 0)
        yield GaugeMetricFamily("mesh_node_degraded", "1 while this node is degraded (medium away, a loop down, "
                                                      "its clock off the mesh's)", value=0 if mesh.healthy else 1)

        problems = CounterMetricFamily("mesh_problems", "Problems this node counted, by kind "
                                                        "(unsigned, corrupt, quarantined, backend errors, ...)",
                                       labels=["kind"])
        for kind, n in sorted(mesh.counters.items()):
            problems.add_metric([kind], n)
        yield problems
        events = CounterMetricFamily("mesh_backend_events", "The medium's own counters, by kind: each refusal of what "
                                                            "a peer sent (mesh_problems counts a peer's first), what "
                                                            "it dropped, resent, took over, ...", labels=["kind"])
        for kind, n in sorted(mesh.backend_counters().items()):
            events.add_metric([kind], n)
        yield events

        restarts = CounterMetricFamily("mesh_loop_restarts", "Restarts of each supervised loop", labels=["loop"])
        up = GaugeMetricFamily("mesh_loop_up", "1 while the supervised loop runs", labels=["loop"])
        for loop in mesh.loops():
            restarts.add_metric([loop["name"]], loop["restarts"])
            up.add_metric([loop["name"]], 1 if loop["state"] == "running" else 0)
        yield restarts
        yield up
