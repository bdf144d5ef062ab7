"""The peer-to-peer ``grpc_mesh`` backend: nodes talk to each other over the ``mesh.v1.Mesh`` service of
``proto/mesh.proto`` (generated code in ``_generated``, remade by ``make proto``), with no shared store.

Importing this package imports nothing from grpc; only the modules that serve or dial do.
"""
