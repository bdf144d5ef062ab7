"""The committed generated code is what ``make proto`` makes from proto/mesh.proto, and imports as a package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mesh_core.backends.grpc import gen

ROOT = Path(__file__).resolve().parents[2]
STALE = "the committed code in mesh_core/backends/grpc/_generated is stale: run `make proto` and commit the result"


def _regenerate(out: Path) -> None:
    # A subprocess, as make proto runs it: protoc writes into the process's descriptor pool nothing of ours.
    done = subprocess.run([sys.executable, "-m", "mesh_core.backends.grpc.gen", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def _descriptor(module: Path) -> bytes:
    """The serialized FileDescriptorProto a generated mesh_pb2.py registers: the .proto's content, whatever
    protoc version wrote the code around it."""
    found = re.search(r"AddSerializedFile\((b'.*?')\)\n", module.read_text(), re.S)
    assert found is not None, f"{module} registers no descriptor"
    value = eval(found.group(1), {"__builtins__": {}})  # a bytes literal protoc wrote
    assert isinstance(value, bytes)
    return value


def _generated_by(service: Path) -> str:
    found = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", service.read_text(), re.M)
    assert found is not None, f"{service} names no GRPC_GENERATED_VERSION"
    return found.group(1)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    _regenerate(out)
    return out


def test_committed_descriptor_matches_the_proto(fresh: Path) -> None:
    assert _descriptor(fresh / "mesh_pb2.py") == _descriptor(gen.GENERATED / "mesh_pb2.py"), STALE


def test_committed_files_are_byte_identical_to_a_fresh_generation(fresh: Path) -> None:
    from grpc_tools import grpc_version

    committed_by = _generated_by(gen.GENERATED / "mesh_pb2_grpc.py")
    if committed_by != grpc_version.VERSION:
        pytest.skip(f"grpcio-tools {grpc_version.VERSION} is installed, the committed code was made by {committed_by}: "
                    "only the descriptor is compared")
    for name in gen.FILES:
        assert (fresh / name).read_bytes() == (gen.GENERATED / name).read_bytes(), f"{name}: {STALE}"


def test_service_module_imports_its_messages_package_relative() -> None:
    text = (gen.GENERATED / "mesh_pb2_grpc.py").read_text()
    assert gen.RELATIVE_IMPORT in text and gen.ABSOLUTE_IMPORT + "\n" not in text.replace(gen.RELATIVE_IMPORT, "")


def test_generated_code_imports_as_a_package_and_names_the_protocol_version() -> None:
    from mesh_core.backends.grpc._generated import mesh_pb2, mesh_pb2_grpc

    assert mesh_pb2.PROTOCOL_VERSION_CURRENT == 1
    assert mesh_pb2.DESCRIPTOR.package == "mesh.v1"
    assert hasattr(mesh_pb2_grpc, "MeshServicer") and hasattr(mesh_pb2_grpc, "add_MeshServicer_to_server")


def test_pinned_minimums_satisfy_the_generated_code_guards() -> None:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    grpcio = next(d for d in deps if d.startswith("grpcio>="))
    protobuf = next(d for d in deps if d.startswith("protobuf>="))
    needed_grpc = _generated_by(gen.GENERATED / "mesh_pb2_grpc.py")
    found = re.search(r"^# Protobuf Python Version: (\S+)$", (gen.GENERATED / "mesh_pb2.py").read_text(), re.M)
    assert found is not None

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))

    assert version(grpcio.split(">=")[1]) >= version(needed_grpc), f"{grpcio}: the generated code needs {needed_grpc}"
    assert version(protobuf.split(">=")[1]) >= version(found.group(1)), f"{protobuf}: gencode is {found.group(1)}"


def test_a_proto_that_does_not_compile_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.proto"
    bad.write_text('syntax = "proto3";\npackage mesh.v1;\nmessage Broken { string x = ; }\n')
    with pytest.raises(RuntimeError, match="protoc failed on .*mesh.proto"):
        gen.generate(tmp_path / "out", proto=bad)


def test_importing_the_engine_loads_no_grpc() -> None:
    """grpc is loaded only by a node that uses the grpc backend (start-up time of CLI and SQLite/Redis nodes)."""
    code = ("import sys, mesh_core, mesh_core.manager, mesh_core.backends, mesh_core.backends.grpc, mesh_tui.cli; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')); print(bad); "
            "sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
