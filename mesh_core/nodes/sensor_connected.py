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
import ipaddress
import json
import math
import operator
import os
import re
import shlex
import socket
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..errors import ConfigError
from ..events import Event
from ..handlers import HandlerSpec, NodePort, TaskContext, make_spec

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
READ_LIMIT = 64 * 1024
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_RULE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*"
                   r"(?:for\s+(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?)?\s*$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


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


# -- rules (pure) --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str
    threshold: float
    for_seconds: float = 0.0
    severity: str = "warning"

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def text(self) -> str:
        window = f" for {self.for_seconds:g}s" if self.for_seconds else ""
        return f"{self.metric} {self.op} {self.threshold:g}{window}"


def parse_rule(raw: Any) -> Rule:
    """``"cpu_percent > 90 for 10s"`` or ``{"metric", "op", "threshold", "for_seconds"?, "name"?, "severity"?}``."""
    if isinstance(raw, str):
        m = _RULE.match(raw)
        if not m:
            raise ConfigError(f"config: sensor rule {raw!r} is not understood "
                              "(allowed: 'METRIC OP NUMBER [for N s|m|h]', e.g. 'cpu_percent > 90 for 10s')")
        metric, op, threshold, window, unit = m.groups()
        seconds = float(window) * _UNITS[unit or "s"] if window else 0.0
        return Rule(raw.strip(), metric, op, float(threshold), seconds)
    if isinstance(raw, dict):
        try:
            op = str(raw.get("op", ">"))
            if op not in _OPS:
                raise ValueError(f"op {op!r} is not one of {', '.join(_OPS)}")
            rule = Rule("", str(raw["metric"]), op, float(raw["threshold"]), float(raw.get("for_seconds", 0.0)),
                        str(raw.get("severity", "warning")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"config: sensor rule {raw!r} is incomplete or wrong ({exc}); "
                              "it needs metric, threshold and optionally op, for_seconds, name, severity") from None
        if rule.for_seconds < 0 or not math.isfinite(rule.threshold):
            raise ConfigError(f"config: sensor rule {raw!r}: for_seconds must be >= 0 and threshold finite")
        return Rule(str(raw.get("name") or rule.text()), rule.metric, rule.op, rule.threshold, rule.for_seconds,
                    rule.severity)
    raise ConfigError(f"config: sensor rule {raw!r} must be a string or a mapping")


@dataclass
class RuleState:
    """Where one rule stands: since when it has held, and whether its alert is up."""

    since: float | None = None
    active: bool = False
    raised_at: float | None = None


def judge(rule: Rule, state: RuleState, value: float | None, now: float) -> str | None:
    """Advance ``state`` by one observation; returns ``"raise"``, ``"clear"`` or None. A missing value changes
    nothing (a source that failed once neither raises nor clears)."""
    if value is None:
        return None
    if rule.holds(value):
        if state.since is None:
            state.since = now
        if not state.active and now - state.since >= rule.for_seconds:
            state.active = True
            state.raised_at = now
            return "raise"
        return None
    state.since = None
    if state.active:
        state.active = False
        return "clear"
    return None


# -- sources ------------------------------------------------------------------------------------

@dataclass
class Source:
    name: str
    kind: str
    target: str | list[str]
    timeout: float = 2.0
    pattern: re.Pattern[str] | None = None
    offset: int | None = None  # file tail position, and which file (inode, mtime) it was in
    inode: int | None = None
    mtime_ns: int | None = None
    last_line: str | None = None


def parse_source(raw: Any) -> Source:
    if not isinstance(raw, dict) or not raw.get("name") or raw.get("kind") not in ("file", "command", "http"):
        raise ConfigError(f"config: sensor source {raw!r} needs a name and kind file, command or http")
    name, kind = str(raw["name"]), str(raw["kind"])
    if not re.fullmatch(r"[A-Za-z_][\w\-]*", name):
        raise ConfigError(f"config: sensor source name {name!r} must be a word (letters, digits, _ or -)")
    key = {"file": "path", "command": "command", "http": "url"}[kind]
    target = raw.get(key)
    if not target:
        raise ConfigError(f"config: sensor source {name!r} of kind {kind} needs {key}")
    if kind == "command" and isinstance(target, str):
        target = shlex.split(target)
    if kind == "http":
        url = urllib.parse.urlparse(str(target))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"config: sensor source {name!r}: url {target!r} must be http(s)://host/…")
    pattern = raw.get("pattern")
    try:
        compiled = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise ConfigError(f"config: sensor source {name!r}: pattern {pattern!r} is not a regular expression "
                          f"({exc})") from None
    timeout = float(raw.get("timeout", 2.0))
    if not 0 < timeout <= 60:
        raise ConfigError(f"config: sensor source {name!r}: timeout must be in (0, 60] seconds")
    return Source(name, kind, target if isinstance(target, list) else str(target), timeout, compiled)


def parse_reading(text: str, pattern: re.Pattern[str] | None = None) -> float | dict[str, float] | None:
    """A number from one reading: the pattern's first group, a JSON number or object of numbers, or the
    first number in the text."""
    text = text.strip()
    if not text:
        return None
    if pattern is not None:
        m = pattern.search(text)
        if not m:
            return None
        text = m.group(1) if m.groups() else m.group(0)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, (int, float)) and not isinstance(doc, bool):
        return float(doc)
    if isinstance(doc, dict):
        flat = {str(k): float(v) for k, v in _flatten(doc).items()}
        return flat or None
    m = _NUMBER.search(text)
    return float(m.group()) if m else None


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def _last_line(text: str) -> str | None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def tail_file(source: Source) -> str | None:
    """The file's newest line. Lines appended since the last read are tailed (complete lines only); a file
    rewritten in place (a new inode, or a change that is not an append) is read again from its end."""
    path = str(source.target)
    st = os.stat(path)
    appended = source.offset is not None and st.st_ino == source.inode and st.st_size > source.offset
    if appended:
        assert source.offset is not None
        start = max(source.offset, st.st_size - READ_LIMIT)
        with open(path, "rb") as f:
            f.seek(start)
            chunk = f.read(st.st_size - start)
        complete, newline, _ = chunk.rpartition(b"\n")
        if newline:
            source.offset = start + len(complete) + 1
            line = _last_line(complete.decode("utf-8", "replace"))
            if line is not None:
                source.last_line = line
    elif source.offset is None or st.st_ino != source.inode or st.st_mtime_ns != source.mtime_ns:
        start = max(0, st.st_size - READ_LIMIT)
        with open(path, "rb") as f:
            f.seek(start)
            chunk = f.read(st.st_size - start)
        source.offset = start + len(chunk)
        line = _last_line(chunk.decode("utf-8", "replace"))
        source.last_line = line if line is not None else source.last_line
    source.inode, source.mtime_ns = st.st_ino, st.st_mtime_ns
    return source.last_line


def _local_network(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not (addr.is_loopback or addr.is_private or addr.is_link_local):
            return False
    return bool(infos)


def fetch_http(source: Source) -> str:
    url = str(source.target)
    host = urllib.parse.urlparse(url).hostname or ""
    if not _local_network(host):
        raise PermissionError(f"{host} is not on the local network (loopback, private or link-local only)")
    request = urllib.request.Request(url, headers={"User-Agent": "mesh-sensor"})
    with urllib.request.urlopen(request, timeout=source.timeout) as response:  # noqa: S310 (scheme checked)
        return bytes(response.read(READ_LIMIT)).decode("utf-8", "replace")


async def run_command(source: Source) -> str:
    argv = list(source.target) if isinstance(source.target, list) else shlex.split(str(source.target))
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(source.timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise TimeoutError(f"command took over {source.timeout:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {err.decode('utf-8', 'replace').strip()[:200]}")
    return out[:READ_LIMIT].decode("utf-8", "replace")


async def read_source(source: Source) -> float | dict[str, float] | None:
    if source.kind == "file":
        line = await asyncio.to_thread(tail_file, source)
        return parse_reading(line or "", source.pattern)
    if source.kind == "command":
        return parse_reading(_last_line(await run_command(source)) or "", source.pattern)
    body = await asyncio.to_thread(fetch_http, source)
    return parse_reading(body if source.pattern or body.lstrip().startswith("{") else (_last_line(body) or ""),
                         source.pattern)


# -- machine sampling ------------------------------------------------------------------------------

@dataclass
class _Counters:
    at: float
    cpu: Any
    net: Any
    disk: Any


class MachineSampler:
    """psutil readings as one flat dict; rates from the difference with the previous reading."""

    def __init__(self, disk_paths: list[str], top: int, top_every: int) -> None:
        self.disk_paths = disk_paths
        self.top = top
        self.top_every = max(1, top_every)
        self._previous: _Counters | None = None
        self._count = 0
        self.top_processes: list[dict[str, Any]] = []

    def _counters(self) -> _Counters:
        net = disk = None
        with contextlib.suppress(Exception):
            net = psutil.net_io_counters()
        with contextlib.suppress(Exception):
            disk = psutil.disk_io_counters()
        return _Counters(time.monotonic(), psutil.cpu_times(), net, disk)

    def sample(self) -> dict[str, Any]:
        now = self._counters()
        out: dict[str, Any] = {}
        prev = self._previous
        if prev is not None:
            busy = sum(now.cpu) - now.cpu.idle - getattr(now.cpu, "iowait", 0.0)
            busy_before = sum(prev.cpu) - prev.cpu.idle - getattr(prev.cpu, "iowait", 0.0)
            total = sum(now.cpu) - sum(prev.cpu)
            out["cpu_percent"] = round(max(0.0, min(100.0, 100.0 * (busy - busy_before) / total)), 2) \
                if total > 0 else 0.0
            seconds = max(1e-6, now.at - prev.at)
            if now.net is not None and prev.net is not None:
                out["net_sent_bytes_per_s"] = round(max(0, now.net.bytes_sent - prev.net.bytes_sent) / seconds, 1)
                out["net_recv_bytes_per_s"] = round(max(0, now.net.bytes_recv - prev.net.bytes_recv) / seconds, 1)
            if now.disk is not None and prev.disk is not None:
                out["disk_read_bytes_per_s"] = round(max(0, now.disk.read_bytes - prev.disk.read_bytes) / seconds, 1)
                out["disk_write_bytes_per_s"] = round(max(0, now.disk.write_bytes - prev.disk.write_bytes) / seconds,
                                                      1)
        else:
            out["cpu_percent"] = psutil.cpu_percent(interval=0.05)
        self._previous = now
        vm = psutil.virtual_memory()
        out.update(memory_percent=vm.percent, memory_used_mb=round(vm.used / 2**20, 1),
                   memory_available_mb=round(vm.available / 2**20, 1))
        with contextlib.suppress(Exception):
            out["swap_percent"] = psutil.swap_memory().percent
        for path in self.disk_paths:
            with contextlib.suppress(OSError):
                usage = psutil.disk_usage(path)
                suffix = "" if path == "/" else "." + (path.strip("/").replace("/", "_") or "root")
                out[f"disk_percent{suffix}"] = usage.percent
        with contextlib.suppress(OSError, AttributeError):
            out["load_1"], out["load_5"], out["load_15"] = (round(x, 3) for x in os.getloadavg())
        temps = getattr(psutil, "sensors_temperatures", None)
        if temps is not None:
            with contextlib.suppress(Exception):
                readings = [t.current for entries in temps().values() for t in entries if t.current]
                if readings:
                    out["temperature_max_c"] = max(readings)
        battery = getattr(psutil, "sensors_battery", None)
        if battery is not None:
            with contextlib.suppress(Exception):
                b = battery()
                if b is not None:
                    out["battery_percent"] = b.percent
        if self.top and self._count % self.top_every == 0:
            self.top_processes = self._top_processes()
        self._count += 1
        return out

    def _top_processes(self) -> list[dict[str, Any]]:
        procs = []
        for p in psutil.process_iter(["pid", "name", "cpu_percent", "memory_percent"]):
            info = p.info
            procs.append({"pid": info["pid"], "name": info["name"], "cpu_percent": info["cpu_percent"] or 0.0,
                          "memory_percent": round(info["memory_percent"] or 0.0, 2)})
        procs.sort(key=lambda x: (-x["cpu_percent"], -x["memory_percent"]))
        return procs[:self.top]


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


def has_hardware_sensors() -> list[str]:
    """The hardware sensors psutil sees on this machine (temperatures, fans, battery)."""
    found = []
    for name in ("sensors_temperatures", "sensors_fans"):
        fn = getattr(psutil, name, None)
        if fn is not None:
            with contextlib.suppress(Exception):
                readings = fn()
                if readings:
                    found.append(f"{name.split('_')[1]}: {', '.join(sorted(readings))}")
    battery = getattr(psutil, "sensors_battery", None)
    if battery is not None:
        with contextlib.suppress(Exception):
            if battery() is not None:
                found.append("battery")
    return found
