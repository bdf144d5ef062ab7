"""The auth matrix (issue #13): every way an intruder may try to get into a mesh, on every medium it applies to.

Each cell runs a guarded mesh (``security.api_key`` and an allowlist; on gRPC mutual TLS with the mesh CA; the
certificate cells on Redis a TLS-only redis-server that asks for client certificates) with two in-process guards:
worker ``a`` (the only node with a handler for ``guarded`` tasks) and a client. Then the intruder acts: it starts
(its join), writes several memory items, submits a ``guarded`` task; the client submits work the intruder could
take. For each cell the test checks what is refused (join, task routed to it, task submitted by it, memory write
from it), the line the refusal is logged with (once per node, however many frames: the guard's ``Problem``
events are its log lines, one call makes both), the counter ``status`` shows, and that the refused actions left
the guards' state as it was: node table, memory replicas, tasks (the client's; on a shared SQLite file or Redis
the intruder's own task rows are its own writes to a medium anyone with the file or the password can write: what
must hold is that no guard ran one or took it as a member's), and the guard's handler runs.

The valid peer is the control: the same steps, all taken. The parts are real: SQLite files, redis-servers, gRPC
servers on 127.0.0.1, certificates made by ``mesh_core.certs``; the no-key intruder is a real ``mesh-tui --no-ui``
process on every medium, as are the Redis certificate intruders (refused by redis-server before they start).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import mesh_testing
from mesh_core import AgentMeshManager, certs, codec
from mesh_core.backends.grpc._generated import mesh_pb2 as pb
from mesh_core.backends.grpc.tls import Credentials, TlsFiles
from mesh_core.backends.grpc.wire import Wire
from mesh_core.commands import status_data
from mesh_core.errors import MeshError
from mesh_core.events import Problem
from mesh_core.memory.store import item_to_wire
from mesh_core.model import MemoryItem, NodeRole, TaskStatus
from mesh_core.security import ORIGIN_NAME, memory_parts, node_parts, sign
from mesh_testing import NodeProcess, RedisServer, ServerTls, eventually

from ..backends.conftest import FAST
from ..conftest import start_tls_redis

pytestmark = [pytest.mark.slow, pytest.mark.untimed]  # judged by outcome, not by time: run with the fast part

KEY = "matrix-key"
# The guards (a, the client cli-*), the valid peer v, the key and certificate intruders' allowed name i, the node
# r that is removed later. (Exact names: the allowlist matches the host too, and no pattern here is this host.)
ALLOWED = ["a", "v", "i", "r", "cli*"]
WITHOUT_R = [name for name in ALLOWED if name != "r"]
SECURITY = {"api_key": KEY, "allowlist": ALLOWED}
SETTINGS = {**FAST, "sync_interval_seconds": 0.5, "security": SECURITY,
            "task_distribution": {"load_balancing_algorithm": "round_robin", "retry_backoff_seconds": 0.05}}
NOW = dt.datetime.now(dt.UTC)
FRAMES = 3  # memory writes (frames) each intruder sends: counted each, logged once

ALL = ("sqlite", "redis", "grpc")
APPLIES = {
    "valid": ALL,
    "no_key": ALL,
    "wrong_key": ALL,
    # sqlite: one file on one machine, no handshake to refuse a certificate with (its guard is the file's mode)
    "rogue_ca": ("redis", "grpc"),
    "expired": ("redis", "grpc"),
    "not_allowlisted": ALL,
    "signs_as_other": ALL,
    "replay": ALL,
}
CELLS = [pytest.param(case, medium, id=f"{case}-{medium}")
         for case, media in APPLIES.items() for medium in media if medium in mesh_testing.BACKENDS]


# -- the guarded mesh ------------------------------------------------------------------------------------------
class Scene:
    """One cell's mesh: the cluster, its guards, what the guards logged and ran."""

    def __init__(self, medium: str, root: Path, redis_url: str | None, redis_tls: dict[str, str] | None) -> None:
        self.medium = medium
        settings: dict[str, Any] = dict(SETTINGS)
        if redis_tls is not None:
            settings["redis"] = redis_tls
        root.mkdir()
        self.cluster = mesh_testing.Cluster(root, medium, redis_url, settings=settings)
        if medium == "grpc":  # <state_dir>/certs: every node of the mesh speaks mTLS with no setting
            certs.init_ca(self.cluster.state)
            for name in ("a", "v", "i", "r", "x", "cli"):
                certs.issue(self.cluster.state, name, ["127.0.0.1"])
        self.ran: list[Any] = []  # every `guarded` task run by a guard
        self.problems: dict[str, list[Problem]] = {}  # guard name -> its Problem events (its warning lines)
        self._listeners: list[asyncio.Task[None]] = []
        self.a: AgentMeshManager
        self.client: AgentMeshManager
        self.caplog: pytest.LogCaptureFixture

    async def node(self, name: str | None, *, role: NodeRole = NodeRole.WORKER, **extra: Any) -> AgentMeshManager:
        """A started in-process node; a guard worker gets the `guarded` handler, every node its Problems listened to."""
        mesh = AgentMeshManager(self.cluster.node_config(name, **extra), role=role)
        if name == "a":
            async def guarded(payload: Any) -> Any:
                self.ran.append(payload)
                return payload
            mesh.register_handler("guarded", guarded)
        seen: list[Problem] = []  # listened to from before its start: its first view's refusals too
        self._listeners.append(asyncio.ensure_future(_listen(mesh, seen)))
        await asyncio.sleep(0)
        await mesh.start()
        self.problems[mesh.name] = seen
        self.cluster.nodes.append(mesh)
        if self.medium == "grpc":
            self.cluster.add_seed(mesh.backend_info().get("address", ""))
        return mesh

    async def guards(self) -> None:
        self.a = await self.node("a")
        self.client = await self.node(None, role=NodeRole.CLIENT)
        await self.a.sync_memory_item("fact", "from a guard", key="base")
        done = await self.client.wait_task(await self.client.submit_task("echo", {"warm": 1}), timeout=15)
        assert done.status is TaskStatus.SUCCEEDED and done.node_name == "a", done

    async def stop_a(self) -> None:
        """Stop guard a (``node("a")`` starts it again from the same state folder: same id, same replica)."""
        self.cluster.nodes.remove(self.a)
        await self.a.stop()

    async def snapshot(self, intruders: set[str]) -> dict[str, Any]:
        """What the guards hold: node tables, memory replicas, the tasks not submitted by an intruder, runs."""
        out: dict[str, Any] = {"ran": list(self.ran)}
        for mesh in (self.a, self.client):
            out[f"{mesh.name}.members"] = sorted((m.info.node_id, m.info.name) for m in mesh.members())
        store = self.a.services.memory.store  # (a client's replica holds only what it read)
        out["memory"] = sorted((t, k, sorted((repr(s.value), s.origin, sorted(s.vv.items()))
                                             for s in store.siblings(t, k))) for t, k, _ in self.a.memory_keys())
        tasks = await self.a.list_tasks(limit=1000)
        out["tasks"] = sorted((t.task_id, t.status.value, t.node_id) for t in tasks if t.submitter_id not in intruders)
        return out

    def logged(self, guard: AgentMeshManager, counter: str, *who: str) -> list[str]:
        """The lines ``guard`` logged for ``counter`` naming any of ``who``."""
        return [p.detail for p in self.problems.get(guard.name, []) if p.counter == counter
                and any(w and w in p.detail for w in who)]

    async def close(self) -> None:
        for listener in self._listeners:
            listener.cancel()
        await self.cluster.close()


async def _listen(mesh: AgentMeshManager, into: list[Problem]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        async for batch in mesh.subscribe_batches(routine=False):
            into.extend(e for e in batch if isinstance(e, Problem))


async def _holds(mesh: AgentMeshManager, key: str) -> bool:
    return bool(mesh.services.memory.store.siblings("fact", key))


def _tls_files(state: Path, name: str) -> dict[str, str]:
    paths = certs.CertPaths.of(state)
    return {"grpc.tls.ca_file": str(paths.ca_cert), "grpc.tls.cert_file": str(paths.node_cert(name)),
            "grpc.tls.key_file": str(paths.node_key(name))}


def _backend(mesh: AgentMeshManager) -> Any:
    return mesh.services.ctx.backend


@dataclasses.dataclass
class RedisPki:
    """The mesh CA (certificates for the server, the guards and an expired one for i) and a rogue CA (one for i)."""

    root: Path

    def __post_init__(self) -> None:
        self.good, self.rogue = certs.CertPaths.of(self.root / "good"), certs.CertPaths.of(self.root / "rogue")
        certs.init_ca(self.root / "good")
        certs.issue(self.root / "good", "redis", ["127.0.0.1"])
        certs.issue(self.root / "good", "a")
        certs.issue(self.root / "good", "i", days=1, now=NOW - dt.timedelta(days=3))  # ended two days ago
        certs.init_ca(self.root / "rogue")
        certs.issue(self.root / "rogue", "i")

    def client(self, paths: certs.CertPaths, name: str) -> dict[str, str]:
        return {"tls_ca_file": str(self.good.ca_cert), "tls_cert_file": str(paths.node_cert(name)),
                "tls_key_file": str(paths.node_key(name))}


@pytest.fixture(scope="module")
def redis_pki(tmp_path_factory: pytest.TempPathFactory) -> RedisPki:
    return RedisPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_redis(redis_pki: RedisPki) -> Iterator[RedisServer]:
    good = redis_pki.good
    server = start_tls_redis(RedisServer(tls=ServerTls(good.node_cert("redis"), good.node_key("redis"), good.ca_cert)))
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def scene(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Scene]:
    case, medium = request.node.callspec.params["case"], request.node.callspec.params["medium"]
    url, tls = None, None
    if medium == "redis" and case in ("rogue_ca", "expired"):  # the guards on a TLS-only server, with their certificate
        pki = request.getfixturevalue("redis_pki")
        url, tls = request.getfixturevalue("tls_redis").url, pki.client(pki.good, "a")
    elif medium == "redis":
        url = request.getfixturevalue("redis_server").url
    s = Scene(medium, tmp_path / tmp_path.name, url, tls)  # the folder's name: the cluster's name on a shared Redis
    try:
        await s.guards()
        yield s
    finally:
        await s.close()


# -- the matrix ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "medium"), CELLS)
async def test_auth_matrix(scene: Scene, case: str, medium: str, request: pytest.FixtureRequest,
                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mesh")
    caplog.set_level(logging.DEBUG, logger="mesh.grpc")  # (last: the capture handler takes this level)
    scene.caplog = caplog
    if case == "valid":
        await _valid_peer(scene)
        return
    act = {"no_key": _no_key, "wrong_key": _wrong_key, "rogue_ca": _bad_certificate, "expired": _bad_certificate,
           "not_allowlisted": _not_allowlisted, "signs_as_other": _signs_as_other, "replay": _replay}[case]
    await act(scene, case, request)
    # Work the intruder could take goes to the guards only (round robin would hand it every other task).
    for n in range(4):
        done = await scene.client.wait_task(await scene.client.submit_task("echo", {"n": n}), timeout=15)
        assert done.status is TaskStatus.SUCCEEDED and done.node_name == "a", done


async def _valid_peer(s: Scene) -> None:
    """The control: the same steps as every intruder, by a node with the key, an allowed name, a mesh certificate."""
    v = await s.node("v")
    async def takes_work() -> bool:  # joined, with task types (from its first heartbeat on), in both views
        return all(any(m.info.name == "v" and "echo" in m.info.task_types for m in mesh.members())
                   for mesh in (s.a, s.client))
    await eventually(takes_work, timeout=15)
    names = set()
    for n in range(6):  # round robin between a and v: v gets work
        names.add((await s.client.wait_task(await s.client.submit_task("echo", {"n": n}), timeout=15)).node_name)
    assert names == {"a", "v"}, names
    for n in range(FRAMES):
        await v.sync_memory_item("fact", f"from v {n}", key=f"kv{n}")
    await eventually(lambda: _all_held(s.a, [f"kv{n}" for n in range(FRAMES)]), timeout=15)  # its writes applied
    assert await s.client.recall("kv0") == "from v 0"
    done = await v.wait_task(await v.submit_task("guarded", {"from": "v"}), timeout=15)  # its task runs on a
    assert done.status is TaskStatus.SUCCEEDED and done.node_name == "a" and s.ran == [{"from": "v"}]
    refused = {k: n for k, n in s.a.counters.items() if k.startswith("refused")}
    assert not refused and not s.problems["a"], (refused, s.problems["a"])


async def _all_held(mesh: AgentMeshManager, keys: list[str]) -> bool:
    return all([await _holds(mesh, k) for k in keys])


async def _true(value: bool) -> bool:
    return value


def _counts(mesh: AgentMeshManager, *names: str) -> dict[str, int]:
    both = {**_backend(mesh).counters, **mesh.counters}
    return {name: both.get(name, 0) for name in names}


async def _refused_in_place(s: Scene, intruders: set[str], before: dict[str, Any], counted: dict[str, int],
                            logged: dict[str, tuple[str, ...]], *, timeout: float = 20) -> None:
    """Wait until guard a counted at least ``counted`` (node or backend counters), then: each of ``logged``
    (counter -> strings naming the intruder) logged exactly once, and the guards' state as ``before``."""
    def short() -> dict[str, int]:
        return {k: n - v for k, v in _counts(s.a, *counted).items() if (n := counted[k]) > v}
    try:
        await eventually(lambda: _true(not short()), timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"guard a counted short of what the refusals should add: {short()}") from None
    await asyncio.sleep(0.5)  # a moment for anything the refused frames might still do
    for counter, who in logged.items():
        lines = s.logged(s.a, counter, *who)
        assert len(lines) == 1, (counter, lines, s.problems["a"])
        assert any(lines[0] in r.getMessage() for r in s.caplog.records), lines  # the warning line itself
    status = await status_data(s.a)  # the counters as status shows them (the backend's under its medium)
    shown = {**status["local"]["backend"], **status["counters"]}
    assert all(shown.get(k, 0) >= n for k, n in counted.items()), (counted, shown)
    assert await s.snapshot(intruders) == before


async def _intruder_process(s: Scene, name: str, config: Path) -> tuple[NodeProcess, str]:
    """A real ``mesh-tui --no-ui`` intruder: started, then it writes ``FRAMES`` memory items and submits a
    ``guarded`` task (whatever its own node says of them). Returns it and its node id."""
    proc = await asyncio.to_thread(s.cluster.start, name, "--config", str(config))
    status = await asyncio.to_thread(proc.status)
    node_id = status["local"]["node_id"]
    for n in range(FRAMES):
        await asyncio.to_thread(proc.command, f'/mesh_remember kx{n} "from {name}"')
    await asyncio.to_thread(proc.command, "/mesh_submit guarded --payload 1")
    return proc, node_id


async def _intruder_node(name: str, s: Scene, **extra: Any) -> AgentMeshManager:
    """An in-process intruder that writes ``FRAMES`` memory items and submits a ``guarded`` task."""
    mesh = await s.node(name, **extra)
    for n in range(FRAMES):
        with contextlib.suppress(MeshError):  # its own node may refuse it: not the point
            await mesh.sync_memory_item("fact", f"from {name}", key=f"kx{n}")
    with contextlib.suppress(MeshError):  # it may see no node that takes it (it refuses the guards' records)
        await mesh.submit_task("guarded", {"from": name})
    return mesh


def _grpc_refusal(counter: str, why: str) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
    """On gRPC a refused caller is refused on every call (the backend's ``counter``), and told once per node
    (``refused_nodes``, the line naming why)."""
    return {counter: FRAMES, "refused_nodes": 1}, {"refused_nodes": (why,)}


def _store_refusal(node_id: str, *, tasks: bool) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
    """On a shared store the intruder's record, each of its memory frames and its task are refused as read."""
    counted = {"refused_nodes": 1, "refused_memory": FRAMES, **({"refused_tasks": 1} if tasks else {})}
    who = (node_id[:12],)
    return counted, {k: who for k in counted}


# -- the cases -------------------------------------------------------------------------------------------------
async def _no_key(s: Scene, case: str, request: pytest.FixtureRequest) -> None:
    """A real process with the mesh's allowed name i (and on gRPC i's certificate) and no api_key."""
    before = await s.snapshot(set())
    config = s.cluster.variant("no-key.yaml", security={})
    proc, node_id = await _intruder_process(s, "i", config)
    if s.medium == "grpc":
        counted, logged = _grpc_refusal("refused_calls_api_key", "missing or wrong api key")
    else:  # it trusts every record (no key, no allowlist): it routes its task to a, which refuses it
        counted, logged = _store_refusal(node_id, tasks=True)
    await _refused_in_place(s, {node_id}, before, counted, logged)
    assert s.ran == [] and proc.alive


async def _wrong_key(s: Scene, case: str, request: pytest.FixtureRequest) -> None:
    before = await s.snapshot(set())
    intruder = await _intruder_node("i", s, security={"api_key": "guessed-key", "allowlist": ALLOWED})
    if s.medium == "grpc":
        counted, logged = _grpc_refusal("refused_calls_api_key", "missing or wrong api key")
    else:  # it refuses the guards' records in turn (their signatures are not its key's): its task goes nowhere
        counted, logged = _store_refusal(intruder.node_id, tasks=False)
    await _refused_in_place(s, {intruder.node_id}, before, counted, logged)
    assert s.ran == []


async def _bad_certificate(s: Scene, case: str, request: pytest.FixtureRequest) -> None:
    """A certificate for the allowed name i from a CA the mesh does not trust, or from the mesh CA but expired.
    Refused in the TLS handshake, so no guard counts it: gRPC does not tell the server's code of a failed handshake
    (the intruder's own dials fail, counted on its side), and redis-server refuses it before any node sees a byte
    (its log says so; it keeps no counter of refused handshakes) while the intruder exits saying why."""
    before = await s.snapshot(set())
    if s.medium == "grpc":
        if case == "rogue_ca":
            certs.init_ca(s.cluster.root / "rogue")
            certs.issue(s.cluster.root / "rogue", "i", ["127.0.0.1"])
            files = _tls_files(s.cluster.root / "rogue", "i")
        else:
            certs.issue(s.cluster.state, "i", ["127.0.0.1"], days=1, now=NOW - dt.timedelta(days=3), force=True)
            files = _tls_files(s.cluster.state, "i")
        intruder = await _intruder_node("i", s, **files)
        address = _backend(s.a).wire.address
        await eventually(lambda: _true(_backend(intruder).counters["wire_stream_errors_membership"] >= FRAMES),
                         timeout=20, interval=0.1)
        assert any(f"stream to {address} ended" in r.getMessage() for r in s.caplog.records), \
            "no line for the intruder's failed dials"
        assert _counts(s.a, "refused_nodes")["refused_nodes"] == 0
        assert "i" not in {m.info.name for m in s.a.members()}
        await asyncio.sleep(0.5)
        assert await s.snapshot({intruder.node_id}) == before
        return
    # Redis: the guards are on a TLS-only redis-server that asks for a client certificate of the mesh CA.
    pki: RedisPki = request.getfixturevalue("redis_pki")
    server: RedisServer = request.getfixturevalue("tls_redis")
    paths = pki.rogue if case == "rogue_ca" else pki.good
    config = s.cluster.variant("bad-cert.yaml", redis={**pki.client(paths, "i"), "url": server.url,
                                                       "cluster": s.cluster.name})
    log_before = server.log_path.read_text(errors="replace")
    proc = await asyncio.to_thread(s.cluster.spawn, "i", "--config", str(config))
    code = await asyncio.to_thread(proc.proc.wait, 60)
    assert code == 2, proc.log_tail()  # refused before it started: no join, no write, no task
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    why = "(unknown ca)" if case == "rogue_ca" else ": expired (renew it"
    assert len(lines) == 1 and "refused this node's client certificate" in lines[0] and why in lines[0], lines
    s.cluster.processes.remove(proc)
    said = server.log_path.read_text(errors="replace")[len(log_before):]
    # redis-server's own line for the refused handshake
    assert "Error accepting a client connection" in said and "certificate verify failed" in said, said
    await asyncio.sleep(0.5)
    assert await s.snapshot(set()) == before


async def _not_allowlisted(s: Scene, case: str, request: pytest.FixtureRequest) -> None:
    """Node x: the key, a mesh certificate (gRPC), and a name no allowlist pattern matches."""
    before = await s.snapshot(set())
    intruder = await _intruder_node("x", s, security={"api_key": KEY, "allowlist": []})
    if s.medium == "grpc":
        counted, logged = _grpc_refusal("refused_calls_allowlist", "certificate name x is not on the allowlist")
    else:  # it trusts every record: it routes its task to a, which refuses it
        counted, logged = _store_refusal(intruder.node_id, tasks=True)
    await _refused_in_place(s, {intruder.node_id}, before, counted, logged)
    assert s.ran == []


async def _signs_as_other(s: Scene, case: str, request: pytest.FixtureRequest) -> None:
    """One name presented, another signed for. gRPC: x's valid certificate, the allowed name i in its Hello and
    record. SQLite/Redis: a node record and memory frames naming i whose HMACs were made over the same fields
    naming v (a signature lifted from v's records), written into the medium several times."""
    before = await s.snapshot(set())
    if s.medium == "grpc":
        intruder = await _intruder_node("i", s, **_tls_files(s.cluster.state, "x"))
        counted, logged = _grpc_refusal("refused_calls_identity", "certificate names node x but it says it is i")
        await _refused_in_place(s, {intruder.node_id}, before, counted, logged)
        assert s.ran == []
        return
    medium = _backend(s.a)
    record = dataclasses.replace(s.a.local_info(), node_id="f0" * 16, name="i", incarnation=1)
    record.signature = sign(KEY, *node_parts(dataclasses.replace(record, name="v")))
    frames = []
    for n in range(FRAMES):
        wire = item_to_wire(MemoryItem("fact", f"kx{n}", "forged", {record.node_id: 1}, 10**18, record.node_id))
        wire[ORIGIN_NAME] = "v"
        signature = sign(KEY, *memory_parts(wire))
        wire[ORIGIN_NAME], wire["s"] = "i", signature
        frames.append(("fact", f"kx{n}", codec.encode(wire)))
    for _ in range(FRAMES):
        await medium.heartbeat(record)
    await medium.publish_memory(record.node_id, frames)
    counted, logged = {"refused_nodes": 1, "refused_memory": FRAMES}, {"refused_nodes": ("has a bad signature",),
                                                                       "refused_memory": ("has a bad signature",)}
    await _refused_in_place(s, {record.node_id}, before, counted, logged)


async def _replay(s: Scene, case: str, request: pytest.FixtureRequest) -> None:
    """r was allowed and wrote (taken: the control); a is stopped, r writes more (never applied by a) and leaves;
    a starts again with r removed from the allowlist, and what r sent is sent again: refused, counted, logged
    once. SQLite/Redis: r's node record and frames written into the medium again. gRPC: r's frames, in the
    envelope r's push sends, by a replayer holding r's certificate, identity and the key."""
    r = await s.node("r")
    await r.sync_memory_item("fact", "from r while allowed", key="kr")
    await eventually(lambda: _holds(s.a, "kr"), timeout=15)
    keys = [f"kx{n}" for n in range(FRAMES)]
    await s.stop_a()
    for key in keys:
        await r.sync_memory_item("fact", "from r", key=key)
    record = r.local_info()
    frames = [("fact", key, r.services.memory.frame_of(item)) for key in keys
              for item in r.services.memory.store.siblings("fact", key)]
    assert len(frames) == FRAMES
    await s.cluster.crash(r)  # gone without a leave: its record stays in the medium (a leave would mark it left)
    s.a = await s.node("a", security={"api_key": KEY, "allowlist": WITHOUT_R})
    if s.medium == "grpc":
        await eventually(lambda: _true("a" in {m.info.name for m in s.client.members()}), timeout=15)
    else:  # a reads what r left in the medium as it starts, and refuses it
        await eventually(lambda: _true(s.a.counters["refused_memory"] >= FRAMES), timeout=20, interval=0.1)
    await asyncio.sleep(1.0)
    before = await s.snapshot({r.node_id})
    if s.medium != "grpc":
        for _ in range(2):
            await _backend(s.a).heartbeat(record)
            await _backend(s.a).publish_memory(r.node_id, frames)
        counted = {"refused_memory": 3 * FRAMES, "refused_nodes": 1}
        logged: dict[str, tuple[str, ...]] = {"refused_nodes": (r.node_id[:12],), "refused_memory": (r.node_id[:12],)}
        await _refused_in_place(s, {r.node_id}, before, counted, logged)
    else:
        paths = certs.CertPaths.of(s.cluster.state)
        replayer = Wire(node_id=r.node_id, name="r", incarnation=r.incarnation, host="127.0.0.1", port=0,
                        api_key=KEY,
                        tls=Credentials(TlsFiles(paths.ca_cert, paths.node_cert("r"), paths.node_key("r"), "certs")))
        await replayer.start()
        try:
            address = _backend(s.a).wire.address
            for round_ in range(FRAMES):  # each on a new stream (a refused stream ends)
                envelope = pb.MemoryMessage(entries=[
                    pb.MemoryEntry(seq=round_ * FRAMES + i + 1, origin_id=r.node_id, memory_type=t, key=k, frame=f)
                    for i, (t, k, f) in enumerate(frames)])
                assert replayer.send(address, "memory", envelope)
                await asyncio.sleep(0.3)
            counted, logged = _grpc_refusal("refused_calls_allowlist", "certificate name r is not on the allowlist")
            await _refused_in_place(s, {r.node_id}, before, counted, logged)
        finally:
            await replayer.stop()
    assert not any([await _holds(s.a, key) for key in keys])
