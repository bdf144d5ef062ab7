"""One ``mesh-tui --no-ui`` process, and a reader of the JSON-lines log it writes.

A node's stdout (JSON log lines and command replies) and stderr go to files,
read on demand: nothing in the harness process spends CPU on a busy node's
log unless asked, and the files stay behind for a look after a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

POLL_SECONDS = 0.02  # how often a waiter looks at the log file again, at most
FIRST_LOOK_SECONDS = 0.001  # its first look again: a command's reply takes a few ms (then twice as long each time)


def _pauses() -> Iterator[float]:
    """A waiter's sleeps between two looks at the log: ``FIRST_LOOK_SECONDS``, then twice as long each time, up to
    ``POLL_SECONDS``."""
    pause = FIRST_LOOK_SECONDS
    while True:
        yield pause
        pause = min(2 * pause, POLL_SECONDS)


def clean_env() -> dict[str, str]:
    """The environment for node processes: no MESH_*/MERNSTA_* settings leak in; output unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "MERNSTA_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cpu_seconds(ps: psutil.Process | None) -> float:
    """CPU (user + system) a process has used so far; 0 when it is unknown or gone."""
    if ps is None:
        return 0.0
    try:
        t = ps.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


class JsonLog:
    """Incremental reader of a JSON-lines file: each ``poll()`` parses only what was appended since the last.

    ``only``: keep only lines holding these bytes (checked before parsing, cheap on
    a busy log); ``keep=False``: hand new lines back from ``poll()`` without storing
    them in ``lines``. Lines that are not JSON objects are counted in ``unparsable``.
    """

    def __init__(self, path: str | Path, only: bytes | None = None, keep: bool = True) -> None:
        self.path = Path(path)
        self.only = only
        self.keep = keep
        self.lines: list[dict[str, Any]] = []
        self.read = 0
        self.unparsable = 0
        self._offset = 0
        self._rest = b""

    def poll(self) -> list[dict[str, Any]]:
        """The complete lines appended since the last poll, parsed."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        if not data:
            return []
        self._offset += len(data)
        *complete, self._rest = (self._rest + data).split(b"\n")
        new: list[dict[str, Any]] = []
        for raw in complete:
            self.read += 1
            if self.only is not None and self.only not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if isinstance(line, dict):
                new.append(line)
            elif raw.strip():
                self.unparsable += 1
        if self.keep:
            self.lines += new
        return new


class NodeProcess:
    """One node process: ``lines`` (its JSON log so far), ``wait_event``, ``command`` (stdin), signals.

    ``node_id`` and ``incarnation`` are known after ``wait_started()`` (or once a
    ``Cluster.wait_active`` saw the node).
    """

    def __init__(self, name: str, cmd: Sequence[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.err_path = log_path.with_suffix(".err")
        with open(self.log_path, "wb") as out, open(self.err_path, "wb") as err:
            # own session: a Ctrl-C in the terminal reaches only the harness, which then stops the nodes
            self.proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=cwd,
                                         env=env, start_new_session=True)
        self.ps: psutil.Process | None = None
        with contextlib.suppress(psutil.Error):
            self.ps = psutil.Process(self.proc.pid)
        self.log = JsonLog(self.log_path)
        self.node_id = ""
        self.incarnation = 0
        self._replies: list[dict[str, Any]] = []
        self._replies_taken = 0

    # -- reading what it wrote ---------------------------------------------------------------
    @property
    def lines(self) -> list[dict[str, Any]]:
        """Every JSON line the node has written so far."""
        self._replies += [line for line in self.log.poll() if "command" in line]
        return self.log.lines

    @property
    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of its output and of its stderr, for an error message."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 8000))
                out = f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            out = []
        return "\n".join([*out, *self.stderr[-4000:].splitlines()[-lines:]])

    def wait_started(self, timeout: float = 20) -> NodeProcess:
        """Wait for its ``NodeStarted`` line (needs ``--log-format json``); learn its node id and incarnation."""
        started = self.wait_event(lambda e: e.get("event") == "NodeStarted", timeout=timeout)
        self.node_id = started["node_id"]
        self.incarnation = started["incarnation"]
        return self

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        """The first line so far (or to come within ``timeout``) that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        looked = 0
        exited = False
        pauses = _pauses()
        while True:
            lines = self.lines
            for line in lines[looked:]:
                if match(line):
                    return line
            looked = len(lines)
            if exited or time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no matching event within {timeout} s "
                                     f"(exit {self.proc.poll()}); stderr={self.stderr[-2000:]!r}")
            exited = self.proc.poll() is not None  # one more read after it exits: its last lines
            time.sleep(next(pauses))

    # -- talking to it -----------------------------------------------------------------------
    def command(self, line: str, timeout: float = 10) -> dict[str, Any]:
        """Send a ``/mesh_*`` command line on its stdin and return its JSON reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        want = self._replies_taken
        deadline = time.monotonic() + timeout
        pauses = _pauses()
        while True:
            self.lines  # noqa: B018 - reading the log collects the replies
            if len(self._replies) > want:
                self._replies_taken += 1
                return self._replies[want]
            if time.monotonic() > deadline:
                self._replies_taken += 1  # its reply, when it comes, is this command's: never the next one's
                raise AssertionError(f"{self.name}: no reply to {line!r} within {timeout} s")
            time.sleep(next(pauses))

    def status(self) -> dict[str, Any]:
        reply = self.command("/mesh_status")
        assert reply["ok"], reply
        return reply["data"]

    def view(self) -> dict[str, str]:
        """This node's own judgement of every node: name → status."""
        return {n["name"]: n["status"] for n in self.status()["nodes"]}

    # -- its life ----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``: SIGKILL (the default, kill -9), SIGSTOP / SIGCONT (freeze / thaw), SIGTERM (leave)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (a graceful leave) and its exit code."""
        self.kill(signal.SIGCONT)  # a frozen node would not act on SIGTERM
        self.kill(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Gone for sure: kill -9 (thawed first, if frozen) and reaped."""
        self.kill(signal.SIGCONT)
        self.kill(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def cpu_seconds(self) -> float:
        """CPU (user + system) it has used so far."""
        return cpu_seconds(self.ps)
