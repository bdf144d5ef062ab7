"""grpc_mesh over mutual TLS, on real gRPC servers on 127.0.0.1 with certificates made by ``mesh_core.certs``.

Who is refused and where: a certificate from another CA, or expired, fails the handshake (nothing reaches a
handler); a valid certificate not on the allowlist, or one presented under another node's name, is refused by
``check_caller`` (counted, told once per node); a call without the api key is refused by the interceptor before
any handler. A mesh of in-process nodes with certificates runs tasks and memory (a node refused for its
certificate, in a whole mesh: ``tests/security/test_auth_matrix.py``). Plaintext on a non-loopback address is refused
before anything binds unless ``--insecure``, which status then says. Certificates are reloaded without a
restart, and status warns of one that ends soon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import socket
import ssl
from pathlib import Path
from typing import Any

import grpc
import pytest

import mesh_testing
from mesh_core import certs
from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc._generated import mesh_pb2_grpc as pb_grpc
from mesh_core.backends.grpc.tls import Credentials, TlsFiles, check_plaintext_listen
from mesh_core.backends.grpc.wire import Peer, Wire
from mesh_core.commands import medium_label, render_status, status_data
from mesh_core.config import load_config
from mesh_core.errors import ConfigError

from ..backends.conftest import FAST, Cluster, eventually
from .conftest import backend_of

NOW = dt.datetime.now(dt.UTC)


def _ca(state: Path, *names: str, days: int = 30, now: dt.datetime | None = None) -> Path:
    """A mesh CA in ``state/certs`` and a certificate for each name, for 127.0.0.1."""
    certs.init_ca(state)
    for name in names:
        certs.issue(state, name, ["127.0.0.1"], days=days, now=now)
    return state


def _creds(state: Path, name: str) -> Credentials:
    paths = certs.CertPaths.of(state)
    return Credentials(TlsFiles(paths.ca_cert, paths.node_cert(name), paths.node_key(name), "certs"))


def _wire(name: str, creds: Credentials | None, **kw: Any) -> Wire:
    return Wire(node_id=name * 8, name=name, incarnation=1, host="127.0.0.1", port=0, tls=creds, **kw)


async def _pair(a: Wire, b: Wire) -> tuple[list[Peer], list[tuple[Peer, str]]]:
    """Start both; what b's tasks handler receives, and b's refusals."""
    got: list[Peer] = []
    refusals: list[tuple[Peer, str]] = []
    b.on_stream("tasks", lambda peer, env: got.append(peer))
    b.on_refusal = lambda peer, why: refusals.append((peer, why))
    await a.start()
    await b.start()
    return got, refusals


def _renewal(i: int = 1) -> Any:
    return pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=i)])


async def test_mutual_tls_carries_envelopes_with_the_certificate_name(tmp_path: Path) -> None:
    state = _ca(tmp_path, "a", "b")
    a, b = _wire("a", _creds(state, "a")), _wire("b", _creds(state, "b"))
    got, refusals = await _pair(a, b)
    answers: list[Peer] = []
    a.on_stream("tasks", lambda peer, env: answers.append(peer))
    b.on_stream("tasks", lambda peer, env: (got.append(peer), b.send(peer.address, "tasks", _renewal(2))))
    # a knows b is at b's address: its channel checks b's certificate names b (the handshake's target name)
    a.expected_name = lambda address: "b" if address == b.address else None
    try:
        assert a.send(b.address, "tasks", _renewal())
        await eventually(lambda: _is(bool(got) and bool(answers)), timeout=10)
        assert got[0].name == "a" and answers[0].name == "b" and not refusals
        # a plaintext caller cannot talk to a TLS server at all
        async with grpc.aio.insecure_channel(b.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.MeshStub(channel).Handshake(pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT),
                                                         timeout=3)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await a.stop()
        await b.stop()


async def _is(value: Any) -> Any:
    return value


@pytest.mark.parametrize("case", ["rogue_ca", "expired"])
async def test_a_certificate_from_another_ca_or_expired_fails_the_handshake(tmp_path: Path, case: str) -> None:
    state = _ca(tmp_path / "mesh", "b")
    if case == "rogue_ca":
        caller = _ca(tmp_path / "rogue", "a")  # a certificate for "a", from a CA the mesh does not trust
    else:
        certs.issue(state, "a", ["127.0.0.1"], days=1, now=NOW - dt.timedelta(days=3))  # ended 2 days ago
        caller = state
    a, b = _wire("a", _creds(caller, "a")), _wire("b", _creds(state, "b"))
    got, _ = await _pair(a, b)
    try:
        assert a.send(b.address, "tasks", _renewal())
        await eventually(lambda: _is(a.counters["wire_stream_errors_tasks"] >= 2), timeout=10)
        assert got == []  # nothing it sent reached a handler
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize("case", ["not_allowlisted", "claims_another_name"])
async def test_a_valid_certificate_is_refused_for_its_name(tmp_path: Path, case: str) -> None:
    state = _ca(tmp_path, "a", "b", "c")
    if case == "not_allowlisted":
        a = _wire("c", _creds(state, "c"))
        b = _wire("b", _creds(state, "b"), allowlist=("a", "b"))
        counter, why = "refused_calls_allowlist", "certificate name c is not on the allowlist"
    else:
        a = _wire("a", _creds(state, "c"))  # presents c's certificate, says it is a
        b = _wire("b", _creds(state, "b"))
        counter, why = "refused_calls_identity", "certificate names node c but it says it is a"
    got, refusals = await _pair(a, b)
    try:
        async def refused_thrice() -> bool:  # every stream it opens is refused (it sends until 3 were)
            a.send(b.address, "tasks", _renewal())
            await asyncio.sleep(0.1)
            return b.counters[counter] >= 3
        await eventually(refused_thrice, timeout=15)
        assert got == []
        assert refusals and all(why in detail for _, detail in refusals), refusals
        # a unary call under the same certificate is refused the same way
        hello = pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT, node_name=a.name, node_id=a.node_id)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a.stub(b.address).Handshake(hello, timeout=3)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED and why in (info.value.details() or "")
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize("tls", [False, True])
async def test_the_api_key_interceptor_refuses_every_kind_of_call(tmp_path: Path, tls: bool) -> None:
    state = _ca(tmp_path, "a", "b")
    b = _wire("b", _creds(state, "b") if tls else None, api_key="right key")
    refusals: list[tuple[Peer, str]] = []
    b.on_refusal = lambda peer, why: refusals.append((peer, why))
    reached: list[Any] = []
    b.on_stream("tasks", lambda peer, env: reached.append(env))
    a = _wire("a", _creds(state, "a") if tls else None)  # its calls carry no key
    await b.start()
    await a.start()
    hello = pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT, node_name="a", node_id="a" * 8)
    try:
        for metadata in ((), (("x-mesh-api-key", "wrong key"),), (("x-mesh-api-key", "right key!"),)):
            with pytest.raises(grpc.aio.AioRpcError) as info:  # unary
                await a.stub(b.address).Handshake(hello, timeout=3, metadata=metadata)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "api key" in (info.value.details() or "")

            async def requests() -> Any:
                yield pb.TaskMessage(hello=hello)
                await asyncio.sleep(10)  # the refusal ends the call first (a write racing it fails on its own)
            call = a.stub(b.address).Tasks(requests(), metadata=metadata)  # bidirectional stream
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert b.counters["refused_calls_api_key"] == 6
        assert reached == [] and len(refusals) == 6
        if tls:  # the refused caller is named by its certificate
            assert {peer.name for peer, _ in refusals} == {"a"}
        # with the key, the same calls pass
        reply = await a.stub(b.address).Handshake(hello, timeout=3, metadata=(("x-mesh-api-key", "right key"),))
        assert reply.node_name == "b"
    finally:
        await a.stop()
        await b.stop()


def _peer_fingerprint(port: int, state: Path, name: str) -> str:
    """The SHA-256 of the certificate a TLS server on 127.0.0.1:port presents (a fresh connection)."""
    paths = certs.CertPaths.of(state)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(paths.ca_cert))
    context.load_cert_chain(str(paths.node_cert(name)), str(paths.node_key(name)))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest().upper()


async def test_rotated_certificate_files_are_presented_without_a_restart(tmp_path: Path) -> None:
    state = _ca(tmp_path, "a", "b")
    a, b = _wire("a", _creds(state, "a")), _wire("b", _creds(state, "b"))
    got, _ = await _pair(a, b)
    try:
        before = await asyncio.to_thread(_peer_fingerprint, b.port, state, "a")
        assert before.replace(":", "") == b.tls.fingerprint.replace(":", "")  # type: ignore[union-attr]
        rotated = certs.issue(state, "b", ["127.0.0.1"], force=True)  # a new key and certificate in place
        await eventually(lambda: _is(b.counters["tls_reloads"] == 1), timeout=10)  # the wire's watch found it
        after = await asyncio.to_thread(_peer_fingerprint, b.port, state, "a")
        assert after != before and after == rotated.sha256.replace(":", "")
        # the client side too: a's new channels present a's new certificate, and b takes it
        certs.issue(state, "a", ["127.0.0.1"], force=True)
        await eventually(lambda: _is(a.counters["tls_reloads"] == 1), timeout=10)
        assert a.send(b.address, "tasks", _renewal())
        await eventually(lambda: _is(len(got) >= 1), timeout=10)
        # a broken set of files is not taken: the old one stays
        certs.CertPaths.of(state).node_cert("b").write_bytes(b"not a certificate")
        await eventually(lambda: _is(b.tls.failures == 1), timeout=10)  # type: ignore[union-attr]
        assert await asyncio.to_thread(_peer_fingerprint, b.port, state, "a") == after
    finally:
        await a.stop()
        await b.stop()


# -- the config: which files, and plaintext on a non-loopback address -----------------------------------------
def test_plaintext_on_a_non_loopback_address_is_refused_before_binding(tmp_path: Path) -> None:
    cfg = load_config(None, overrides={"state_dir": str(tmp_path), "protocol": "grpc_mesh", "grpc.host": "0.0.0.0"},
                      env={}, use_default_file=False)
    with pytest.raises(ConfigError) as info:
        check_plaintext_listen(cfg, "w1", tls_on=False)
    assert str(info.value) == ("grpc_mesh will not listen on 0.0.0.0 without TLS (run mesh-tui certs init && "
                               "mesh-tui certs issue w1 --host H, or start with --insecure (grpc.insecure: true) "
                               "to accept plaintext)")
    assert check_plaintext_listen(cfg, "w1", tls_on=True) is False
    assert check_plaintext_listen(cfg.replace(grpc=cfg.grpc.__class__(host="0.0.0.0", insecure=True)), "w1",
                                  tls_on=False) is True  # insecure: allowed, and said
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert check_plaintext_listen(cfg.replace(grpc=cfg.grpc.__class__(host=host)), "w1", tls_on=False) is False


async def test_a_node_on_0_0_0_0_without_tls_does_not_start_and_with_insecure_says_so(tmp_path: Path) -> None:
    c = Cluster(tmp_path, "grpc")
    try:
        with pytest.raises(ConfigError, match="will not listen on 0.0.0.0 without TLS"):
            await c.node("a", **{"grpc.host": "0.0.0.0"})
        a = await c.node("a", **{"grpc.host": "0.0.0.0", "grpc.insecure": True})
        data = await status_data(a)
        assert medium_label(data["local"]) == "grpc_mesh ⚠️ INSECURE"
        text = render_status(data)
        assert "Protocol: grpc_mesh ⚠️ INSECURE" in text and "TLS: ⚠️ INSECURE" in text
    finally:
        await c.close()


def test_the_cli_refuses_plaintext_on_0_0_0_0_and_says_insecure_with_the_flag(tmp_path: Path) -> None:
    c = Cluster(tmp_path, "grpc")
    try:
        refused = c.cli("status", "--grpc-host", "0.0.0.0")
        assert refused.returncode == 2, refused
        assert "grpc_mesh will not listen on 0.0.0.0 without TLS" in refused.stderr
        assert "mesh-tui certs init && mesh-tui certs issue cli --host H" in refused.stderr
        ran = c.cli("status", "--grpc-host", "0.0.0.0", "--insecure")
        assert ran.returncode == 0, ran.stderr
        assert "grpc_mesh ⚠️ INSECURE" in ran.stdout
    finally:
        c.stop()


# -- a mesh of in-process nodes with certificates ---------------------------------------------------------------
async def test_an_mtls_mesh_runs_tasks_and_memory(tmp_path: Path) -> None:
    c = mesh_testing.Cluster(tmp_path, "grpc", settings=FAST)
    _ca(c.state, "a", "b", "cli")  # <state_dir>/certs: used with no setting (grpc.tls.enabled auto)
    try:
        a, b = await c.node("a"), await c.node("b")
        await eventually(lambda: _is(len(a.members()) == 2 and len(b.members()) == 2), timeout=10)
        assert backend_of(a).describe()["grpc_tls"]["name"] == "a"
        client = await c.client()
        task_id = await client.submit_task("echo", {"hi": 1})
        assert (await client.wait_for(task_id, timeout=10)) == {"hi": 1}
        await a.sync_memory_item("fact", "over mTLS", key="k1")
        await eventually(lambda: _recall_is(b, "k1", "over mTLS"), timeout=10)
        await client.sync_memory_item("fact", "from the client", key="k2")
        await eventually(lambda: _recall_is(a, "k2", "from the client"), timeout=10)
    finally:
        await c.close()


async def _recall_is(mesh: Any, key: str, value: Any) -> bool:
    try:
        return bool(await mesh.recall(key) == value)
    except Exception:
        return False


async def test_status_warns_of_a_certificate_that_ends_within_14_days(tmp_path: Path) -> None:
    c = Cluster(tmp_path, "grpc")
    _ca(c.state, "a", days=5)
    try:
        a = await c.node("a")
        text = render_status(await status_data(a))
        assert "TLS: 🔒 mutual, certificate a" in text
        assert "Certificate: ⚠️ expires in 5 days" in text and "mesh-tui certs issue a --force" in text
    finally:
        await c.close()


def test_tls_required_without_the_files_says_how_to_make_them(tmp_path: Path) -> None:
    from mesh_core.backends.grpc.tls import tls_files
    cfg = load_config(None, overrides={"state_dir": str(tmp_path), "grpc.tls.enabled": True}, env={},
                      use_default_file=False)
    with pytest.raises(ConfigError, match="certs init && mesh-tui certs issue w1"):
        tls_files(cfg, "w1")
    auto = cfg.replace(grpc=cfg.grpc.__class__())
    assert tls_files(auto, "w1") is None  # auto, nothing there: plaintext (on loopback only)
    _ca(tmp_path, "w1")
    files = tls_files(auto, "w1")
    assert files is not None and files.cert == tmp_path / "certs" / "w1.pem"
    # a mesh CA but no certificate for this node: said, not a silent plaintext every peer would refuse
    with pytest.raises(ConfigError, match=r"w2\.pem is missing .*certs issue w2"):
        tls_files(auto, "w2")


async def test_a_node_id_keeps_the_name_its_certificate_first_gave_it(tmp_path: Path) -> None:
    state = _ca(tmp_path, "a", "b", "c")
    b = _wire("b", _creds(state, "b"))
    a, c = _wire("a", _creds(state, "a")), _wire("c", _creds(state, "c"))
    c.node_id = a.node_id  # c, with its own valid certificate, says it is a's node id
    refusals: list[tuple[Peer, str]] = []
    b.on_refusal = lambda peer, why: refusals.append((peer, why))
    for wire in (b, a, c):
        await wire.start()
    hello = lambda w: pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT, node_name=w.name,  # noqa: E731
                               node_id=w.node_id)
    try:
        assert (await a.stub(b.address).Handshake(hello(a), timeout=3)).node_name == "b"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.stub(b.address).Handshake(hello(c), timeout=3)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "which is a's, under c's certificate" in (info.value.details() or "")
        assert b.counters["refused_calls_identity"] == 1 and b.certified_name(a.node_id) == "a"
    finally:
        for wire in (a, b, c):
            await wire.stop()


@pytest.mark.parametrize("named", ["c", "a"])
async def test_a_membership_record_must_carry_the_name_of_the_senders_certificate(tmp_path: Path, named: str) -> None:
    from mesh_core import codec, swim
    from mesh_core.backends.grpc.records import gossip_of
    from mesh_core.model import NodeInfo

    c = mesh_testing.Cluster(tmp_path, "grpc", settings=FAST)
    _ca(c.state, "a", "c")
    intruder = _wire("c", _creds(c.state, "c"))  # holds c's certificate; its own record names `named`
    try:
        a = await c.node("a")
        await intruder.start()
        info = NodeInfo(node_id=intruder.node_id, name=named, host="127.0.0.1", task_types=frozenset({"echo"}))
        update = swim.Update(swim.Kind.ALIVE, intruder.node_id, 1, intruder.node_id, intruder.address, info)
        envelope = pb.MembershipMessage(gossip=[gossip_of(update, codec.DEFAULT_LIMITS, {})])
        address = backend_of(a).wire.address
        ids = lambda: {m.info.node_id for m in a.members()}  # noqa: E731
        if named == "c":  # the control: its own name, its record is taken
            assert intruder.send(address, "membership", envelope)
            await eventually(lambda: _is(intruder.node_id in ids()), timeout=10)
            return
        for _ in range(3):
            assert intruder.send(address, "membership", envelope)
            await asyncio.sleep(0.2)
        await eventually(lambda: _is(backend_of(a).counters["refused_identity_records"] >= 3), timeout=10)
        assert intruder.node_id not in ids()
        assert backend_of(a).counters["refused_calls_identity"] == 0  # its Hello (c) matched: the record did not
    finally:
        await intruder.stop()
        await c.close()


async def test_hybrids_seed_probe_speaks_the_same_tls(tmp_path: Path) -> None:
    from mesh_core.backends.choice import SeedOutcome
    from mesh_core.backends.hybrid import Caller, probe_all

    state = _ca(tmp_path, "hub", "prober")
    hub = _wire("hub", _creds(state, "hub"))
    await hub.start()
    try:
        def config(**extra: Any) -> Any:
            return load_config(None, env={}, use_default_file=False, overrides={
                "protocol": "hybrid", "state_dir": str(tmp_path), "grpc.seeds": [hub.address], **extra})
        caller = Caller(node_id="ab" * 16, node_name="prober", incarnation=1)
        _, (seed,) = await probe_all(config(), caller)  # auto: the prober's certificate in <state_dir>/certs
        assert seed.outcome is SeedOutcome.ANSWERED and seed.node_name == "hub", seed
        _, (plain,) = await probe_all(config(**{"grpc.tls.enabled": False}), caller, timeout=1.0)
        assert plain.outcome is not SeedOutcome.ANSWERED  # a plaintext probe gets no answer from a TLS seed
    finally:
        await hub.stop()
