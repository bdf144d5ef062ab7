"""Who may call a ``grpc_mesh`` node: the caller-authentication half of the wire (``tls`` makes the certificates).

With ``security.api_key`` every call carries it as the ``x-mesh-api-key`` metadata and a server interceptor
(``ApiKeyInterceptor``) refuses any call without it (UNAUTHENTICATED, compared in constant time, counted
``refused_calls_api_key``) before a handler sees a byte. With TLS the caller's identity is the node name in its
certificate (``identity_refusal``, asked by ``Wire.check_caller``): a Hello naming another node is refused
(``refused_calls_identity``), and with ``security.allowlist`` a certificate name no pattern matches is refused
(``refused_calls_allowlist``), each logged once per node by the wire's ``on_refusal``. Without TLS the server of
a dialled stream is not authenticated to the caller beyond the address it dialled (the api key proves the caller
to the server, not the other way).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from ...security import permitted
from . import API_KEY_HEADER
from ._generated import mesh_pb2 as pb
from .tls import identity_of

if TYPE_CHECKING:
    from .wire import Wire


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of a stream or call, as its ``Hello`` said."""

    node_id: str
    name: str
    address: str
    incarnation: int
    client: bool

    @classmethod
    def of(cls, hello: pb.Hello) -> Peer:
        return cls(hello.node_id, hello.node_name, hello.address, hello.incarnation, hello.client)


def identity_refusal(certified: str | None, hello: pb.Hello, allowlist: tuple[str, ...],
                     first_names: dict[str, str]) -> tuple[str, str] | None:
    """Why a TLS caller whose certificate names ``certified`` is refused: (counter, detail). A Hello must
    name the certificate's node, and a node id keeps the name it was first certified with (``first_names``:
    node id → that name, filled in here)."""
    if certified is None:
        return "refused_calls_identity", "its certificate names no mesh node"
    if hello.node_name != certified and not numbered(hello.node_name, certified):
        return ("refused_calls_identity",
                f"its certificate names node {certified} but it says it is {hello.node_name or '(no name)'}")
    if not permitted(allowlist, certified):
        return "refused_calls_allowlist", f"its certificate name {certified} is not on the allowlist"
    if hello.node_id:
        first = first_names.setdefault(hello.node_id, hello.node_name)
        if first != hello.node_name:
            return ("refused_calls_identity", f"it says it is node id {hello.node_id[:12]}, which is "
                                              f"{first}'s, under {certified}'s certificate")
        if len(first_names) > 100_000:
            first_names.clear()
    return None


def numbered(name: str, base: str) -> bool:
    """Whether ``name`` is ``base-N``: a one-shot client's name (``identity.ephemeral``: NAME-pid) under certificate
    ``base``. (A client's Hello does not say it is one: it serves answers like any node, so the rule holds for
    every caller: a certificate for NAME also covers NAME-<digits>.)"""
    head, dash, tail = name.rpartition("-")
    return bool(dash) and head == base and tail.isdigit()


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Every call must carry ``security.api_key`` as ``x-mesh-api-key`` metadata; others are refused
    (UNAUTHENTICATED) before any handler runs, counted ``refused_calls_api_key`` and told to ``on_refusal``."""

    DETAIL = f"missing or wrong api key ({API_KEY_HEADER} metadata): give this mesh's security.api_key"

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        assert wire.api_key
        self._key = wire.api_key.encode()

    def allowed(self, metadata: Any) -> bool:
        given: Any = b""
        for key, value in metadata or ():
            if key == API_KEY_HEADER:
                given = value
        if isinstance(given, str):
            given = given.encode()
        return isinstance(given, bytes) and hmac.compare_digest(given, self._key)

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or self.allowed(handler_call_details.invocation_metadata):
            return handler
        return self._refusal(handler)

    def _refusal(self, handler: Any) -> Any:
        wire, detail = self.wire, self.DETAIL

        async def refuse(context: grpc.aio.ServicerContext) -> None:
            wire.counters["refused_calls_api_key"] += 1
            if wire.on_refusal is not None:
                wire.on_refusal(caller_of(context, wire), "it has a missing or wrong api key")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

        if handler.response_streaming:
            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await refuse(context)
                yield None  # never reached: abort raised

            make = grpc.stream_stream_rpc_method_handler if handler.request_streaming \
                else grpc.unary_stream_rpc_method_handler
            return make(streaming, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(context)

        make = grpc.stream_unary_rpc_method_handler if handler.request_streaming \
            else grpc.unary_unary_rpc_method_handler
        return make(unary, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


def caller_of(context: grpc.aio.ServicerContext, wire: Wire) -> Peer:
    """A refused caller as far as the call shows it: its certificate's node name (TLS) and its host."""
    name = identity_of(context.auth_context()) if wire.tls is not None else None
    host = (context.peer() or "").rpartition(":")[0]
    return Peer(node_id="", name=name or "", address=host, incarnation=0, client=False)
