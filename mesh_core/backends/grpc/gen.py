"""Regenerate the Python code for ``proto/mesh.proto`` into ``_generated/`` (what ``make proto`` runs).

    python -m mesh_core.backends.grpc.gen [--out DIR]

Needs grpcio-tools (the test extra). protoc writes ``import mesh_pb2`` in the service module, which only
works with the folder on ``sys.path``; the import is rewritten package-relative so the code imports as
``mesh_core.backends.grpc._generated``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTO = ROOT / "proto" / "mesh.proto"
GENERATED = Path(__file__).resolve().parent / "_generated"
# What the generated package holds: protoc's three files and our __init__.
FILES = ("__init__.py", "mesh_pb2.py", "mesh_pb2.pyi", "mesh_pb2_grpc.py")

INIT = '"""Code generated from proto/mesh.proto by ``make proto`` (mesh_core/backends/grpc/gen.py). Do not edit."""\n'
ABSOLUTE_IMPORT = "import mesh_pb2 as mesh__pb2"
RELATIVE_IMPORT = "from . import mesh_pb2 as mesh__pb2"


def generate(out: Path = GENERATED, proto: Path = PROTO) -> list[Path]:
    """Write the generated package for ``proto`` into ``out`` (created if missing); return the files written.

    Raises RuntimeError naming protoc's complaint when the .proto does not compile.
    """
    import grpc_tools
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"  # google/protobuf/*.proto
    status = protoc.main(["grpc_tools.protoc", f"-I{proto.parent}", f"-I{well_known}", f"--python_out={out}",
                          f"--pyi_out={out}", f"--grpc_python_out={out}", str(proto)])
    if status != 0:
        raise RuntimeError(f"protoc failed on {proto} (exit {status}); its message is above")
    service = out / "mesh_pb2_grpc.py"
    text = service.read_text()
    if ABSOLUTE_IMPORT not in text:
        raise RuntimeError(f"{service} has no line {ABSOLUTE_IMPORT!r} to make package-relative: "
                           "grpcio-tools changed its output, update gen.py")
    service.write_text(text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT, 1))
    (out / "__init__.py").write_text(INIT)
    return [out / name for name in FILES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh_core.backends.grpc.gen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GENERATED, help=f"where to write (default {GENERATED})")
    args = parser.parse_args(argv)
    try:
        written = generate(args.out)
    except (ImportError, RuntimeError) as exc:
        print(f"gen: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
