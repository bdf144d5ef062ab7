"""A private network made of Linux network namespaces, for partitions and packet loss between real processes.

``NetLab`` makes a hub namespace holding a bridge and one namespace per host,
each joined to the bridge by a veth pair whose host end is ``eth0`` with an
address in 10.199.N.0/24. Every address, link and rule lives inside the
namespaces the lab made; the machine's own namespace is never touched.
``partition`` drops every packet on a host's ``eth0`` (iptables inside its
namespace), ``lose`` adds netem packet loss there (tc), ``heal`` undoes both.
``close`` deletes the namespaces (and with them every link); it runs at exit
too. ``unavailable()`` says why a lab cannot be made here, or None.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

_LIVE: list[NetLab] = []


@atexit.register
def _close_leftovers() -> None:
    for lab in list(_LIVE):
        with contextlib.suppress(Exception):
            lab.close()


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why network namespaces with iptables and tc cannot be used here (None: they can)."""
    missing = [tool for tool in ("ip", "iptables", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian packages iproute2, iptables)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"mcprobe{uuid.uuid4().hex[:6]}"
    try:
        _run("ip", "netns", "add", probe)
        try:
            _run("ip", "netns", "exec", probe, "iptables", "-L", "-n")
            _run("ip", "netns", "exec", probe, "tc", "qdisc", "show")
        finally:
            _run("ip", "netns", "del", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"network namespaces not permitted here: {exc}"
    return None


class NetLab:
    """Namespaces ``hosts`` (each with ``eth0`` at ``address(host)``) on one bridge."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.subnet = 1 + int(self.tag, 16) % 250
        self.hub = f"mc{self.tag}-hub"
        self.hosts = list(hosts)
        self.made: list[str] = []
        _LIVE.append(self)
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def ns(self, host: str) -> str:
        return f"mc{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"10.199.{self.subnet}.{self.hosts.index(host) + 1}"

    def _in(self, ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", ns, *cmd)

    def _build(self) -> None:
        _run("ip", "netns", "add", self.hub)
        self.made.append(self.hub)
        self._in(self.hub, "ip", "link", "add", "br0", "type", "bridge")
        self._in(self.hub, "ip", "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            ns = self.ns(host)
            _run("ip", "netns", "add", ns)
            self.made.append(ns)
            hub_end = f"v{i}"
            _run("ip", "-n", self.hub, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._in(self.hub, "ip", "link", "set", hub_end, "master", "br0")
            self._in(self.hub, "ip", "link", "set", hub_end, "up")
            self._in(ns, "ip", "link", "set", "lo", "up")
            self._in(ns, "ip", "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            self._in(ns, "ip", "link", "set", "eth0", "up")

    def exec_prefix(self, host: str) -> list[str]:
        """The command prefix that runs a program inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    def partition(self, host: str) -> None:
        """Cut ``host`` off: every packet in or out of its ``eth0`` is dropped (loopback still works)."""
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self._in(self.ns(host), "iptables", "-A", chain, flag, "eth0", "-j", "DROP")

    def lose(self, host: str, percent: float) -> str:
        """Drop ``percent`` % of the packets in and out of ``host``'s ``eth0``; returns how ("netem" or "iptables").

        tc netem where the kernel has it; else iptables' random ``statistic`` match (the same loss, no delay).
        """
        try:
            self._in(self.ns(host), "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "loss", f"{percent}%")
            return "netem"
        except RuntimeError:
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                self._in(self.ns(host), "iptables", "-A", chain, flag, "eth0", "-m", "statistic", "--mode",
                         "random", "--probability", f"{percent / 100:.3f}", "-j", "DROP")
            return "iptables"

    def heal(self, host: str) -> None:
        """Undo ``partition`` and ``lose`` on ``host``."""
        self._in(self.ns(host), "iptables", "-F")
        with contextlib.suppress(RuntimeError):  # no qdisc to delete when none was added
            self._in(self.ns(host), "tc", "qdisc", "del", "dev", "eth0", "root")

    def close(self) -> None:
        """Delete every namespace this lab made (their links and rules go with them)."""
        for ns in reversed(self.made):
            with contextlib.suppress(Exception):
                _run("ip", "netns", "del", ns)
        self.made.clear()
        if self in _LIVE:
            _LIVE.remove(self)

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NamespacedRedis:
    """A private redis-server inside one of a lab's namespaces, listening on that host's address.

    ``kill()`` then ``start()`` brings the data back when ``appendonly``.
    """

    def __init__(self, lab: NetLab, host: str, *, port: int = 6379, appendonly: bool = False) -> None:
        from mesh_testing.redis_server import redis_server_binary

        self.lab, self.host, self.port, self.appendonly = lab, host, port, appendonly
        self.binary = redis_server_binary()
        self.folder = tempfile.mkdtemp(prefix="mesh-nsredis-")
        self.log_path = Path(self.folder) / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.lab.address(self.host)}:{self.port}/0"

    def start(self, timeout: float = 10) -> NamespacedRedis:
        seen = self.log_path.read_text(errors="replace").count("Ready to accept") if self.log_path.exists() else 0
        args = [*self.lab.exec_prefix(self.host), self.binary, "--port", str(self.port), "--bind",
                self.lab.address(self.host), "--dir", self.folder, "--save", "", "--appendonly",
                "yes" if self.appendonly else "no", "--protected-mode", "no"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.read_text(errors="replace").count("Ready to accept") > seen:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not start in {self.host}: "
                           f"{self.log_path.read_text(errors='replace')[-1500:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
