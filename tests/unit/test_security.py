"""Allowlist and api_key signatures (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh_core.memory.store import item_to_wire
from mesh_core.model import MemoryItem, NodeInfo, NodeRole, Task
from mesh_core.security import (
    NOT_ALLOWED,
    ORIGIN_HOST,
    ORIGIN_NAME,
    SUBMITTER_HOST,
    SUBMITTER_NAME,
    Trust,
    allowed,
    memory_origin,
    memory_parts,
    node_parts,
    sign,
    task_parts,
    task_submitter,
    verify,
)

KEY = "mesh-secret"


def _node(**changes) -> NodeInfo:
    base = {"node_id": "a" * 32, "name": "w1", "host": "lab-1", "port": 9900, "incarnation": 2,
            "capabilities": frozenset({"nlp"}), "task_types": frozenset({"echo"})}
    return NodeInfo(**{**base, **changes})


def test_allowlist_matches_id_name_or_host() -> None:
    assert allowed(_node(), [])
    assert allowed(_node(), ["lab-*"]) and allowed(_node(), ["w?"]) and not allowed(_node(), ["prod-*"])


def test_a_node_record_signature_covers_identity_and_abilities_not_load() -> None:
    signature = sign(KEY, *node_parts(_node()))
    assert verify(KEY, signature, *node_parts(_node(running=40, queued=7, metrics={"cpu_percent": 99})))
    for change in ({"name": "w2"}, {"incarnation": 3}, {"task_types": frozenset({"echo", "shell"})},
                   {"role": NodeRole.CLIENT}, {"host": "elsewhere"}):
        assert not verify(KEY, signature, *node_parts(_node(**change))), change
    assert not verify("other-key", signature, *node_parts(_node()))
    assert not verify(KEY, "", *node_parts(_node())) and not verify(KEY, None, *node_parts(_node()))


def test_a_task_signature_survives_the_wire_and_covers_what_the_worker_acts_on() -> None:
    named = {SUBMITTER_NAME: "cli-7", SUBMITTER_HOST: "h1"}
    task = Task(task_id="t1", task_type="echo", payload={"a": [1, 2.5, "x"]}, submitter_id="s1", timeout_s=5,
                max_retries=2, context={"trace_id": "t1", **named})
    signature = sign(KEY, *task_parts(task))
    stored = Task(task_id="t1", task_type="echo", payload={"a": [1, 2.5, "x"]}, submitter_id="s1", timeout_s=5.0,
                  max_retries=2, context={"trace_id": "t1", **named})  # as read back: the timeout as a float
    assert verify(KEY, signature, *task_parts(stored))
    assert task_submitter(stored) == ("s1", "cli-7", "h1")  # what the allowlist judges a submitter without a record by
    for change in ({"payload": {"a": [1, 2.5, "y"]}}, {"task_type": "shell"}, {"submitter_id": "s2"},
                   {"required_capabilities": frozenset({"gpu"})}, {"context": {**named, SUBMITTER_NAME: "trusted"}},
                   {"context": {**named, SUBMITTER_HOST: "elsewhere"}}):
        forged = Task(**{**stored.__dict__, **change})
        assert not verify(KEY, signature, *task_parts(forged)), change


def test_a_memory_signature_covers_value_clock_and_vector() -> None:
    item = MemoryItem("fact", "k", {"v": 1}, {"n1": 2}, 123456, "n1", 5, False)
    wire = item_to_wire(item)
    signature = sign(KEY, *memory_parts(wire))
    assert verify(KEY, signature, *memory_parts(dict(wire)))
    for field, value in (("v", {"v": 2}), ("vv", {"n1": 3}), ("h", 123457), ("o", "n2"), ("d", True)):
        assert not verify(KEY, signature, *memory_parts({**wire, field: value})), field


@given(st.lists(st.text(max_size=8), max_size=5), st.lists(st.text(max_size=8), max_size=5))
def test_different_part_lists_never_share_a_signature(a: list[str], b: list[str]) -> None:
    if a != b:
        assert sign(KEY, *a) != sign(KEY, *b)  # parts are length-prefixed: ("ab", "c") is not ("a", "bc")


def test_one_trust_rule_judges_origin_and_signature() -> None:
    open_mesh = Trust()
    assert open_mesh.refuses(("id1", "anyone", "host"), None, ("x",)) == ""
    guarded = Trust(("lab-*",), KEY)
    parts = ("a", b"b")
    good = sign(KEY, *parts)
    assert guarded.refuses(("id1", "w1", "lab-1"), good, parts) == ""
    assert guarded.refuses(("id1", "w1", "prod-1"), good, parts) == NOT_ALLOWED
    assert guarded.refuses(("id1", "w1", "lab-1"), None, parts) == "is not signed with this mesh's api_key"
    assert guarded.refuses(("id1", "w1", "lab-1"), sign("other", *parts), parts) == "has a bad signature"


def test_a_memory_signature_covers_the_origin_name_and_host() -> None:
    wire = {**item_to_wire(MemoryItem("fact", "k", 1, {"n1": 1}, 1, "n1", 5, False)),
            ORIGIN_NAME: "lab-w1", ORIGIN_HOST: "lab-1"}
    signature = sign(KEY, *memory_parts(wire))
    assert memory_origin(wire) == ("n1", "lab-w1", "lab-1")
    for field in (ORIGIN_NAME, ORIGIN_HOST):
        assert not verify(KEY, signature, *memory_parts({**wire, field: "lab-9"})), field
    assert memory_origin({"o": 5, ORIGIN_NAME: ["x"]}) == (None, None, None)  # a wrong type names no one
