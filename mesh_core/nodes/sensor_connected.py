"""The sensor node: samples the machine and configured sources, keeps a bounded history, raises alerts.

Every ``sample_interval_seconds`` it reads psutil (CPU, memory, swap, disk,
network and disk I/O rates, load average, temperatures where the machine has
them, and every few samples the top processes) and each configured source —
a file it tails, a command it runs, an HTTP URL on the local network — into
one flat sample kept in a ring buffer of ``history_size``. Threshold rules
(``"cpu_percent > 90 for 10s"``) are judged on every sample: a rule that holds
for its whole window raises an ``AlertRaised`` event and writes the alert into
shared memory (type ``alert``, key ``alert:<node name>:<rule name>``); when the
rule stops holding, ``AlertCleared`` follows and the same key is rewritten with
``active: false``. Configured under ``node_configs.sensor_connected``::

    sample_interval_seconds: 1.0
    history_size: 600
    rules: ["cpu_percent > 90 for 10s", {"name": "hot", "metric": "room.temp", "op": ">", "threshold": 30}]
    sources:
      - {name: room, kind: file, path: /var/run/room.json}
      - {name: queue_depth, kind: command, command: "redis-cli llen jobs", timeout: 2}
      - {name: ups, kind: http, url: "http://192.168.1.20/status.json"}
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..events import Event
from ..handlers import HandlerSpec, NodePort, TaskContext, make_spec
from .sensor_rules import Rule, RuleState, judge, parse_rule
from .sensor_sources import MachineSampler, has_hardware_sensors, parse_reading, parse_source, read_source, tail_file

# Rules and sources live in their own modules; the names callers import from here stay importable.
__all__ = ["CAPABILITIES", "DEFAULTS", "AlertCleared", "AlertRaised", "Rule", "RuleState", "SensorNode",
           "has_hardware_sensors", "judge", "parse_reading", "parse_rule", "parse_source", "tail_file"]

CAPABILITIES = frozenset({"monitoring", "metrics", "alerts"})
DEFAULTS: dict[str, Any] = {
    "sample_interval_seconds": 1.0,
    "history_size": 600,
    "top_processes": 5,
    "top_processes_every": 5,  # samples between two process scans (a scan reads every /proc entry)
    "disk_paths": ["/"],
    "rules": [],
    "sources": [],
    "alert_memory_type": "alert",
    "alert_priority": 9,
}


# -- events ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertRaised(Event):
    rule: str
    metric: str
    value: float
    threshold: float
    key: str
    node_id: str
    severity: str = "warning"


@dataclass(frozen=True)
class AlertCleared(Event):
    rule: str
    metric: str
    value: float
    threshold: float
    key: str
    node_id: str
    active_seconds: float = 0.0


# -- the node ------------------------------------------------------------------------------------

@dataclass
class _Alert:
    rule: Rule
    state: RuleState = field(default_factory=RuleState)
    record: dict[str, Any] | None = None


class SensorNode:
    """Sampling loop, ring buffer, rules and alerts of one sensor node."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = {**DEFAULTS, **(settings or {})}
        try:
            self.interval = float(self.settings["sample_interval_seconds"])
            size = int(self.settings["history_size"])
        except (TypeError, ValueError):
            raise ConfigError("config: node_configs.sensor_connected: sample_interval_seconds and history_size "
                              "must be numbers") from None
        if not 0.01 <= self.interval <= 3600 or not 1 <= size <= 1_000_000:
            raise ConfigError("config: node_configs.sensor_connected: sample_interval_seconds must be in "
                              "[0.01, 3600] and history_size in [1, 1000000]")
        rules = self.settings["rules"] or []
        sources = self.settings["sources"] or []
        if not isinstance(rules, list) or not isinstance(sources, list):
            raise ConfigError("config: node_configs.sensor_connected: rules and sources must be lists")
        self.rules = [_Alert(parse_rule(r)) for r in rules]
        names = [a.rule.name for a in self.rules]
        if len(set(names)) != len(names):
            raise ConfigError("config: node_configs.sensor_connected: two rules share a name; name them apart")
        self.sources = [parse_source(s) for s in sources]
        if len({s.name for s in self.sources}) != len(self.sources):
            raise ConfigError("config: node_configs.sensor_connected: two sources share a name")
        paths = self.settings["disk_paths"]
        self.machine = MachineSampler(list(paths) if isinstance(paths, list) else [str(paths)],
                                      int(self.settings["top_processes"]), int(self.settings["top_processes_every"]))
        self.history: deque[dict[str, Any]] = deque(maxlen=size)
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=200)
        self.source_errors: dict[str, str] = {}
        self.samples_taken = 0
        self.sync_errors = 0
        self._node: NodePort | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------
    async def on_start(self, node: NodePort) -> None:
        """Start sampling (idempotent); the manager calls this once the node has joined."""
        self._node = node
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="sensor-sampler")

    async def on_stop(self, node: NodePort) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad sample never stops the sensor
                self.source_errors["sampler"] = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    # -- sampling and rules -------------------------------------------------------------------------
    async def sample_once(self) -> dict[str, Any]:
        async with self._lock:
            sample: dict[str, Any] = {"t": time.time()}
            sample.update(await asyncio.to_thread(self.machine.sample))
            readings = await asyncio.gather(*(read_source(s) for s in self.sources), return_exceptions=True)
            for source, reading in zip(self.sources, readings, strict=True):
                if isinstance(reading, BaseException):
                    self.source_errors[source.name] = f"{type(reading).__name__}: {reading}"
                    continue
                self.source_errors.pop(source.name, None)
                if isinstance(reading, dict):
                    sample.update({f"{source.name}.{k}": v for k, v in reading.items()})
                elif reading is not None:
                    sample[source.name] = reading
            self.history.append(sample)
            self.samples_taken += 1
            await self._judge(sample, time.monotonic())
            return sample

    async def _judge(self, sample: dict[str, Any], now: float) -> None:
        for alert in self.rules:
            value = sample.get(alert.rule.metric)
            value = float(value) if isinstance(value, (int, float)) else None
            change = judge(alert.rule, alert.state, value, now)
            if change == "raise":
                assert value is not None
                await self._raise(alert, value, sample["t"])
            elif change == "clear":
                assert value is not None
                await self._clear(alert, value, sample["t"])

    def _key(self, rule: Rule) -> str:
        name = (self._node.name if self._node else "") or "sensor"
        slug = re.sub(r"[^\w.\-]+", "_", rule.name).strip("_")
        return f"alert:{name}:{slug}"

    async def _raise(self, alert: _Alert, value: float, at: float) -> None:
        rule = alert.rule
        key = self._key(rule)
        alert.record = {"key": key, "rule": rule.name, "condition": rule.text(), "metric": rule.metric, "op": rule.op,
                        "threshold": rule.threshold, "for_seconds": rule.for_seconds, "severity": rule.severity,
                        "value": value, "active": True, "raised_at": at, "cleared_at": None,
                        "node_id": self._node.node_id if self._node else "",
                        "node_name": self._node.name if self._node else ""}
        self.recent_alerts.append(dict(alert.record))
        self._publish(AlertRaised(rule=rule.name, metric=rule.metric, value=value, threshold=rule.threshold, key=key,
                                  node_id=alert.record["node_id"], severity=rule.severity))
        await self._share(alert.record)

    async def _clear(self, alert: _Alert, value: float, at: float) -> None:
        record = dict(alert.record or {})
        record.update(active=False, cleared_at=at, recovered_value=value)
        alert.record = record
        self.recent_alerts.append(dict(record))
        raised = record.get("raised_at") or at
        self._publish(AlertCleared(rule=alert.rule.name, metric=alert.rule.metric, value=value,
                                   threshold=alert.rule.threshold, key=record.get("key", ""),
                                   node_id=record.get("node_id", ""), active_seconds=round(at - raised, 3)))
        await self._share(record)

    def _publish(self, event: Event) -> None:
        if self._node is not None:
            self._node.publish(event)

    async def _share(self, record: dict[str, Any]) -> None:
        if self._node is None:
            return
        try:
            await self._node.sync_memory_item(memory_type=str(self.settings["alert_memory_type"]),
                                              memory_data=record, priority=int(self.settings["alert_priority"]),
                                              key=record["key"])
        except Exception as exc:
            self.sync_errors += 1
            self.source_errors["alert_sync"] = f"{type(exc).__name__}: {exc}"

    # -- views ------------------------------------------------------------------------------------
    def active_alerts(self) -> list[dict[str, Any]]:
        return [dict(a.record) for a in self.rules if a.record and a.record.get("active")]

    def metrics(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {"sensor": {"samples": self.samples_taken, "history": len(self.history),
                           "active_alerts": len(self.active_alerts()), "source_errors": len(self.source_errors),
                           "last": {k: last[k] for k in ("cpu_percent", "memory_percent") if k in last}}}

    async def _ensure(self, ctx: TaskContext) -> None:
        # Without the manager's on_start hook, the first task starts the sampler.
        if self._loop_task is None:
            await self.on_start(ctx.node)

    async def handle_snapshot(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """The newest sample (a fresh one with ``{"fresh": true}`` or when none exists yet)."""
        await self._ensure(ctx)
        fresh = isinstance(payload, dict) and payload.get("fresh")
        sample = await self.sample_once() if fresh or not self.history else self.history[-1]
        return {"sample": sample, "top_processes": self.machine.top_processes, "active_alerts": self.active_alerts(),
                "source_errors": dict(self.source_errors), "interval_s": self.interval}

    async def handle_history(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """Samples from the ring buffer: ``{"metric"?, "seconds"?, "limit"? = 100}``, oldest first."""
        await self._ensure(ctx)
        options = payload if isinstance(payload, dict) else {}
        limit = int(options.get("limit", 100))
        if limit < 1:
            raise ValueError("metrics_history: limit must be at least 1")
        samples = list(self.history)
        if options.get("seconds") is not None:
            since = time.time() - float(options["seconds"])
            samples = [s for s in samples if s["t"] >= since]
        samples = samples[-limit:]
        metric = options.get("metric")
        if metric:
            points = [[s["t"], s[metric]] for s in samples if metric in s]
            values = [p[1] for p in points]
            summary = {"min": min(values), "max": max(values), "mean": sum(values) / len(values)} if values else {}
            return {"metric": metric, "points": points, "count": len(points), **summary}
        return {"samples": samples, "count": len(samples), "capacity": self.history.maxlen}

    async def handle_alerts(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """Active alerts, the most recent raises and clears, and the rules being judged."""
        await self._ensure(ctx)
        return {"active": self.active_alerts(), "recent": list(self.recent_alerts)[-50:],
                "rules": [{"name": a.rule.name, "condition": a.rule.text(), "holding_since": a.state.since,
                           "active": a.state.active} for a in self.rules]}

    def handlers(self) -> list[HandlerSpec]:
        return [make_spec("metrics_snapshot", self.handle_snapshot, {"monitoring", "metrics"}),
                make_spec("metrics_history", self.handle_history, {"monitoring", "metrics"}),
                make_spec("alerts", self.handle_alerts, {"monitoring", "alerts"})]
