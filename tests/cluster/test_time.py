"""Time and self-knowledge on real processes: a node whose clock runs 300 s ahead, a node cut off from Redis.

Issue #11, defects 10 and 7. The skewed node runs under libfaketime (Debian package ``faketime``); where it is
not installed the test is skipped with that reason. The cut-off node reaches Redis through a proxy owned by the
test, which drops every byte both ways while the cut lasts (a partition: calls hang, nothing is refused).
"""

from __future__ import annotations

import glob
import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_core.backends.redis import scripts as lua
from mesh_core.clock import hlc_to_seconds

from .conftest import SUSPECT, TIMEOUT, Cluster, NodeProcess, until

pytestmark = pytest.mark.slow

MAX_OFFSET = 0.5  # the default max_clock_offset_seconds
SKEW = 300.0
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
                               + glob.glob("/usr/lib/faketime/libfaketime.so.1"))), None)


def _status_lines(node: NodeProcess, name: str) -> list[str]:
    """Every status this node's log says it judged ``name`` to move to."""
    return [e["new"] for e in node.lines if e.get("event") == "NodeStatusChanged" and e.get("name") == name]


@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed (Debian package faketime)")
def test_a_node_300_s_ahead_neither_kills_nor_skews_the_others(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    try:
        n1, n2 = cluster.start("n1"), cluster.start("n2")
        plain = cluster.env
        cluster.env = {**plain, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"+{SKEW:g}s"}
        # Told to allow any offset, it does not fence itself (see test_clock_fence): its stamps reach the others,
        # whose own bound (the default) is what this test is about.
        lax = tmp_path / "lax.yaml"
        section = yaml.safe_load(cluster.config.read_text())
        section["agent_mesh"]["max_clock_offset_seconds"] = 10 * SKEW
        lax.write_text(yaml.safe_dump(section))
        try:
            skewed = cluster.start("skewed", "--config", str(lax))
        finally:
            cluster.env = plain
        everyone = {"n1": "active", "n2": "active", "skewed": "active"}
        for node in (n1, n2, skewed):
            until(lambda node=node: node.view() == everyone, timeout=15)
        # Work runs once, wherever it is routed, while the skewed node judges (and may sweep for) everyone.
        for i in range(6):
            done = cluster.cli_json("submit", "echo", "--payload", str(i), "--wait")
            assert done["status"] == "succeeded" and done["attempts"] == 1, done
        time.sleep(TIMEOUT + 1.0)  # past the timeout: a false death would have happened by now
        for node in (n1, n2, skewed):
            assert node.view() == everyone
            assert not [e for e in node.lines if e.get("event") == "NodeStatusChanged"], node.name
        assert all(t["attempts"] == 1 for t in cluster.cli_json("tasks"))

        # Its memory stamps do not drag the others' clocks: n1 stamps its own later write near real time.
        skewed.command('/mesh_remember from-the-future "hello"')
        until(lambda: n1.command("/mesh_recall from-the-future")["ok"], timeout=15)
        assert n1.command("/mesh_remember after-it \"n1\"")["ok"]
        stamp = hlc_to_seconds(n1.command("/mesh_recall after-it")["data"]["hlc"])
        assert stamp - time.time() < MAX_OFFSET + 0.5, f"n1 stamps {stamp - time.time():.1f} s ahead"

        # ... and it is flagged: in a node's own status, and for a one-shot client through the heartbeats.
        def flagged(nodes: list[dict[str, Any]]) -> float | None:
            return next((n.get("clock_ahead_s") for n in nodes if n["name"] == "skewed"), None)
        ahead = flagged(n1.status()["nodes"])
        assert ahead is not None and SKEW - 30 < ahead < SKEW + 30
        assert n1.status()["counters"]["clock_skew_clamped"] >= 1
        until(lambda: flagged(cluster.cli_json("status")["nodes"]) is not None, timeout=10)
        text = cluster.cli("status").stdout
        assert "skewed" in text and "clock skewed" in text, text

        # Killed, it is declared dead in time (its last heartbeat is not "in the future" for anyone).
        skewed.kill()
        killed = time.monotonic()
        until(lambda: n1.view().get("skewed") == "dead", timeout=TIMEOUT + 5)
        assert time.monotonic() - killed < TIMEOUT + 3
        assert {n["name"]: n["status"] for n in cluster.cli_json("status")["nodes"]}["skewed"] == "dead"
    finally:
        cluster.stop()


class CutProxy:
    """A TCP proxy to Redis that, while ``cut``, drops every byte both ways and notes what the node sent."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cut = False
        self.dropped: list[tuple[float, bytes]] = []  # (monotonic time, bytes the node sent) during the cut
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_node: bool) -> None:
        try:
            while data := src.recv(65536):
                if not self.cut:
                    dst.sendall(data)
                elif from_node:
                    self.dropped.append((time.monotonic(), data))
        except OSError:
            pass
        for sock in (src, dst):
            sock.close()

    def heal(self) -> None:
        """End the cut; connections that lost bytes are reset, as after a real partition."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        self.cut = False
        for pair in pairs:
            for sock in pair:
                sock.close()

    def close(self) -> None:
        self._closed = True
        self.server.close()
        self.heal()


def test_a_node_cut_off_from_redis_knows_it_before_the_others_declare_it_dead(
        tmp_path: Path, redis_server: Any) -> None:
    proxy = CutProxy(redis_server.port)
    cluster = Cluster(tmp_path, "redis", redis_server.url)
    try:
        other = cluster.start("other")
        cut = cluster.start("cut", "--redis-url", proxy.url)
        until(lambda: other.view() == {"other": "active", "cut": "active"}, timeout=15)
        proxy.cut = True
        start = time.monotonic()
        alarm = cut.wait_event(lambda e: e.get("event") == "Problem" and e.get("counter") == "cut_off",
                               timeout=SUSPECT + 5)
        assert time.monotonic() - start < SUSPECT + 3
        cut.wait_event(lambda e: e.get("event") == "BackendStatus" and e.get("healthy") is False)
        seen_cut = time.monotonic()
        dead = other.wait_event(lambda e: e.get("event") == "NodeStatusChanged" and e.get("name") == "cut"
                                and e.get("new") == "dead", timeout=TIMEOUT + 5)
        assert alarm["at"] < dead["at"], "the others declared it dead before it knew it was cut off"
        time.sleep(1.5)  # a few claim periods while cut off
        claim = hashlib.sha1(lua.CLAIM.encode()).hexdigest().encode()
        late_claims = [data for at, data in proxy.dropped if at > seen_cut and claim in data]
        assert late_claims == [], "it kept claiming work while cut off"
        assert "dead" not in _status_lines(cut, "cut")  # its own view never says it is dead
        assert _status_lines(cut, "cut")[-1:] == ["suspect"]

        proxy.heal()
        cut.wait_event(lambda e: e.get("event") == "BackendStatus" and e.get("healthy") is True, timeout=15)
        until(lambda: cut.view().get("cut") == "active" and other.view().get("cut") == "active", timeout=15)
        done = cluster.cli_json("submit", "echo", "--payload", '"back"', "--wait")
        assert done["status"] == "succeeded"
    finally:
        cluster.stop()
        proxy.close()
