"""What the sensor samples: configured sources (a file it tails, a command it runs, an HTTP URL on the local
network) and the machine itself through psutil. Parsing a source's configuration and a reading's text is pure;
the readers and ``MachineSampler`` do the I/O."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import re
import shlex
import socket
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import psutil

from ..errors import ConfigError

READ_LIMIT = 64 * 1024
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


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
