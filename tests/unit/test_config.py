"""Configuration loading, precedence and validation (mesh_core/config.py)."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import pytest

from mesh_core.config import (
    CONFLICT_STRATEGIES,
    ENV_KEYS,
    NODE_TYPES,
    PROTOCOLS,
    MeshConfig,
    load_config,
    read_file,
)
from mesh_core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def load(path=None, *, env=None, overrides=None) -> MeshConfig:
    return load_config(path, env=env or {}, overrides=overrides or {}, use_default_file=False)


def write(tmp_path: Path, text: str, name: str = "mesh.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def config_error(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(**kwargs)
    return str(info.value)


# --- defaults --------------------------------------------------------------------

def test_defaults_load():
    cfg = load()
    assert cfg == MeshConfig()
    assert cfg.enabled is True
    assert cfg.protocol == "sqlite_local"
    assert cfg.node_type == "general"
    assert cfg.node_name is None
    assert cfg.heartbeat_interval_seconds == 1.0
    assert cfg.suspect_after_seconds == 2.0
    assert cfg.node_timeout_seconds == 3.0
    assert cfg.redis.port == 6379 and cfg.redis.url is None
    assert cfg.grpc.tls.enabled is None  # auto: TLS when the certificate files are there
    assert cfg.grpc.insecure is False
    assert cfg.task_distribution.load_balancing_algorithm == "least_loaded"
    assert cfg.memory_sync.strategy == "eventual"
    assert cfg.memory_sync.strategies == {}
    assert cfg.security.allowlist == ()
    assert cfg.handlers == ()
    assert cfg.warnings == ()


def test_empty_file_gives_defaults(tmp_path):
    assert load(write(tmp_path, "", "empty.yaml")) == MeshConfig()
    assert load(write(tmp_path, "agent_mesh: {}\n", "braces.yaml")) == MeshConfig()


def test_empty_agent_mesh_section_gives_defaults(tmp_path):
    """``agent_mesh:`` with every key commented out ("every key may be left out") is an empty section."""
    p = write(tmp_path, "agent_mesh:\n  # protocol: sqlite_local\n", "section.yaml")
    assert load(p) == MeshConfig()


def test_repository_config_yaml_is_valid_and_matches_defaults():
    """The documented config.yaml must load without warnings and agree with the built-in defaults."""
    cfg = load(REPO_ROOT / "config.yaml")
    assert cfg.warnings == ()
    defaults = MeshConfig()
    for name in ("protocol", "node_type", "heartbeat_interval_seconds", "suspect_after_seconds",
                 "node_timeout_seconds", "max_capacity", "redis", "task_distribution"):
        assert getattr(cfg, name) == getattr(defaults, name), name


def test_use_default_file_reads_config_yaml_in_the_working_folder(tmp_path, monkeypatch):
    write(tmp_path, "agent_mesh:\n  node_name: from-cwd\n", "config.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).node_name == "from-cwd"
    assert load_config(env={}, use_default_file=False).node_name is None


def test_mesh_config_env_names_the_file(tmp_path):
    p = write(tmp_path, "agent_mesh:\n  node_name: via-env\n")
    assert load(env={"MESH_CONFIG": str(p)}).node_name == "via-env"


# --- precedence ------------------------------------------------------------------

def test_precedence_cli_over_env_over_file_over_defaults(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          protocol: grpc_mesh
          node_type: planning_only
          node_name: file-name
          max_capacity: 7
    """)
    cfg = load(p)
    assert (cfg.protocol, cfg.node_type, cfg.node_name, cfg.max_capacity) == (
        "grpc_mesh", "planning_only", "file-name", 7)
    assert cfg.concurrency == MeshConfig().concurrency  # untouched: default

    env = {"MESH_PROTOCOL": "redis_distributed", "MESH_NODE_TYPE": "sensor_connected"}
    cfg = load(p, env=env)
    assert (cfg.protocol, cfg.node_type, cfg.node_name) == ("redis_distributed", "sensor_connected", "file-name")

    cfg = load(p, env=env, overrides={"protocol": "hybrid", "node_name": None})
    assert cfg.protocol == "hybrid"  # CLI wins
    assert cfg.node_type == "sensor_connected"  # env still wins over the file
    assert cfg.node_name == "file-name"  # a None override means "flag not given"


def test_nested_precedence_merges_instead_of_replacing(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          redis:
            host: file-host
            port: 7000
            cluster: file-cluster
    """)
    cfg = load(p, env={"MESH_REDIS_CLUSTER": "env-cluster"}, overrides={"redis.port": 7001})
    assert cfg.redis.host == "file-host"
    assert cfg.redis.cluster == "env-cluster"
    assert cfg.redis.port == 7001


def test_env_values_are_coerced():
    cfg = load(env={
        "MESH_MAX_CAPACITY": "42",
        "MESH_HEARTBEAT_INTERVAL_SECONDS": "0.5",
        "MESH_HANDLERS": "pkg.a, pkg.b,,",
        "MESH_GRPC_SEEDS": "10.0.0.1:9901,10.0.0.2:9901",
        "MESH_GRPC_PORT": "9999",
        "MESH_API_KEY": "s3cret",
        "MESH_LOAD_BALANCING_ALGORITHM": "round_robin",
        "MESH_CONFLICT_STRATEGY": "manual",
        "MESH_DB": "/tmp/x.db",
    })
    assert cfg.max_capacity == 42
    assert cfg.heartbeat_interval_seconds == 0.5
    assert cfg.handlers == ("pkg.a", "pkg.b")
    assert cfg.grpc.seeds == ("10.0.0.1:9901", "10.0.0.2:9901")
    assert cfg.grpc.port == 9999
    assert cfg.security.api_key == "s3cret"
    assert cfg.task_distribution.load_balancing_algorithm == "round_robin"
    assert cfg.memory_sync.conflict_resolution_strategy == "manual"
    assert cfg.sqlite_db_path == "/tmp/x.db"


ENV_SAMPLES = {
    "node_type": ("language_expert", "language_expert"),
    "protocol": ("hybrid", "hybrid"),
    "node_name": ("n1", "n1"),
    "state_dir": ("/srv/mesh", "/srv/mesh"),
    "sqlite_db_path": ("/srv/mesh.db", "/srv/mesh.db"),
    "sqlite_file_mode": ("0660", "0660"),
    "log_format": ("json", "json"),
    "log_level": ("warning", "warning"),
    "handlers": ("a.b,c", ("a.b", "c")),
    "max_capacity": ("5", 5),
    "concurrency": ("4", 4),
    "heartbeat_interval_seconds": ("0.5", 0.5),
    "node_timeout_seconds": ("9", 9.0),
    "suspect_after_seconds": ("1.5", 1.5),
    "task_timeout_seconds": ("8", 8.0),
    "redis.url": ("redis://h:1/0", "redis://h:1/0"),
    "redis.cluster": ("blue", "blue"),
    "redis.tls_ca_file": ("/c/ca.pem", "/c/ca.pem"),
    "redis.tls_cert_file": ("/c/w1.pem", "/c/w1.pem"),
    "redis.tls_key_file": ("/c/w1.key", "/c/w1.key"),
    "redis.sentinels": ("h:26379, h2:26379", ("h:26379", "h2:26379")),
    "redis.service": ("orders", "orders"),
    "redis.cluster_nodes": ("h:7000,h:7001", ("h:7000", "h:7001")),
    "redis.wait_replicas": ("1", 1),
    "redis.wait_timeout_ms": ("250", 250),
    "grpc.port": ("1234", 1234),
    "grpc.seeds": ("h:1", ("h:1",)),
    "grpc.host": ("0.0.0.0", "0.0.0.0"),
    "metrics.port": ("9464", 9464),
    "metrics.host": ("0.0.0.0", "0.0.0.0"),
    "grpc.advertise": ("10.0.0.5:9901", "10.0.0.5:9901"),
    "grpc.insecure": ("true", True),
    "grpc.tls.enabled": ("auto", None),
    "security.api_key": ("k", "k"),
    "task_distribution.load_balancing_algorithm": ("random", "random"),
    "memory_sync.conflict_resolution_strategy": ("version_vector", "version_vector"),
    "memory_sync.max_lag_items": ("500", 500),
    "memory_sync.max_lag_wait_seconds": ("2.5", 2.5),
    "memory_sync.keep_log_for_absent_seconds": ("0", 0.0),
}
# what a key needs beside it to be valid: the TLS files need a rediss:// url (and a key, its certificate)
ENV_CONTEXT = {
    "redis.tls_ca_file": {"MESH_REDIS_URL": "rediss://h:1/0"},
    "redis.tls_cert_file": {"MESH_REDIS_URL": "rediss://h:1/0"},
    "redis.tls_key_file": {"MESH_REDIS_URL": "rediss://h:1/0", "MESH_REDIS_TLS_CERT_FILE": "/c/w1.pem"},
}


@pytest.mark.parametrize("var", sorted(ENV_KEYS))
def test_every_env_variable_sets_its_key(var):
    dotted = ENV_KEYS[var]
    raw, expected = ENV_SAMPLES[dotted]
    cfg = load(env={**ENV_CONTEXT.get(dotted, {}), var: raw})
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    assert value == expected
    assert cfg.warnings == ()


def test_mernsta_aliases_work():
    cfg = load(env={"MERNSTA_NODE_TYPE": "language_expert", "MERNSTA_MESH_PROTOCOL": "grpc_mesh"})
    assert cfg.node_type == "language_expert"
    assert cfg.protocol == "grpc_mesh"


def test_mesh_names_win_over_mernsta_aliases():
    cfg = load(env={
        "MERNSTA_NODE_TYPE": "language_expert", "MESH_NODE_TYPE": "coordination_hub",
        "MERNSTA_MESH_PROTOCOL": "grpc_mesh", "MESH_PROTOCOL": "redis_distributed",
    })
    assert cfg.node_type == "coordination_hub"
    assert cfg.protocol == "redis_distributed"


def test_mernsta_alias_beats_the_file_and_loses_to_cli(tmp_path):
    p = write(tmp_path, "agent_mesh:\n  node_type: planning_only\n")
    assert load(p, env={"MERNSTA_NODE_TYPE": "language_expert"}).node_type == "language_expert"
    cfg = load(p, env={"MERNSTA_NODE_TYPE": "language_expert"}, overrides={"node_type": "general"})
    assert cfg.node_type == "general"


def test_os_environ_is_used_when_env_is_not_given(monkeypatch):
    monkeypatch.setenv("MESH_NODE_NAME", "from-os-environ")
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    assert load_config(use_default_file=False).node_name == "from-os-environ"


# --- validation errors -----------------------------------------------------------

def test_unknown_protocol_names_key_value_and_choices():
    msg = config_error(overrides={"protocol": "carrier_pigeon"})
    assert "agent_mesh.protocol" in msg
    assert "carrier_pigeon" in msg
    for protocol in PROTOCOLS:
        assert protocol in msg


def test_unknown_protocol_from_env_and_file(tmp_path):
    msg = config_error(env={"MESH_PROTOCOL": "udp"})
    assert "agent_mesh.protocol" in msg and "'udp'" in msg and "sqlite_local" in msg
    p = write(tmp_path, "agent_mesh:\n  protocol: telepathy\n")
    msg = config_error(path=p)
    assert "agent_mesh.protocol" in msg and "telepathy" in msg and "grpc_mesh" in msg


def test_unknown_node_type_lists_the_node_types():
    msg = config_error(env={"MERNSTA_NODE_TYPE": "wizard"})
    assert "agent_mesh.node_type" in msg and "wizard" in msg
    for node_type in NODE_TYPES:
        assert node_type in msg


@pytest.mark.parametrize(("key", "value"), [
    ("node_timeout_seconds", -1),
    ("node_timeout_seconds", 0),
    ("heartbeat_interval_seconds", -0.5),
    ("task_timeout_seconds", "-3"),
    ("redis.socket_timeout_seconds", -2),
    ("task_distribution.retry_backoff_seconds", -1),
    ("max_capacity", 0),
])
def test_negative_or_zero_numbers_are_rejected(key, value):
    msg = config_error(overrides={key: value})
    assert f"agent_mesh.{key}" in msg
    assert repr(value) in msg
    assert "allowed: a number" in msg


def test_zero_is_allowed_where_non_negative():
    cfg = load(overrides={"task_distribution.retry_backoff_seconds": 0, "shutdown_grace_seconds": "0"})
    assert cfg.task_distribution.retry_backoff_seconds == 0.0
    assert cfg.shutdown_grace_seconds == 0.0


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("node_timeout_seconds", "abc", "a number"),
    ("node_timeout_seconds", [1], "a number"),
    ("node_timeout_seconds", True, "a number"),
    ("max_capacity", "ten", "a whole number"),
    ("max_capacity", 2.5, "a whole number"),
    ("max_capacity", "2.5", "a whole number"),
    ("grpc.port", 70000, "0 to 65535"),
    ("redis.port", 0, "at least 1"),
])
def test_non_numbers_and_out_of_range_numbers_are_rejected(key, value, allowed):
    msg = config_error(overrides={key: value})
    assert f"agent_mesh.{key}" in msg
    assert repr(value) in msg
    assert allowed in msg


@pytest.mark.parametrize("value", ["nan", "NaN", float("nan")])
def test_nan_is_not_a_valid_timeout(value):
    # a NaN timeout would make every "age >= timeout" test false: nodes could never die
    msg = config_error(overrides={"node_timeout_seconds": value})
    assert "agent_mesh.node_timeout_seconds" in msg


def test_numbers_given_as_strings_and_whole_floats_are_coerced():
    cfg = load(overrides={"max_capacity": "12", "concurrency": 4.0, "node_timeout_seconds": "7",
                          "task_timeout_seconds": 9})
    assert cfg.max_capacity == 12 and isinstance(cfg.max_capacity, int)
    assert cfg.concurrency == 4 and isinstance(cfg.concurrency, int)
    assert cfg.node_timeout_seconds == 7.0 and isinstance(cfg.node_timeout_seconds, float)
    assert cfg.task_timeout_seconds == 9.0 and isinstance(cfg.task_timeout_seconds, float)


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("yes", True), ("on", True), ("1", True), ("TRUE", True),
    ("false", False), ("no", False), ("off", False), ("0", False), ("Off", False),
])
def test_bool_strings(text, expected):
    assert load(overrides={"enabled": text}).enabled is expected


@pytest.mark.parametrize("value", ["maybe", "2", "", 1, 0, [True], 1.0])
def test_bad_bool_is_rejected(value):
    msg = config_error(overrides={"memory_sync.enabled": value})
    assert "agent_mesh.memory_sync.enabled" in msg
    assert repr(value) in msg
    assert "true or false" in msg


def test_null_bool_in_a_file_is_rejected(tmp_path):
    msg = config_error(path=write(tmp_path, "agent_mesh:\n  grpc:\n    compression: null\n"))
    assert "agent_mesh.grpc.compression" in msg and "None" in msg and "true or false" in msg


@pytest.mark.parametrize(("text", "expected"), [("null", None), ("auto", None), ("AUTO", None), ("true", True),
                                                ("false", False)])
def test_grpc_tls_enabled_is_true_false_or_auto(tmp_path, text, expected):
    # grpc.tls.enabled: null or auto = TLS when the certificate files are there (mesh_core.backends.grpc.tls)
    cfg = load(write(tmp_path, f"agent_mesh:\n  grpc:\n    tls:\n      enabled: {text}\n"))
    assert cfg.grpc.tls.enabled is expected


def test_grpc_tls_enabled_refuses_other_words(tmp_path):
    msg = config_error(path=write(tmp_path, "agent_mesh:\n  grpc:\n    tls:\n      enabled: maybe\n"))
    assert "agent_mesh.grpc.tls.enabled" in msg and "true, false or auto" in msg


def test_bad_nested_strategy_value_is_rejected(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          memory_sync:
            strategies:
              important_fact: manual
              chit_chat: coin_flip
    """)
    msg = config_error(path=p)
    assert "agent_mesh.memory_sync.strategies.chit_chat" in msg
    assert "coin_flip" in msg
    for strategy in CONFLICT_STRATEGIES:
        assert strategy in msg


def test_good_nested_strategies_are_used(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          memory_sync:
            conflict_resolution_strategy: merge_compatible
            strategies: {important_fact: manual, "*": version_vector}
    """)
    cfg = load(p)
    assert cfg.memory_sync.strategies == {"important_fact": "manual", "*": "version_vector"}
    assert cfg.conflict_strategy_for("important_fact") == "manual"
    assert cfg.conflict_strategy_for("anything_else") == "version_vector"
    cfg2 = load(overrides={"memory_sync.conflict_resolution_strategy": "source_priority"})
    assert cfg2.conflict_strategy_for("x") == "source_priority"


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("memory_sync.strategy", "gossip", "eventual, strong, master_slave, peer_to_peer"),
    ("memory_sync.conflict_resolution_strategy", "newest", "latest_wins"),
    ("task_distribution.load_balancing_algorithm", "fastest", "least_loaded, round_robin"),
    ("log_format", "xml", "text, json"),
    ("log_level", "debug", "info, warning"),
    ("memory_sync.strategies", ["manual"], "a mapping"),
    ("redis", "localhost", "a mapping of keys"),
    ("handlers", 5, "a list"),
    ("node_name", ["x"], "a string"),
])
def test_other_bad_values_name_key_value_and_allowed(key, value, allowed):
    msg = config_error(overrides={key: value})
    assert f"agent_mesh.{key}" in msg
    assert repr(value) in msg
    assert allowed in msg


def test_suspect_after_over_node_timeout_is_rejected():
    msg = config_error(overrides={"suspect_after_seconds": 5, "node_timeout_seconds": 4})
    assert "suspect_after_seconds" in msg and "node_timeout_seconds" in msg
    assert "5.0" in msg and "4.0" in msg
    # equal is fine
    cfg = load(overrides={"suspect_after_seconds": 4, "node_timeout_seconds": 4})
    assert cfg.suspect_after_seconds == cfg.node_timeout_seconds == 4.0


def test_suspect_after_over_node_timeout_from_env_is_rejected():
    msg = config_error(env={"MESH_SUSPECT_AFTER_SECONDS": "10"})
    assert "suspect_after_seconds" in msg


def test_heartbeat_not_below_timeout_is_rejected():
    msg = config_error(overrides={"heartbeat_interval_seconds": 3})
    assert "heartbeat_interval_seconds" in msg and "node_timeout_seconds" in msg


def test_config_error_is_raised_by_replace_too():
    with pytest.raises(ConfigError):
        MeshConfig().replace(suspect_after_seconds=10.0)


# --- YAML and file problems ------------------------------------------------------

def test_invalid_yaml_names_the_file_and_line(tmp_path):
    p = write(tmp_path, """\
        agent_mesh:
          protocol: sqlite_local
          port: 9900
         bad_indent: 1
    """)
    with pytest.raises(ConfigError) as info:
        load(p)
    msg = str(info.value)
    assert str(p) in msg
    assert "line 4" in msg


def test_unclosed_bracket_yaml_error_mentions_a_line(tmp_path):
    p = write(tmp_path, "agent_mesh:\n  handlers: [a, b\n  port: 1\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load(p)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("text", "fragment"), [
    ("- just\n- a list\n", "must hold a mapping"),
    ("other_section:\n  x: 1\n", "no agent_mesh: section"),
    ("agent_mesh: 5\n", "agent_mesh must be a mapping"),
    ("agent_mesh: [1, 2]\n", "agent_mesh must be a mapping"),
])
def test_file_shape_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load(write(tmp_path, text))


def test_read_file_returns_the_section(tmp_path):
    p = write(tmp_path, "agent_mesh:\n  port: 1234\n")
    assert read_file(p) == {"port": 1234}


# --- unknown keys ----------------------------------------------------------------

def test_unknown_top_level_key_is_a_warning(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          protocol: sqlite_local
          prtocol: grpc_mesh
    """)
    cfg = load(p)
    assert cfg.protocol == "sqlite_local"
    assert any("agent_mesh.prtocol" in w for w in cfg.warnings)
    assert len(cfg.warnings) == 1


def test_unknown_nested_key_is_a_warning(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          redis:
            hostname: example
          memory_sync:
            stratgy: strong
    """)
    cfg = load(p)
    assert cfg.redis.host == "localhost"
    assert cfg.memory_sync.strategy == "eventual"
    assert any("agent_mesh.redis.hostname" in w for w in cfg.warnings)
    assert any("agent_mesh.memory_sync.stratgy" in w for w in cfg.warnings)
    assert len(cfg.warnings) == 2


def test_unknown_key_two_levels_deep_is_a_warning(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          grpc:
            tls:
              enabled: true
              cert_fle: /etc/mesh/cert.pem
    """)
    cfg = load(p)
    assert cfg.grpc.tls.enabled is True
    assert any("agent_mesh.grpc.tls.cert_fle" in w for w in cfg.warnings), cfg.warnings


def test_unknown_keys_from_overrides_are_warnings_too():
    cfg = load(overrides={"no_such_flag": 1, "redis.no_such_option": 2})
    assert any("agent_mesh.no_such_flag" in w for w in cfg.warnings)
    assert any("agent_mesh.redis.no_such_option" in w for w in cfg.warnings)


def test_warnings_do_not_affect_equality():
    assert load(overrides={"no_such_flag": 1}) == MeshConfig()


# --- relative paths --------------------------------------------------------------

def test_relative_paths_in_a_file_resolve_against_its_folder(tmp_path):
    folder = tmp_path / "conf" / "deep"
    folder.mkdir(parents=True)
    p = write(folder, """
        agent_mesh:
          state_dir: state
          sqlite_db_path: ../data/mesh.db
    """)
    cfg = load(p)
    assert cfg.state_dir == str((folder / "state").resolve())
    assert cfg.sqlite_db_path == str((tmp_path / "conf" / "data" / "mesh.db").resolve())
    assert os.path.isabs(cfg.state_dir) and os.path.isabs(cfg.sqlite_db_path)


def test_relative_file_path_given_relatively_still_resolves(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    write(folder, "agent_mesh:\n  state_dir: st\n")
    monkeypatch.chdir(tmp_path)
    cfg = load(Path("conf") / "mesh.yaml")
    assert cfg.state_dir == str((folder / "st").resolve())


def test_absolute_paths_in_a_file_are_kept(tmp_path):
    p = write(tmp_path, f"agent_mesh:\n  state_dir: {tmp_path / 'abs'}\n  sqlite_db_path: /var/tmp/m.db\n")
    cfg = load(p)
    assert cfg.state_dir == str(tmp_path / "abs")
    assert cfg.sqlite_db_path == "/var/tmp/m.db"


def test_paths_from_env_and_cli_are_not_rebased(tmp_path):
    p = write(tmp_path, "agent_mesh:\n  state_dir: from_file\n")
    cfg = load(p, env={"MESH_STATE_DIR": "from_env"}, overrides={"sqlite_db_path": "cli.db"})
    assert cfg.state_dir == "from_env"
    assert cfg.sqlite_db_path == "cli.db"


# --- misc ------------------------------------------------------------------------

def test_node_config_lookup(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          node_type: language_expert
          node_configs:
            language_expert: {cache_size: 10}
            planning_only: {disable_execution: true}
    """)
    cfg = load(p)
    assert cfg.node_config() == {"cache_size": 10}
    assert cfg.node_config("planning_only") == {"disable_execution": True}
    assert cfg.node_config("sensor_connected") == {}
    cfg.node_config()["cache_size"] = 99  # a copy: the config is not changed
    assert cfg.node_config() == {"cache_size": 10}


def test_lists_from_yaml_become_tuples(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          handlers: [pkg.one, pkg.two]
          security:
            allowlist: ["lab-*", "10.0.*"]
          grpc:
            seeds: []
    """)
    cfg = load(p)
    assert cfg.handlers == ("pkg.one", "pkg.two")
    assert cfg.security.allowlist == ("lab-*", "10.0.*")
    assert cfg.grpc.seeds == ()


def test_config_is_immutable():
    cfg = load()
    with pytest.raises(AttributeError):
        cfg.protocol = "hybrid"  # type: ignore[misc]
    assert math.isclose(cfg.replace(node_timeout_seconds=9.0).node_timeout_seconds, 9.0)


# --- Redis TLS -------------------------------------------------------------------

def test_redis_tls_files_resolve_against_the_file_folder_and_come_from_the_environment(tmp_path):
    p = write(tmp_path, """
        agent_mesh:
          redis:
            url: rediss://cache.example:6380/0
            tls_ca_file: certs/ca.pem
            tls_cert_file: certs/w1.pem
            tls_key_file: /abs/w1.key
    """)
    cfg = load(p, env={"MESH_REDIS_TLS_KEY_FILE": "/env/w1.key"})
    assert cfg.redis.tls and cfg.redis.tls_check_hostname
    assert cfg.redis.tls_ca_file == str((tmp_path / "certs" / "ca.pem").resolve())
    assert cfg.redis.tls_cert_file == str((tmp_path / "certs" / "w1.pem").resolve())
    assert cfg.redis.tls_key_file == "/env/w1.key"
    assert not load(overrides={"redis.url": "redis://h:1/0"}).redis.tls


def test_a_file_without_a_redis_section_gets_none_from_path_resolution(tmp_path):
    assert "redis" not in read_file(write(tmp_path, "agent_mesh:\n  state_dir: st\n"))


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"redis.url": "redis://h:1/0", "redis.tls_ca_file": "/ca.pem"},
     "redis.tls_ca_file is set but redis.url = 'redis://h:1/0'"),
    ({"redis.tls_cert_file": "/w1.pem"}, "redis.tls_cert_file is set but redis.url is unset"),
    ({"redis.url": "redis://:pw@h:1/0", "redis.tls_key_file": "/k"}, "redis.url = 'redis://:***@h:1/0'"),
    ({"redis.url": "rediss://h:1/0", "redis.tls_key_file": "/w1.key"}, "tls_key_file is set without"),
])
def test_redis_tls_keys_without_rediss_or_without_a_certificate_are_refused(overrides, expected):
    message = config_error(overrides=overrides)
    assert expected in message and "pw" not in message, message
