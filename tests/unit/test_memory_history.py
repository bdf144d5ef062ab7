"""The replicated history's naming and order (issue 11, defect 12), and the strong timeout rule (defect 8)."""

from __future__ import annotations

import pytest

from mesh_core.config import MeshConfig, load_config
from mesh_core.errors import ConfigError
from mesh_core.memory.history import earlier_versions, pick_version, version_id
from mesh_core.model import MemoryItem


def _item(value: str, hlc: int, origin: str = "a" * 32) -> MemoryItem:
    return MemoryItem("fact", "k", value, {origin: hlc}, hlc, origin)


def test_earlier_versions_are_named_by_stamp_newest_first_and_drop_the_current_one() -> None:
    one, two, three = _item("one", 0x10), _item("two", 0x20, "b" * 32), _item("three", 0x30)
    for arrival in ([one, two, three], [three, one, two, two]):  # any order, duplicates: the same answer
        rows = earlier_versions(arrival, [three], limit=20)
        assert [(r["index"], r["version"], r["value"]) for r in rows] == [
            (1, "20.bbbbbbbb", "two"), (2, "10.aaaaaaaa", "one")]
    assert [r["value"] for r in earlier_versions([one, two, three], [three], limit=1)] == ["two"]


def test_pick_version_by_index_id_or_unique_prefix() -> None:
    rows = earlier_versions([_item("one", 0x10), _item("two", 0x11)], [], limit=20)
    assert pick_version(rows, 2)["value"] == "one"
    assert pick_version(rows, version_id(_item("one", 0x10)))["value"] == "one"
    assert pick_version(rows, "11")["value"] == "two"
    assert pick_version(rows, "1") is None  # a prefix of both ids: ambiguous
    assert pick_version(rows, 3) is None


def load(overrides: dict[str, object]) -> MeshConfig:
    return load_config(None, env={}, overrides=overrides, use_default_file=False)


def test_strong_timeout_must_be_below_node_timeout() -> None:
    with pytest.raises(ConfigError, match="strong_timeout_seconds.*node_timeout_seconds"):
        load(overrides={"memory_sync": {"strategy": "strong", "strong_timeout_seconds": 3.0}})
    assert load(overrides={"memory_sync": {"strategy": "strong"}}).memory_sync.strong_timeout_seconds == 2.0
    # only a strong mesh waits on it
    assert load(overrides={"memory_sync": {"strong_timeout_seconds": 5.0}}).memory_sync.strategy == "eventual"
