"""A private redis-server for one bench run (the approach of ``tests/redis_server.py``).

Never a shared or default-port server: a free port on 127.0.0.1, a temporary
folder, no persistence (``--save "" --appendonly no``), stopped by pid.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from tests.redis_server import free_port, redis_server_binary

_LIVE: list[RedisServer] = []


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.cleanup()


class RedisServer:
    """``with RedisServer() as server: server.url`` — started on enter, killed and removed on exit."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="mesh-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.binary = ""
        self.version = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def start(self) -> RedisServer:
        self.binary = redis_server_binary()
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder,
                "--save", "", "--appendonly", "no", "--protected-mode", "no", "--maxclients", "4000"]
        log_path = Path(self.folder) / "redis.log"
        _LIVE.append(self)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        with contextlib.suppress(psutil.Error):
            self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"INFO server\r\n")
                    reply = s.recv(4096)
                    if reply.startswith(b"$"):
                        for line in reply.split(b"\r\n"):
                            if line.startswith(b"redis_version:"):
                                self.version = line.split(b":", 1)[1].decode()
                        return self
            except OSError:
                time.sleep(0.02)
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        self.cleanup()
        raise RuntimeError(f"redis-server did not start on port {self.port}: {tail}")

    def cpu_seconds(self) -> float:
        if self.ps is None:
            return 0.0
        try:
            t = self.ps.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self in _LIVE:
                _LIVE.remove(self)
