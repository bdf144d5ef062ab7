"""Redis over TLS (issue 13, point 6): a TLS-only redis-server that asks clients for a certificate, with a CA and
certificates made by ``mesh_core.certs``; real node processes work on it, and each wrong setting is refused in one
line that says what to fix. Needs a redis-server built with TLS (Debian's); skipped otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_core import certs
from mesh_core.backends.hybrid import probe_redis
from mesh_core.certs import CertPaths
from mesh_core.config import RedisConfig
from mesh_testing import Cluster, RedisServer, ServerTls, until

from ..conftest import start_tls_redis
from .conftest import HEARTBEAT, SUSPECT, TIMEOUT

pytestmark = [pytest.mark.slow, pytest.mark.untimed]  # judged by outcome, not by time: run with the fast part

PASSWORD = "tls-test-secret"


class Pki:
    """The mesh CA (with certificates for the server and a node) and a rogue CA (with a node certificate)."""

    def __init__(self, root: Path) -> None:
        self.good, self.rogue = CertPaths.of(root / "good"), CertPaths.of(root / "rogue")
        certs.init_ca(root / "good")
        certs.issue(root / "good", "redis", ["127.0.0.1"])
        certs.issue(root / "good", "w1")
        certs.init_ca(root / "rogue")
        certs.issue(root / "rogue", "w1")

    def client(self, paths: CertPaths | None = None, ca: CertPaths | None = None) -> dict[str, Any]:
        """The ``redis:`` TLS keys: trust ``ca``'s CA, present ``paths``' certificate for w1 (None: none)."""
        keys: dict[str, Any] = {"tls_ca_file": str((ca or self.good).ca_cert)}
        if paths is not None:
            keys |= {"tls_cert_file": str(paths.node_cert("w1")), "tls_key_file": str(paths.node_key("w1"))}
        return keys


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[RedisServer]:
    """A TLS-only server (no plaintext port) that requires a client certificate from the mesh CA and a password."""
    tls = ServerTls(pki.good.node_cert("redis"), pki.good.node_key("redis"), pki.good.ca_cert, auth_clients=True)
    server = start_tls_redis(RedisServer(tls=tls, extra=("--requirepass", PASSWORD)))
    try:
        yield server
    finally:
        server.cleanup()


def _url(server: RedisServer, scheme: str = "rediss", host: str = "127.0.0.1") -> str:
    return f"{scheme}://:{PASSWORD}@{host}:{server.port}/0"


def test_nodes_on_rediss_with_a_client_certificate_run_tasks_and_share_memory(
        tmp_path: Path, pki: Pki, tls_server: RedisServer) -> None:
    assert tls_server.url.startswith("rediss://")
    settings = {"heartbeat_interval_seconds": HEARTBEAT, "suspect_after_seconds": SUSPECT,
                "node_timeout_seconds": TIMEOUT, "shutdown_grace_seconds": 1.0, "redis": pki.client(pki.good)}
    cluster = Cluster(tmp_path, "redis", _url(tls_server), settings=settings)
    try:
        w1, w2 = cluster.start("w1"), cluster.start("w2")
        done = cluster.cli("submit", "echo", "--payload", '{"over": "tls"}', "--wait", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == {"over": "tls"}
        assert w1.command('/mesh_remember secret-route "via rediss"')["ok"]
        until(lambda: (w2.command("/mesh_recall secret-route").get("data") or {}).get("value") == "via rediss",
              timeout=15)
        status = cluster.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        backend = json.loads(status.stdout)["local"]["backend"]
        assert backend["tls"] == {"ca_file": str(pki.good.ca_cert), "cert_file": str(pki.good.node_cert("w1")),
                                  "check_hostname": True}
        assert backend["url"].startswith("rediss://") and PASSWORD not in status.stdout
        text = cluster.cli("status")
        assert "TLS" in text.stdout and PASSWORD not in text.stdout, text.stdout
    finally:
        cluster.stop()


def _refused(tmp_path: Path, url: str, redis_keys: dict[str, Any], *args: str) -> str:
    """Run ``mesh-tui ARGS`` on ``url`` with these ``redis:`` keys; it must fail with one line (exit 2), returned."""
    config = tmp_path / "mesh.yaml"
    config.write_text(yaml.safe_dump({"agent_mesh": {"protocol": "redis_distributed", "state_dir": str(tmp_path / "s"),
                                                     "redis": {**redis_keys, "url": url}}}))
    config.chmod(0o600)  # it holds the password
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    run = subprocess.run([sys.executable, "-m", "mesh_tui", "--config", str(config), *args], capture_output=True,
                         text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert PASSWORD not in run.stderr
    return lines[0]


def test_a_node_without_a_client_certificate_is_refused_in_one_line(
        tmp_path: Path, pki: Pki, tls_server: RedisServer) -> None:
    for args in (["--no-ui", "--name", "w1"], ["status"]):
        line = _refused(tmp_path, _url(tls_server), pki.client(None), *args)
        assert "requires a client certificate" in line and "redis.tls_cert_file" in line, line


@pytest.mark.parametrize(("case", "expected"), [
    ("rogue client certificate", ["refused this node's client certificate", "unknown ca", "CA the server trusts"]),
    ("wrong CA file", ["not signed by redis.tls_ca_file", "set redis.tls_ca_file to the CA"]),
    ("plaintext url on the TLS port", ["speaks TLS only", "use a rediss:// url"]),
    ("host not in the server certificate", ["does not name localhost", "--host localhost"]),
    ("missing CA file", ["redis.tls_ca_file", "cannot be read: No such file or directory", "certs init"]),
    ("key of another certificate", ["redis.tls_key_file", "is not the key of"]),
])
def test_each_wrong_setting_is_refused_in_one_line_saying_what_to_fix(
        tmp_path: Path, pki: Pki, tls_server: RedisServer, case: str, expected: list[str]) -> None:
    url, keys = _url(tls_server), pki.client(pki.good)
    if case == "rogue client certificate":
        keys = pki.client(pki.rogue)
    elif case == "wrong CA file":
        keys = pki.client(pki.good, ca=pki.rogue)
    elif case == "plaintext url on the TLS port":
        url, keys = _url(tls_server, "redis"), {}
    elif case == "host not in the server certificate":
        url = _url(tls_server, host="localhost")
    elif case == "missing CA file":
        keys["tls_ca_file"] = str(tmp_path / "nowhere" / "ca.pem")
    elif case == "key of another certificate":
        keys["tls_key_file"] = str(pki.rogue.node_key("w1"))
    line = _refused(tmp_path, url, keys, "status")
    assert all(part in line for part in expected), line


def test_rediss_against_a_plaintext_server_is_refused_in_one_line(
        tmp_path: Path, pki: Pki, redis_server: RedisServer) -> None:
    url = f"rediss://127.0.0.1:{redis_server.port}/0"
    line = _refused(tmp_path, url, pki.client(pki.good), "status")
    assert "speaks plaintext Redis, not TLS" in line and "use a redis:// url" in line, line


def test_tls_keys_on_a_plaintext_url_are_a_config_error(tmp_path: Path, pki: Pki, redis_server: RedisServer) -> None:
    line = _refused(tmp_path, redis_server.url, pki.client(pki.good), "status")
    assert "redis.tls_ca_file is set but redis.url" in line and "rediss://" in line, line


async def test_hostname_check_can_be_turned_off(pki: Pki, tls_server: RedisServer) -> None:
    keys = pki.client(pki.good)
    on = await probe_redis(RedisConfig(url=_url(tls_server, host="localhost"), **keys))
    assert not on.answered and "does not name localhost" in on.error
    off = await probe_redis(RedisConfig(url=_url(tls_server, host="localhost"), tls_check_hostname=False, **keys))
    assert off.answered, off.error


async def test_hybrid_probe_uses_the_tls_settings(pki: Pki, tls_server: RedisServer) -> None:
    good = await probe_redis(RedisConfig(url=_url(tls_server), **pki.client(pki.good)))
    assert good.answered, good.error
    bare = await probe_redis(RedisConfig(url=_url(tls_server), **pki.client(None)))
    assert not bare.answered and "requires a client certificate" in bare.error, bare.error
    plain = await probe_redis(RedisConfig(url=_url(tls_server, "redis")))
    assert not plain.answered and "speaks TLS only" in plain.error, plain.error
    assert PASSWORD not in good.url + bare.error + plain.error
