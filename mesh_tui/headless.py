"""``mesh-tui --no-ui``: one node, events as log lines, ``/mesh_*`` commands on standard input.

Never imports textual. SIGTERM or SIGINT leaves the mesh gracefully (running
tasks get the grace period, then are handed back) and exits 0. Ctrl-Z (SIGTSTP)
stops the process once it holds nothing the other nodes wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from mesh_core.addresses import join_host_port
from mesh_core.commands import run_command
from mesh_core.config import MeshConfig
from mesh_core.errors import MeshError
from mesh_core.events import Event
from mesh_core.heap import settle_after_start
from mesh_core.manager import AgentMeshManager
from mesh_core.model import NodeRole, short_id
from mesh_core.supervision import one_line

_HEX_ID = re.compile(r"[0-9a-f]{32}")  # node ids show their first 12 characters, task ids their short_id
# What json.dumps(data, default=str, separators=(",", ":")) writes, without building an encoder per line.
_JSON_LINE = json.JSONEncoder(default=str, separators=(",", ":"))


def _stamp(at: float) -> str:
    # time.strftime on the whole second plus the milliseconds: a worker prints two lines per task.
    seconds = int(at)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{int((at - seconds) * 1000):03d}Z"


def format_event(event: Event, fmt: str) -> str:
    data = event.to_dict()
    if fmt == "json":
        return _JSON_LINE.encode(data)
    at = data.pop("at")
    kind = data.pop("event")
    fields = " ".join(f"{k}={_short(v, k == 'task_id')}" for k, v in data.items() if v not in (None, "", ()))
    return f"{_stamp(at)} {kind:<18} {fields}"


def _short(value: Any, task: bool = False) -> str:
    if isinstance(value, str) and len(value) == 32 and _HEX_ID.fullmatch(value):
        return short_id(value) if task else value[:12]
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v, task) for v in value)
    text = str(value)
    return json.dumps(text) if " " in text else text


class Output:
    """Line-oriented output shared by the event printer and the command replies."""

    def __init__(self, fmt: str, stream: TextIO = sys.stdout) -> None:
        self.fmt = fmt
        self.stream = stream
        self._flush_scheduled = False

    def line(self, text: str) -> None:
        self.lines([text])

    def lines(self, texts: list[str]) -> None:
        try:
            self.stream.write("\n".join(texts) + "\n")
        except (BrokenPipeError, ValueError):
            return  # nobody is reading any more; the node keeps running
        # One flush per event-loop pass, not per line: many events arrive together under load.
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self._flush)
                self._flush_scheduled = True
            except RuntimeError:
                self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass

    def reply(self, command: str, text: str, data: Any, ok: bool) -> None:
        if self.fmt == "json":
            self.line(json.dumps({"command": command, "ok": ok, "data": data, "text": text}, default=str))
        else:
            self.line(text)


def _read_stdin(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
    except (OSError, ValueError, RuntimeError):
        pass
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(queue.put_nowait, None)


async def serve(config: MeshConfig, *, observe: bool = False) -> int:
    """Run one node headless until SIGTERM or SIGINT; ``observe``: as a client that executes nothing and
    prints the whole mesh's events (tasks anywhere included)."""
    out = Output(config.log_format)
    logging.getLogger("mesh").setLevel(logging.ERROR)  # problems are printed as events instead
    mesh = AgentMeshManager(config, role=NodeRole.CLIENT if observe else NodeRole.WORKER)
    loop = asyncio.get_running_loop()
    stop = _stop_on_signals(loop)
    _stop_process_at_rest_on_ctrl_z(loop, mesh)
    printer = loop.create_task(_print_events(mesh, out))
    try:
        await mesh.start()
    except MeshError as exc:
        printer.cancel()
        print(f"mesh-tui: {exc}", file=sys.stderr)
        return exc.exit_code
    if observe:
        mesh.watch_tasks()
    settle_after_start()
    medium = mesh.backend_info()
    where = str(medium.get("path") or medium.get("url", ""))
    out.line(format_event(_Started(name=mesh.name, node_id=mesh.node_id, node_type=config.node_type,
                                   protocol=mesh.backend_name, where=where,
                                   incarnation=mesh.incarnation,
                                   why=mesh.backend_reason if config.protocol == "hybrid" else "",
                                   role="observer" if observe else "", metrics=_metrics_url(mesh)),
                          config.log_format))
    commands: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_read_stdin, args=(loop, commands), daemon=True, name="mesh-stdin").start()
    reader = loop.create_task(_run_commands(mesh, commands, out))
    await stop.wait()
    reader.cancel()
    try:
        await mesh.stop()
    finally:
        await asyncio.sleep(0)
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
    out.line(format_event(_Stopped(name=mesh.name, node_id=mesh.node_id), config.log_format))
    return 0


def _metrics_url(mesh: AgentMeshManager) -> str:
    address = mesh.metrics_address
    return f"http://{join_host_port(*address)}/metrics" if address else ""


async def stream_events(config: MeshConfig, *, follow: bool, fmt: str, settle: float) -> int:
    """``mesh-tui events``: join as a client that executes nothing, print each event it sees as a line (the
    headless formatter), for ``settle`` seconds or, with ``follow``, until SIGINT or SIGTERM; exit 0."""
    out = Output(fmt)
    logging.getLogger("mesh").setLevel(logging.ERROR)
    mesh = AgentMeshManager(config.replace(node_name=config.node_name or "events"), role=NodeRole.CLIENT)
    loop = asyncio.get_running_loop()
    stop = _stop_on_signals(loop)
    printer = loop.create_task(_print_events(mesh, out))
    try:
        await mesh.start()
    except BaseException:
        printer.cancel()
        raise
    mesh.watch_tasks()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), None if follow else settle)
    try:
        await mesh.stop()
    finally:
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(printer, 2.0)  # the bus closed with the node: what it queued is printed
    return 0


def _stop_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: how a headless process is asked to leave."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _stop_process_at_rest_on_ctrl_z(loop: asyncio.AbstractEventLoop, mesh: AgentMeshManager) -> None:
    """Ctrl-Z (SIGTSTP) stops the node as it would by default, but only once it holds nothing the other nodes
    wait for (``AgentMeshManager.stop_process``); ``fg`` or SIGCONT resumes it."""
    stopping: set[asyncio.Task[None]] = set()

    def ctrl_z() -> None:
        if not stopping:  # a second Ctrl-Z before the first took effect is the same request
            task = loop.create_task(mesh.stop_process())
            stopping.add(task)
            task.add_done_callback(stopping.discard)
    loop.add_signal_handler(signal.SIGTSTP, ctrl_z)


async def _print_events(mesh: AgentMeshManager, out: Output) -> None:
    # A busy worker publishes two events per task: format a burst and write it in one go.
    async for batch in mesh.subscribe_batches(routine=mesh.config.log_level == "info"):
        out.lines([format_event(event, out.fmt) for event in batch])


async def _run_commands(mesh: AgentMeshManager, queue: asyncio.Queue[str | None], out: Output) -> None:
    while True:
        line = await queue.get()
        if line is None:
            return  # stdin closed: keep running headless without commands
        line = line.strip()
        if not line:
            continue
        try:
            result = await run_command(mesh, line)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the node is stopping: the reader itself was cancelled
            _failed(mesh, out, line, exc)  # only something the command awaited was cancelled
            continue
        except Exception as exc:  # one bad command (or one bad record it read) never ends the reader
            _failed(mesh, out, line, exc)
            continue
        out.reply(line, result.text, result.data, result.ok)


def _failed(mesh: AgentMeshManager, out: Output, line: str, exc: BaseException) -> None:
    mesh.counters["command_errors"] += 1
    error = one_line(exc)
    print(f"mesh-tui: command {line!r} failed: {error}", file=sys.stderr, flush=True)
    if out.fmt == "json":  # a script pairing each command with its reply still gets one
        out.reply(line, f"error: {error}", None, False)


# Lifecycle lines use the same format as engine events.

@dataclass(frozen=True)
class _Started(Event):
    name: str
    node_id: str
    node_type: str
    protocol: str
    where: str
    incarnation: int
    why: str = ""  # hybrid: which medium it chose and why
    role: str = ""  # "observer" for --observe (a worker says nothing)
    metrics: str = ""  # the /metrics URL when metrics are on

    @property
    def kind(self) -> str:
        return "NodeStarted"


@dataclass(frozen=True)
class _Stopped(Event):
    name: str
    node_id: str

    @property
    def kind(self) -> str:
        return "NodeStopped"
