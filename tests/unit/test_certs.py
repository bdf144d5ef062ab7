"""The mesh CA (``mesh_core.certs``): real keys and certificates in a real folder, checked with cryptography's
own path validation and a real mutual-TLS gRPC call."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mesh_core import certs
from mesh_core.errors import CertError

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: whatever is not 0600/0700 would show up as 0666/0777."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def modes(folder: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[str(path.relative_to(folder))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_a_node_certificate_passes_path_validation_as_server_and_client(tmp_path: Path) -> None:
    certs.init_ca(tmp_path, now=NOW)
    info = certs.issue(tmp_path, "hub", ["hub.example", "10.0.0.1", "[::1]"], now=NOW)
    paths = certs.CertPaths.of(tmp_path)
    ca, leaf = load(paths.ca_cert), load(paths.node_cert("hub"))
    assert certs.signed_by(leaf, ca) and info.signed_by_ca
    store = Store([ca])
    for host in (x509.DNSName("hub.example"), x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                 x509.IPAddress(ipaddress.ip_address("::1"))):
        chain = PolicyBuilder().store(store).time(NOW).build_server_verifier(host).verify(leaf, [])
        assert chain[-1] == ca
    verified = PolicyBuilder().store(store).time(NOW).build_client_verifier().verify(leaf, [])
    assert verified.chain[-1] == ca
    # a host it was not issued for, a time after it ends, and another mesh's CA all fail
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("other.example")).verify(leaf, [])
    with pytest.raises(VerificationError):
        later = NOW + dt.timedelta(days=certs.DEFAULT_NODE_DAYS, seconds=1)
        PolicyBuilder().store(store).time(later).build_server_verifier(x509.DNSName("hub.example")).verify(leaf, [])
    rogue = tmp_path / "rogue"
    certs.init_ca(rogue, now=NOW)
    assert not certs.signed_by(leaf, load(certs.CertPaths.of(rogue).ca_cert))
    with pytest.raises(VerificationError):
        (PolicyBuilder().store(Store([load(certs.CertPaths.of(rogue).ca_cert)])).time(NOW)
         .build_server_verifier(x509.DNSName("hub.example")).verify(leaf, []))


def test_names_sans_and_lifetime(tmp_path: Path) -> None:
    ca_info = certs.init_ca(tmp_path, now=NOW)
    assert ca_info.role == "ca" and ca_info.not_after == NOW + dt.timedelta(days=certs.DEFAULT_CA_DAYS)
    info = certs.issue(tmp_path, "w1", ["W1.Example.", "192.168.1.20", "w1.example"], now=NOW)
    assert info.name == "w1" and info.subject == "CN=w1,O=Agent Mesh"
    # the node name first, as a URI; hosts as given, a name lower-cased once, an address as an IP SAN
    assert info.sans == ("URI:mesh-node:w1", "DNS:w1.node.mesh.invalid", "DNS:w1.example", "IP:192.168.1.20")
    assert info.not_after == NOW + dt.timedelta(days=90)
    assert info.not_before is not None and info.not_before < NOW  # back-dated for a peer whose clock is behind
    leaf = load(certs.CertPaths.of(tmp_path).node_cert("w1"))
    assert certs.node_name_of(leaf) == "w1" == certs.node_name_of(leaf.public_bytes(serialization.Encoding.PEM))
    assert certs.node_name_of(load(certs.CertPaths.of(tmp_path).ca_cert)) is None
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert info.sha256.count(":") == 31 and info.sha256 == info.sha256.upper()
    short = certs.issue(tmp_path, "w2", days=7, now=NOW)
    assert short.not_after == NOW + dt.timedelta(days=7)
    assert short.sans == ("URI:mesh-node:w2", "DNS:w2.node.mesh.invalid")


def test_files_are_0600_in_a_0700_folder_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    state = tmp_path / "state"
    certs.init_ca(state, now=NOW)
    certs.issue(state, "hub", ["127.0.0.1"], now=NOW)
    certs.issue(state, "hub", ["127.0.0.1"], now=NOW, force=True)  # a rotation writes new files: 0600 too
    found = modes(state)
    assert found.pop(".") == 0o700 and found.pop("certs") == 0o700
    assert found == {f"certs/{f}": 0o600 for f in ("ca.pem", "ca.key", "hub.pem", "hub.key")}


def test_the_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="no mesh CA") as no_ca:
        certs.issue(tmp_path, "hub", now=NOW)
    assert "certs init" in str(no_ca.value) and no_ca.value.exit_code == 2
    with pytest.raises(CertError, match="no certificates"):
        certs.inspect(tmp_path)
    first = certs.init_ca(tmp_path, now=NOW)
    with pytest.raises(CertError, match="already") as again:
        certs.init_ca(tmp_path, now=NOW)
    assert "--force" in str(again.value)
    assert certs.inspect(tmp_path)[0].sha256 == first.sha256  # refused: the CA is untouched
    certs.issue(tmp_path, "hub", now=NOW)
    with pytest.raises(CertError, match="already has a certificate"):
        certs.issue(tmp_path, "hub", now=NOW)
    for bad in ("hub:9901", "*.example", "https://hub", "bad_host", "-x.example", "a..b", "", "1.2.3.4/24"):
        with pytest.raises(CertError, match="is not a host name or IP address"):
            certs.issue(tmp_path, "w1", [bad], now=NOW)
    assert not certs.CertPaths.of(tmp_path).node_cert("w1").exists()  # a bad host writes nothing
    for name in ("ca", "no/slash", "", "x" * 64):
        with pytest.raises(CertError, match="cannot name a certificate"):
            certs.issue(tmp_path, name, now=NOW)
    for days in (0, -1, certs.MAX_NODE_DAYS + 1):
        with pytest.raises(CertError, match="out of range"):
            certs.issue(tmp_path, "w1", days=days, now=NOW)
    near_end = NOW + dt.timedelta(days=certs.DEFAULT_CA_DAYS - 30)
    with pytest.raises(CertError, match="outlive the CA"):
        certs.issue(tmp_path, "w1", now=near_end)
    # a node machine holds the CA certificate but not its key: it cannot issue
    certs.CertPaths.of(tmp_path).ca_key.unlink()
    with pytest.raises(CertError, match="not its key"):
        certs.issue(tmp_path, "w1", now=NOW)


def test_a_new_ca_with_force_no_longer_vouches_for_old_node_certificates(tmp_path: Path) -> None:
    certs.init_ca(tmp_path, now=NOW)
    certs.issue(tmp_path, "hub", now=NOW)
    certs.init_ca(tmp_path, now=NOW, force=True)
    certs.issue(tmp_path, "w1", now=NOW)
    (certs.CertPaths.of(tmp_path).folder / "junk.pem").write_text("not a certificate")
    shown = {info.name: info for info in certs.inspect(tmp_path)}
    assert shown["hub"].signed_by_ca is False and shown["w1"].signed_by_ca is True
    assert "not a PEM certificate" in shown["junk"].problem
    text = certs.render(list(shown.values()), NOW)
    assert "NOT the CA in this folder" in text and "problem" in text and "90 days left" in text
    assert "PRIVATE KEY" not in text


def test_expiry_text() -> None:
    def info(days: float) -> certs.CertInfo:
        return certs.CertInfo(role="node", name="n", path="p", not_after=NOW + dt.timedelta(days=days))
    assert "(90 days left)" in certs.expiry_text(info(90), NOW)
    assert "(5 days left: renew soon)" in certs.expiry_text(info(5), NOW)
    assert "(6 hours left: renew soon)" in certs.expiry_text(info(0.25), NOW)
    assert "(EXPIRED 3 days ago)" in certs.expiry_text(info(-3), NOW)
    assert info(-3).to_dict(NOW)["expired"] is True and info(1).to_dict(NOW)["expired"] is False


def test_node_name_from_sans_as_a_tls_stack_lists_them() -> None:
    assert certs.node_name_from_sans([b"hub.example", b"mesh-node:hub", b"10.0.0.1"]) == "hub"
    assert certs.node_name_from_sans(["hub.example"]) is None
    assert certs.node_name_from_sans(["mesh-node:bad/name"]) is None


# -- the files work for gRPC mutual TLS, and the peer's name is read back from its certificate ---------------
SERVICE, METHOD = "certs.test.Echo", "/certs.test.Echo/Who"


async def _who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    auth = context.auth_context()
    name = certs.node_name_from_sans(auth.get("x509_subject_alternative_name", []))
    return (name or "?").encode()


async def _call(port: int, tls: certs.TlsMaterial) -> bytes:
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        result: bytes = await channel.unary_unary(METHOD)(b"", timeout=5)
        return result


async def test_grpc_mutual_tls_with_the_issued_files(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    certs.issue(tmp_path, "hub", ["127.0.0.1"])
    certs.issue(tmp_path, "w1")
    server_tls = certs.load_tls(tmp_path, "hub")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(_who)})])
    creds = grpc.ssl_server_credentials([(server_tls.key, server_tls.cert)], root_certificates=server_tls.ca,
                                        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        assert await _call(port, certs.load_tls(tmp_path, "w1")) == b"w1"  # the client's name, from its certificate
        rogue = tmp_path / "rogue"
        certs.init_ca(rogue)
        certs.issue(rogue, "w1")
        stranger = certs.load_tls(rogue, "w1")
        with pytest.raises(grpc.aio.AioRpcError):  # a certificate from another CA is refused
            await _call(port, certs.TlsMaterial(ca=server_tls.ca, cert=stranger.cert, key=stranger.key))
    finally:
        await server.stop(None)
    with pytest.raises(CertError, match="certs issue nobody"):
        certs.load_tls(tmp_path, "nobody")
