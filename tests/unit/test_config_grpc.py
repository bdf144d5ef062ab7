"""grpc_mesh's config surface: seeds, advertise, host and port from file, env and CLI flags, and their checks."""

from __future__ import annotations

import socket
import textwrap

import pytest

from mesh_core.addresses import split_host_port
from mesh_core.config import GrpcConfig, advertise_address, load_config
from mesh_core.errors import ConfigError
from mesh_tui.cli import _overrides, build_parser


def load(path=None, *, env=None, overrides=None):
    return load_config(path, env=env or {}, overrides=overrides or {}, use_default_file=False)


def cli(*argv: str):
    return load(overrides=_overrides(build_parser().parse_args(list(argv))))


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.5:9901", ("10.0.0.5", 9901)),
    ("hub1.lan:1", ("hub1.lan", 1)),
    ("[::1]:65535", ("::1", 65535)),
    (" h:80 ", ("h", 80)),
])
def test_host_port_parses(text, expected):
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["h", "h:", ":9901", "h:0", "h:65536", "h:-1", "h:x", "::1:9901", "[]:1",
                                  "[::1:1", "a b:1", "redis://h:1", "user@h:1"])
def test_host_port_refuses(text):
    assert split_host_port(text) is None


def test_defaults():
    g = load().grpc
    assert (g.port, g.host, g.advertise, g.seeds) == (9901, "127.0.0.1", "", ())


def test_seeds_and_advertise_from_a_file(tmp_path):
    p = tmp_path / "mesh.yaml"
    p.write_text(textwrap.dedent("""
        agent_mesh:
          grpc: {port: 0, host: 0.0.0.0, advertise: "hub1.lan:9901", seeds: ["10.0.0.5:9901", "[fe80::1]:9901"]}
    """), encoding="utf-8")
    g = load(p).grpc
    assert g.port == 0  # an ephemeral port, chosen at bind time
    assert g.host == "0.0.0.0"
    assert g.advertise == "hub1.lan:9901"
    assert g.seeds == ("10.0.0.5:9901", "[fe80::1]:9901")


def test_env_sets_host_advertise_and_seeds():
    g = load(env={"MESH_GRPC_HOST": "0.0.0.0", "MESH_GRPC_ADVERTISE": "10.0.0.9:9901",
                  "MESH_GRPC_SEEDS": "a:1, b:2", "MESH_GRPC_PORT": "0"}).grpc
    assert (g.host, g.advertise, g.seeds, g.port) == ("0.0.0.0", "10.0.0.9:9901", ("a:1", "b:2"), 0)


@pytest.mark.parametrize(("overrides", "key", "value"), [
    ({"grpc.seeds": ["a:1", "nohost"]}, "agent_mesh.grpc.seeds[1]", "'nohost'"),
    ({"grpc.seeds": ["a:0"]}, "agent_mesh.grpc.seeds[0]", "'a:0'"),
    ({"grpc.seeds": "a:1,b:99999"}, "agent_mesh.grpc.seeds[1]", "'b:99999'"),
    ({"grpc.advertise": "h"}, "agent_mesh.grpc.advertise", "'h'"),
    ({"grpc.advertise": "h:70000"}, "agent_mesh.grpc.advertise", "'h:70000'"),
    ({"grpc.port": 70000}, "agent_mesh.grpc.port", "70000"),
])
def test_bad_values_name_the_key_and_what_is_allowed(overrides, key, value):
    with pytest.raises(ConfigError) as info:
        load(overrides=overrides)
    message = str(info.value)
    assert f"{key} = {value} is not allowed" in message
    if "port" not in key:
        assert "host:port with a port from 1 to 65535" in message


def test_bad_seed_from_env_names_the_key():
    with pytest.raises(ConfigError, match=r"grpc\.seeds\[0\] = 'x' is not allowed"):
        load(env={"MESH_GRPC_SEEDS": "x"})


def test_cli_flags_set_port_host_and_seeds():
    g = cli("--grpc-port", "0", "--grpc-host", "0.0.0.0", "--seeds", "a:1,b:2", "--seeds", "c:3").grpc
    assert (g.port, g.host, g.seeds) == (0, "0.0.0.0", ("a:1", "b:2", "c:3"))


def test_cli_flags_win_over_env():
    over = _overrides(build_parser().parse_args(["--seeds", "cli:1", "--grpc-port", "7"]))
    g = load(env={"MESH_GRPC_SEEDS": "env:1", "MESH_GRPC_PORT": "8"}, overrides=over).grpc
    assert (g.seeds, g.port) == (("cli:1",), 7)


def test_cli_without_flags_leaves_the_config_alone():
    g = cli().grpc
    assert (g.port, g.host, g.seeds) == (9901, "127.0.0.1", ())


def test_bad_seed_flag_is_a_config_error():
    with pytest.raises(ConfigError, match=r"grpc\.seeds\[1\] = 'b' is not allowed"):
        cli("--seeds", "a:1,b")


def test_subcommands_take_the_flags_too():
    args = build_parser().parse_args(["status", "--seeds", "h:1", "--grpc-port", "5"])
    assert _overrides(args)["grpc.seeds"] == ["h:1"]
    assert _overrides(args)["grpc.port"] == 5


def test_advertise_as_configured_wins():
    assert advertise_address(GrpcConfig(advertise="hub1.lan:9901", port=0), 40001) == "hub1.lan:9901"


def test_advertise_of_a_specific_host_uses_the_bound_port():
    assert advertise_address(GrpcConfig(host="10.1.2.3", port=0), 40001) == "10.1.2.3:40001"
    assert advertise_address(GrpcConfig(host="::1"), 9901) == "[::1]:9901"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", ""])
def test_advertise_of_a_wildcard_host_is_a_real_address_of_this_machine(host):
    address = advertise_address(GrpcConfig(host=host), 9901)
    parsed = split_host_port(address)
    assert parsed is not None and parsed[1] == 9901
    assert parsed[0] not in ("0.0.0.0", "::", "")
    socket.getaddrinfo(parsed[0], parsed[1])  # it resolves
