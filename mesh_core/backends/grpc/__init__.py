"""The peer-to-peer ``grpc_mesh`` backend: nodes talk to each other over the ``mesh.v1.Mesh`` service of
``proto/mesh.proto`` (generated code in ``_generated``, remade by ``make proto``), with no shared store.

The parts, along the three contracts, are mixins over ``core.GrpcCore`` (the wire, the private store, the
members): ``membership`` (SWIM over the Membership streams), ``tasks`` (tasks with an owner) and
``memory`` (memory over streams, anti-entropy by Digest/Pull).

Importing this package imports nothing from grpc; ``GrpcBackend`` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

API_KEY_HEADER = "x-mesh-api-key"  # the call metadata that carries security.api_key (proto/mesh.proto)

if TYPE_CHECKING:
    from .backend import GrpcBackend


def __getattr__(name: str) -> Any:
    if name == "GrpcBackend":
        from .backend import GrpcBackend
        return GrpcBackend
    raise AttributeError(name)


__all__ = ["API_KEY_HEADER", "GrpcBackend"]
