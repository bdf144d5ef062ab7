"""The wire of ``grpc_mesh``: this node's gRPC server, and one long-lived stream per peer and kind.

Three kinds of bidirectional stream (``membership``, ``tasks``, ``memory``), one per contract. A node
sends to a peer only on the stream it dialled itself (``send``): each direction of a pair of peers is its
own stream, so neither side waits on the other to open one and a restart on either side heals by itself.
The response direction of a dialled stream carries the peer's ``Hello`` and whatever the peer chooses to
answer on it; everything received, on either direction, reaches the kind's handler with the sender's
identity from its ``Hello``.

Each outgoing stream has a bounded send queue (``queue_limit`` envelopes). A full queue refuses the
envelope (``send`` returns False, ``wire_dropped_<kind>`` counts it): a slow or dead peer costs a bounded
amount of memory, and the layers above recover what was dropped (leases, resends, anti-entropy), as they do
what a stream had written when its peer went (a write completes once gRPC has it, not once the peer has).
What a stream took from the queue and had not written when it ended goes first on the next one. Queued
envelopes are merged before they are written (repeated parts concatenate), so a burst of small messages
travels as a few large ones.

A dropped stream is dialled again with backoff while something is queued for it, and the channel's own
connection attempts are bounded the same way (``CONNECT_TIMEOUT``, ``REDIAL_MAX``); ``forget(address)``
(a peer declared dead or gone) closes its streams and channel and drops what was queued.

Who may call: ``auth`` (the api-key interceptor, the certificate name against the Hello and the allowlist),
``tls`` (the certificates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ...certs import node_dns_name
from ...security import permitted
from . import API_KEY_HEADER
from ._generated import mesh_pb2 as pb
from ._generated import mesh_pb2_grpc as pb_grpc
from .auth import ApiKeyInterceptor, Peer, identity_refusal
from .sendq import SendQueue, StreamWrites, corked
from .tls import RELOAD_SECONDS, Credentials, identity_of

log = logging.getLogger("mesh.grpc")

PROTOCOL_VERSION = pb.PROTOCOL_VERSION_CURRENT
KINDS = ("membership", "tasks", "memory")
ENVELOPES: dict[str, Any] = {"membership": pb.MembershipMessage, "tasks": pb.TaskMessage,
                             "memory": pb.MemoryMessage}
_METHODS = {"membership": "Membership", "tasks": "Tasks", "memory": "Memory"}
QUEUE_LIMIT = 4096  # envelopes queued per outgoing stream before sends are refused
REDIAL_MIN, REDIAL_MAX = 0.05, 2.0  # seconds between attempts to reopen a dropped stream
# A channel's own connection attempts (gRPC's defaults: 20 s per attempt, backoff growing to 120 s) kept in step
# with the redials: a connection tried while the peer was cut off waits on TCP's SYN backoff, and one more try
# after a long outage would otherwise come up to two minutes after the peer is back.
CONNECT_TIMEOUT = 3.0  # seconds one connection attempt (TCP, TLS, HTTP/2) may take before a fresh one is made
RECONNECT_MIN = 0.2  # seconds before the first fresh attempt after a failed one; growing (x1.6) to REDIAL_MAX
LOGGED_PEERS = 10_000  # (kind, peer) pairs whose first handler failure was logged
IDLE_CLOSE_SECONDS = 300.0  # an outgoing stream with nothing to send for this long is closed (dialled again on use)


StreamHandler = Callable[[Peer, Any], None]
UnaryHandler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def version_refusal(version: int) -> str:
    return (f"peer speaks mesh protocol {version}, this node speaks {PROTOCOL_VERSION}: "
            f"run the same mesh-tui release on every node")


def closed_under_call() -> bool:
    """After a unary or server-streaming call raised ``asyncio.CancelledError``: True when that was the channel
    being closed under the call (``forget``: the peer was declared dead or gone; grpc.aio cancels the calls in
    flight), which the caller treats as a failed call; False when the calling task itself is being cancelled,
    which must go on."""
    task = asyncio.current_task()
    return task is None or not task.cancelling()


def channel_options(max_message_bytes: int, keepalive_seconds: float) -> list[tuple[str, Any]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(max(1.0, keepalive_seconds / 2) * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),
            ("grpc.min_reconnect_backoff_ms", int(CONNECT_TIMEOUT * 1000)),  # gRPC's name for the attempt's timeout
            ("grpc.initial_reconnect_backoff_ms", int(RECONNECT_MIN * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(REDIAL_MAX * 1000))]


class Wire:
    """This node's server and its outgoing streams. ``start()`` binds; ``send()`` writes; ``stop()`` ends all."""

    def __init__(self, *, node_id: str, name: str, incarnation: int, host: str, port: int, advertise: str = "",
                 client: bool = False, max_message_bytes: int = 4 * 1024 * 1024, keepalive_seconds: float = 10.0,
                 api_key: str | None = None, queue_limit: int = QUEUE_LIMIT,
                 counters: Counter[str] | None = None, tls: Credentials | None = None,
                 allowlist: tuple[str, ...] = ()) -> None:
        self.node_id, self.name, self.incarnation, self.client = node_id, name, incarnation, client
        self.host, self.port, self.advertise = host, port, advertise
        self.max_message_bytes = max_message_bytes
        self.keepalive_seconds = keepalive_seconds
        self.api_key = api_key
        self.queue_limit = queue_limit
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._unary: dict[str, UnaryHandler] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._outgoing: dict[tuple[str, str], _Outgoing] = {}
        # (peer address, kind) → its open stream to us: the queue of what goes back on it, and the stream's reader
        self._replies: dict[tuple[str, str], tuple[SendQueue, asyncio.Future[None]]] = {}
        self._closing = False
        self._failed_from: set[tuple[str, str]] = set()
        self.rng = random.Random()
        # Told of each call refused (api key, identity, allowlist), with the caller as far as it is known.
        self.on_refusal: Callable[[Peer, str], None] | None = None
        self.tls = tls
        self.allowlist = allowlist
        # The node name expected at an address (from the members), checked by the TLS handshake when known.
        self.expected_name: Callable[[str], str | None] = lambda address: None
        self._retired: list[grpc.aio.Channel] = []  # channels made with certificates since replaced
        self._channel_gen: dict[str, tuple[int, str | None]] = {}  # address → (tls generation, target name)
        self._watcher: asyncio.Task[None] | None = None
        # node id → the name its certificate gave it, as first seen on a TLS call (an id stays with its name)
        self._certified: dict[str, str] = {}

    # -- identity ----------------------------------------------------------------------------------
    def hello(self) -> pb.Hello:
        return pb.Hello(protocol_version=PROTOCOL_VERSION, node_id=self.node_id, node_name=self.name,
                        incarnation=self.incarnation, address=self.address, client=self.client)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((API_KEY_HEADER, self.api_key),) if self.api_key else ()

    # -- handlers ----------------------------------------------------------------------------------
    def on_stream(self, kind: str, handler: StreamHandler) -> None:
        """Call ``handler(peer, envelope)`` for every envelope of ``kind`` received (either direction)."""
        self._stream_handlers[kind] = handler

    def on_unary(self, method: str, handler: UnaryHandler) -> None:
        """Serve unary (or server-streaming) method ``method`` of the Mesh service with ``handler``."""
        self._unary[method] = handler

    def dispatch(self, kind: str, peer: Peer, envelope: Any) -> None:
        handler = self._stream_handlers.get(kind)
        if handler is None:
            return
        try:
            handler(peer, envelope)
        except Exception:  # one bad envelope never ends a stream
            self.counters[f"wire_handler_errors_{kind}"] += 1
            key = (kind, peer.node_id or peer.address)
            if key not in self._failed_from and len(self._failed_from) < LOGGED_PEERS:
                self._failed_from.add(key)  # logged once per peer and kind; the counter counts every one
                log.exception("grpc %s handler failed on an envelope from %s (further failures are counted only)",
                              kind, peer.name or peer.address)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> str:
        """Bind the server; return the address other nodes dial (``advertise`` or ``host:bound port``)."""
        if self.tls is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_certificates(), name="grpc-tls")
        if self.client:
            self.address = ""
            return self.address
        options = channel_options(self.max_message_bytes, self.keepalive_seconds)
        options += [("grpc.so_reuseport", 0), ("grpc.http2.min_ping_interval_without_data_ms", 1000)]
        interceptors = [ApiKeyInterceptor(self)] if self.api_key else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        pb_grpc.add_MeshServicer_to_server(_Servicer(self), server)
        where = f"{_bracketed(self.host)}:{self.port}"
        bound = (server.add_secure_port(where, self.tls.server_credentials()) if self.tls is not None
                 else server.add_insecure_port(where))
        if not bound:
            raise OSError(f"grpc: could not listen on {self.host}:{self.port}")
        await server.start()
        self._server = server
        self.port = bound
        if self.advertise:
            host, _, port = self.advertise.rpartition(":")
            self.address = f"{host}:{bound}" if port in ("", "0") else self.advertise
        else:
            self.address = f"{_bracketed(self.host)}:{bound}"
        return self.address

    async def stop(self, grace: float = 0.0) -> None:
        """Close every outgoing stream and channel and stop the server (``grace`` seconds for calls under way)."""
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        for out in list(self._outgoing.values()):
            out.close()
        self._outgoing.clear()
        for channel in [*self._channels.values(), *self._retired]:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)
        self._channels.clear()
        self._retired.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.stop(grace)
            self._server = None

    # -- dialling ----------------------------------------------------------------------------------
    def channel(self, address: str) -> grpc.aio.Channel:
        """The channel to ``address``. With TLS: this node's certificate as last read, and, when the members say
        which node listens there, that node's name as the target the server's certificate must name; a channel
        made before either changed is retired (its streams go on) and a new one made."""
        channel = self._channels.get(address)
        if channel is not None and (self.tls is None or self._channel_gen.get(address) == self._made(address)):
            return channel
        if channel is not None:
            self._retired.append(channel)
        channel = self._channels[address] = self._new_channel(address)
        if self.tls is not None:
            self._channel_gen[address] = self._made(address)
        return channel

    def _made(self, address: str) -> tuple[int, str | None]:
        """What a TLS channel to ``address`` is made from: the certificates' generation and the expected name."""
        assert self.tls is not None
        return self.tls.generation, self.expected_name(address)

    def _new_channel(self, address: str, *, own_connection: bool = False) -> grpc.aio.Channel:
        """A channel to ``address``; ``own_connection``: one not shared with the other channels there (gRPC's
        subchannel pool), whose first attempt is made now whatever theirs are waiting for."""
        options = channel_options(self.max_message_bytes, self.keepalive_seconds)
        if own_connection:
            options.append(("grpc.use_local_subchannel_pool", 1))
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=options)
        expected = self.expected_name(address)
        if expected:
            options.append(("grpc.ssl_target_name_override", node_dns_name(expected)))
        return grpc.aio.secure_channel(address, self.tls.channel_credentials(), options=options)

    async def _watch_certificates(self) -> None:
        """Read the certificate files again when they change (rotation without restart)."""
        assert self.tls is not None
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            try:
                if self.tls.refresh():
                    self.counters["tls_reloads"] += 1
            except Exception:  # the watch goes on whatever one look did
                log.exception("grpc tls: looking at the certificate files failed")
            if len(self._retired) > 64:  # old channels' streams have long been redialled
                old, self._retired = self._retired[:-64], self._retired[-64:]
                for channel in old:
                    with contextlib.suppress(Exception):
                        await channel.close(grace=None)

    def stub(self, address: str) -> pb_grpc.MeshStub:
        return pb_grpc.MeshStub(self.channel(address))

    async def answers(self, address: str, timeout: float) -> bool:
        """Whether the node at ``address`` answers a Handshake within ``timeout`` seconds: a direct probe, for a
        decision that must not rest on gossip alone. A channel dialled for the probe alone is closed again when
        nobody answered (the probed node is mostly one declared dead, whose channel ``forget`` closed already).

        A channel that is not connected now is not used: one that failed before waits out its reconnect backoff
        (up to ``REDIAL_MAX``) and fails a call at once meanwhile, so a node back from a cut a moment ago would
        read as gone (was: a node that had just healed took over a live owner's finished tasks and ran them
        again). The probe then dials a channel of its own and waits for it to connect, within ``timeout``. That
        channel has its own connection: channels made with the same options share gRPC's connections to an
        address, backoff included, so a second channel alone waited out the same backoff and a probe made just
        as one began (1.6-2.4 s at most) timed out (a CI run)."""
        channel = self._channels.get(address)
        if channel is not None and channel.get_state() is not grpc.ChannelConnectivity.READY:
            probe = self._new_channel(address, own_connection=True)
            try:
                await pb_grpc.MeshStub(probe).Handshake(self.hello(), metadata=self.metadata(), timeout=timeout,
                                                        wait_for_ready=True)
            except grpc.aio.AioRpcError:
                return False
            finally:
                with contextlib.suppress(Exception):
                    await probe.close(grace=None)
            return True
        try:
            await self.stub(address).Handshake(self.hello(), metadata=self.metadata(), timeout=timeout)
        except grpc.aio.AioRpcError:
            if channel is None and not any(a == address for a, _ in self._outgoing):  # no stream took it up
                await self._close_channel(address)
            return False
        except asyncio.CancelledError:
            if closed_under_call():
                return False
            raise
        return True

    def send(self, address: str, kind: str, envelope: Any) -> bool:
        """Queue ``envelope`` for ``address`` on this node's stream of ``kind``; False when refused (queue full,
        no address, stopping). The wire takes the envelope: do not change it afterwards."""
        if self._closing or not address or address == self.address:
            return False
        key = (address, kind)
        back = self._replies.get(key, (None,))[0]
        if back is not None:  # the peer's own stream to us is open: answer on it (no second connection)
            if back.put(envelope):
                return True
            self.counters[f"wire_dropped_{kind}"] += 1
            return False
        out = self._outgoing.get(key)
        if out is None:
            out = self._outgoing[key] = _Outgoing(self, address, kind)
        if not out.put(envelope):
            self.counters[f"wire_dropped_{kind}"] += 1
            return False
        return True

    def queued(self, address: str, kind: str) -> int:
        out = self._outgoing.get((address, kind))
        return len(out.queue) if out is not None else 0

    async def forget(self, address: str) -> None:
        """Close our streams and channel to ``address``, end its streams to us, and drop what was queued for it.

        Its streams to us end too: a peer declared dead may only be cut off, and its stream stays open here
        (nothing tells a server a silent connection is gone before keepalive does) while the peer has closed its
        end; what this node sent it back on that stream once it is heard again would be lost. After ``forget``
        the peer is answered on a stream this node dials, or on the next one the peer opens."""
        for kind in KINDS:
            key = (address, kind)
            out = self._outgoing.pop(key, None)
            if out is not None:
                out.close()
            inbound = self._replies.pop(key, None)
            if inbound is not None:
                inbound[1].cancel()  # its serving loop wakes (the reader's done callback) and ends the call
        await self._close_channel(address)

    async def _close_channel(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        self._channel_gen.pop(address, None)
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    # -- serving -----------------------------------------------------------------------------------
    async def check_caller(self, hello: pb.Hello | None, context: grpc.aio.ServicerContext) -> Peer:
        """Refuse a call in the wrong protocol version, or (with TLS) whose Hello names another node than the
        caller's certificate, or whose certificate name is not on the allowlist (aborts the call); the caller's
        identity. The api key was checked before (``auth.ApiKeyInterceptor``)."""
        if hello is None or hello.protocol_version != PROTOCOL_VERSION:
            self.counters["refused_calls_version"] += 1
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                version_refusal(hello.protocol_version if hello is not None else 0))
        assert hello is not None
        peer = Peer.of(hello)
        if self.tls is not None:
            why = identity_refusal(identity_of(context.auth_context()), hello, self.allowlist, self._certified)
            if why:
                counter, detail = why
                self.counters[counter] += 1
                if self.on_refusal is not None:
                    self.on_refusal(peer, detail)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, detail)
        return peer

    def certified_name(self, node_id: str) -> str | None:
        """The name node ``node_id`` called in under with a certificate (TLS only; None when not seen)."""
        return self._certified.get(node_id)

    async def serve_stream(self, kind: str, requests: AsyncIterator[Any],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        envelope_type = ENVELOPES[kind]
        try:
            first = await anext(aiter(requests))
        except StopAsyncIteration:
            return
        peer = await self.check_caller(first.hello if first.HasField("hello") else None, context)
        yield envelope_type(hello=self.hello())
        first.ClearField("hello")
        if first.ByteSize():
            self.dispatch(kind, peer, first)
        # While the peer's stream is open, what this node sends to the peer's address may go back on it (see
        # ``send``): a peer that cannot be dialled (a client behind NAT) is still answered.
        key = (peer.address, kind)
        replies = SendQueue(self.queue_limit)

        async def read() -> None:
            async for envelope in requests:
                self.dispatch(kind, peer, envelope)
        reader = asyncio.ensure_future(read())
        reader.add_done_callback(lambda _: replies.wake())
        if peer.address:
            self._replies[key] = (replies, reader)
        try:
            while not reader.done():
                if replies:
                    yield replies.take(self.max_message_bytes)
                else:
                    await replies.wait()
                    await corked()
        finally:
            # The reader ends with the stream, however it ends (a cancelled call closes this generator mid-wait).
            reader.cancel()
            if self._replies.get(key, (None,))[0] is replies:
                del self._replies[key]

    def unary_handler(self, method: str) -> UnaryHandler | None:
        return self._unary.get(method)

    def server_hello_ok(self, address: str, kind: str, hello: pb.Hello) -> bool:
        """On a stream this node dialled with TLS: the server's Hello must name the node its certificate was
        checked for (the expected name, the handshake's target); otherwise the stream is dropped."""
        if self.tls is None:
            return True
        expected = self._channel_gen.get(address, (0, None))[1]
        if expected is None or hello.node_name == expected:
            if not expected and self.allowlist and not permitted(self.allowlist, hello.node_name):
                why = f"it says it is {hello.node_name}, which is not on the allowlist"
            else:
                return True
        else:
            why = f"its certificate names node {expected} but it says it is {hello.node_name or '(no name)'}"
        self.counters["refused_calls_identity"] += 1
        if self.on_refusal is not None:
            self.on_refusal(Peer.of(hello), why)
        log.debug("grpc %s at %s refused: %s", kind, address, why)
        return False


class _Outgoing:
    """This node's stream of one kind to one address: a bounded queue drained by one task."""

    def __init__(self, wire: Wire, address: str, kind: str) -> None:
        self.wire, self.address, self.kind = wire, address, kind
        self.queue = SendQueue(wire.queue_limit)
        self.peer: Peer | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # envelopes a stream took from the queue and had not written when it ended: the next stream sends them first
        self._leftover: deque[Any] = deque()

    def put(self, envelope: Any) -> bool:
        if self._closed or not self.queue.put(envelope):
            return False
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"grpc-{self.kind}-{self.address}")
        return True

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self.queue.clear()
        self._leftover.clear()

    async def _run(self) -> None:
        wire = self.wire
        delay = REDIAL_MIN
        envelope_type = ENVELOPES[self.kind]
        while not self._closed and (self._leftover or self.queue):
            stream = StreamWrites()
            call = getattr(wire.stub(self.address), _METHODS[self.kind])(self._requests(envelope_type, stream),
                                                                       metadata=wire.metadata())
            try:
                async for reply in call:
                    if reply.HasField("hello"):
                        if reply.hello.protocol_version != PROTOCOL_VERSION:
                            wire.counters["refused_calls_version"] += 1
                            log.warning("grpc %s at %s: %s", self.kind, self.address,
                                        version_refusal(reply.hello.protocol_version))
                            call.cancel()
                            break
                        if not wire.server_hello_ok(self.address, self.kind, reply.hello):
                            call.cancel()
                            break
                        self.peer = Peer.of(reply.hello)
                        delay = REDIAL_MIN
                        reply.ClearField("hello")
                    if self.peer is not None and reply.ByteSize():
                        wire.dispatch(self.kind, self.peer, reply)
            except grpc.aio.AioRpcError as exc:
                wire.counters[f"wire_stream_errors_{self.kind}"] += 1
                log.debug("grpc %s stream to %s ended: %s %s", self.kind, self.address, exc.code(), exc.details())
            except asyncio.CancelledError:
                call.cancel()
                raise
            finally:
                # The ended stream takes nothing more from the queue, and what it had not written goes first next.
                self._leftover.extendleft(reversed(stream.end()))
            self.peer = None
            if self._closed:
                return
            await asyncio.sleep(delay * (0.5 + wire.rng.random()))
            delay = min(REDIAL_MAX, delay * 2)

    async def _requests(self, envelope_type: Any, stream: StreamWrites) -> AsyncIterator[Any]:
        """The stream's writes: what an earlier stream left unwritten, then queued envelopes merged, up to
        ``MERGE_MAX`` of them and while the merged size stays within half of ``max_message_bytes`` (an envelope
        that would pass it starts the next write).

        gRPC may still ask a finished call's requests for one more write, or drop them mid-wait: the waits and
        the envelope handed over and not yet written are ``stream``'s, which ``_run`` ends with the call."""
        yield envelope_type(hello=self.wire.hello())
        queue = self.queue
        while not stream.ended:
            if self._leftover:
                envelope = self._leftover.popleft()
            elif queue:
                envelope = queue.take(self.wire.max_message_bytes)
            else:
                stream.queue = queue
                woken = await queue.wait(IDLE_CLOSE_SECONDS)
                stream.queue = None
                if not woken:
                    return  # idle (the next send dials again), or ended meanwhile
                await corked()
                continue
            stream.writing = envelope
            yield envelope
            stream.writing = None  # asked for the next one: that one was written


class _Servicer(pb_grpc.MeshServicer):
    """The Mesh service: streams go to the wire's handlers, unary calls to the registered ones."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Hello:
        await self.wire.check_caller(request, context)
        return self.wire.hello()

    async def Membership(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        async for envelope in self.wire.serve_stream("membership", request_iterator, context):
            yield envelope

    async def Tasks(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        async for envelope in self.wire.serve_stream("tasks", request_iterator, context):
            yield envelope

    async def Memory(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        async for envelope in self.wire.serve_stream("memory", request_iterator, context):
            yield envelope

    async def _unary(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.wire.check_caller(request.caller if request.HasField("caller") else None, context)
        handler = self.wire.unary_handler(method)
        if handler is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"this node does not serve {method}")
        assert handler is not None
        return await handler(request, context)

    async def Digest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("Digest", request, context)

    async def Pull(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        chunks = await self._unary("Pull", request, context)
        for chunk in chunks:
            yield chunk

    async def Submit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("Submit", request, context)

    async def GetTasks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("GetTasks", request, context)

    async def Cancel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("Cancel", request, context)

    async def Replay(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("Replay", request, context)

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("Status", request, context)

    async def Recall(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("Recall", request, context)

    async def Remember(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary("Remember", request, context)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
