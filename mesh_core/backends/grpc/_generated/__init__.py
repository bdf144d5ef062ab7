"""Code generated from proto/mesh.proto by ``make proto`` (mesh_core/backends/grpc/gen.py). Do not edit."""
