"""The decoders at the edge of every shared medium never raise anything but their own error (issue 11).

Random bytes, truncated msgpack, frames with a good checksum around garbage, values of the wrong type, huge
and out-of-range numbers: the codec answers CodecError, the stored-record decoders CorruptRecord (which
the media turn into a quarantine), and whatever they do accept is typed and in range.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_core import codec
from mesh_core.backends.shared import (
    CORRUPT,
    FINISHED_FIELDS,
    NODE_FIELDS,
    TASK_FIELDS,
    CorruptRecord,
    attempts_from_rows,
)
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.errors import CodecError
from mesh_core.memory.store import item_from_wire
from mesh_core.model import NodeRole, TaskPriority, TaskStatus

EDGE = SqliteBackend("/nonexistent/never-opened.db")  # only its decoders are used: no file is opened

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=40),
    st.sampled_from(["1", "2", "1e400", "nan", "-inf", "0x10", "worker", "qq", "assigned", "[]", '["a"]', "{}",
                     b"running", b"3", "  7 ", float("inf"), float("nan"), 2 ** 64, -1, 1.5]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                      max_leaves=10)


def _packed(value: Any) -> bytes:
    """msgpack of ``value``, or of its repr when msgpack cannot hold it (an int past 64 bits)."""
    try:
        return codec.pack(value)
    except CodecError:
        return codec.pack(repr(value))


def _frame_around(body: bytes, flags: int = 0) -> bytes:
    """A frame with a correct header and checksum around any body."""
    return codec.HEADER.pack(codec.MAGIC, codec.VERSION, flags, codec.frame_checksum(codec.VERSION, flags, body),
                             len(body)) + body


frames = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v, cut: _frame_around(_packed(v))[:cut], values, st.integers(0, 60)),  # truncated
    st.builds(lambda b, f: _frame_around(b, f), st.binary(max_size=80), st.sampled_from([0, 1, 2])),
    st.builds(lambda v, cut: _frame_around(_packed(v)[:cut]), values, st.integers(0, 40)),  # truncated msgpack
    st.builds(lambda size, rest: _frame_around(struct.pack("<i", size) + rest, codec.FLAG_LZ4),
              st.integers(-(2 ** 31), 2 ** 31 - 1), st.binary(max_size=40)),  # lz4 body claiming any size
    values,  # not bytes at all (a TEXT or INTEGER column)
)


@settings(max_examples=500)
@given(frames)
def test_decode_raises_only_codec_error(frame: Any) -> None:
    try:
        codec.decode(frame)
    except CodecError:
        pass
    try:
        EDGE.frame_checked(frame)
    except CorruptRecord:
        pass


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=100), values, st.builds(lambda v, cut: _packed(v)[:cut], values,
                                                            st.integers(0, 40))))
def test_unpack_raises_only_codec_error(data: Any) -> None:
    try:
        codec.unpack(data)
    except CodecError:
        pass


def _record(names: tuple[str, ...], draw: st.DrawFn, typical: dict[str, Any]) -> dict[str, Any]:
    """A stored record: typical values, with up to three fields anything at all (wrong types, huge numbers)."""
    spoiled = draw(st.sets(st.sampled_from(names), max_size=3))
    return {name: draw(values) if name in spoiled else typical.get(name) for name in names}


TYPICAL_TASK = {"task_id": "t1", "task_type": "echo", "payload": codec.encode({"n": 1}), "priority": 1,
                "status": "assigned", "attempt": 1, "failures": 0, "max_retries": 3, "submitted_at": 1.5,
                "not_before": 0, "preferred": "[]", "required": "[]", "context": codec.pack({})}
TYPICAL_NODE = {"node_id": "n1", "name": "n1", "node_type": "general", "role": "worker", "incarnation": 1,
                "capabilities": "[]", "task_types": '["echo"]', "capacity": 10, "last_seen": 1.0, "left": 0,
                "metrics": "{}"}


@settings(max_examples=400)
@given(st.data())
def test_task_decoder_refuses_with_corrupt_record_or_gives_a_typed_task(data: st.DataObject) -> None:
    fields = _record(TASK_FIELDS, data.draw, TYPICAL_TASK)
    try:
        task = EDGE.task_from_fields(fields)
    except CorruptRecord:
        return
    assert isinstance(task.priority, TaskPriority) and isinstance(task.status, TaskStatus)
    assert isinstance(task.task_id, str) and task.task_id
    assert isinstance(task.attempt, int) and 1 <= task.attempt <= 2 ** 53
    assert isinstance(task.failures, int) and task.failures >= 0
    assert isinstance(task.context, dict)
    for stamp in (task.submitted_at, task.not_before, task.started_at, task.finished_at, task.lease_expires,
                  task.timeout_s):
        assert stamp is None or math.isfinite(stamp)
    # the frame kept for storing or copying the task again is the one its payload was decoded from
    assert task.payload_frame is None or codec.decode(task.payload_frame) == task.payload


def test_a_read_task_keeps_the_frame_of_its_payload_and_a_corrupt_one_none() -> None:
    fields = {name: TYPICAL_TASK.get(name) for name in TASK_FIELDS}
    task = EDGE.task_from_fields(fields)
    assert task.payload == {"n": 1} and task.payload_frame is TYPICAL_TASK["payload"]
    assert task.encoded_payload(codec.DEFAULT_LIMITS) is TYPICAL_TASK["payload"]  # not encoded again
    spoiled = EDGE.task_from_fields(fields | {"payload": TYPICAL_TASK["payload"][:-1] + b"x"})
    assert CORRUPT in spoiled.payload and spoiled.payload_frame is None
    assert EDGE.task_from_fields(fields | {"payload": None}).payload_frame is None


@settings(max_examples=400)
@given(st.data())
def test_node_decoder_refuses_with_corrupt_record_or_gives_a_typed_node(data: st.DataObject) -> None:
    fields = _record(NODE_FIELDS, data.draw, TYPICAL_NODE)
    try:
        node = EDGE.node_from_fields(fields)
    except CorruptRecord:
        return
    assert isinstance(node.role, NodeRole) and node.node_id
    assert all(isinstance(n, int) and 0 <= n <= 2 ** 53 for n in (node.incarnation, node.capacity, node.running,
                                                                   node.queued, node.port, node.pid))
    assert math.isfinite(node.last_seen) and math.isfinite(node.started_at)
    assert isinstance(node.metrics, dict) and all(isinstance(c, str) for c in node.capabilities)


@settings(max_examples=300)
@given(st.data())
def test_result_feed_decoder_refuses_with_corrupt_record(data: st.DataObject) -> None:
    fields = _record(FINISHED_FIELDS, data.draw, {"task_id": "t1", "status": "succeeded", "attempt": 1})
    try:
        done = EDGE.finished_from_fields(fields)
    except CorruptRecord:
        return
    assert isinstance(done.status, TaskStatus) and isinstance(done.attempt, int)


@settings(max_examples=200)
@given(st.lists(st.lists(values, max_size=7), max_size=4))
def test_attempt_rows_that_cannot_be_read_are_left_out(rows: list[list[Any]]) -> None:
    for attempt in attempts_from_rows(rows):
        assert isinstance(attempt.attempt, int) and attempt.attempt >= 1


TYPICAL_WIRE = {"t": "fact", "k": "k1", "v": {"a": 1}, "vv": {"n1": 3}, "h": 12345, "o": "n1", "p": 5, "d": False}


@settings(max_examples=400)
@given(st.data())
def test_memory_wire_decoder_raises_only_codec_error(data: st.DataObject) -> None:
    wire = data.draw(values) if data.draw(st.booleans()) else _record(tuple(TYPICAL_WIRE), data.draw, TYPICAL_WIRE)
    try:
        item = item_from_wire(wire)
    except CodecError:
        return
    assert 0 <= item.hlc < 2 ** 63 and all(isinstance(v, int) and 0 <= v < 2 ** 63 for v in item.vv.values())


EDGES = [("h", float("inf")), ("h", 2 ** 64), ("h", -1), ("vv", {"n1": 2 ** 64}), ("vv", {"n1": float("nan")}),
         ("p", float("inf"))]


def test_memory_wire_edges_are_codec_errors() -> None:
    for name, value in EDGES:
        wire = {**TYPICAL_WIRE, name: value}
        try:
            item_from_wire(wire)
        except CodecError:
            continue
        raise AssertionError(f"{name}={value!r} was accepted")


def test_task_and_feed_edges_are_corrupt_records() -> None:
    for name, value in [("attempt", float("inf")), ("priority", float("nan")), ("failures", 2 ** 64),
                        ("not_before", "inf"), ("context", [1]), ("submitted_at", float("-inf"))]:
        fields = {name: TYPICAL_TASK.get(name) for name in TASK_FIELDS} | {name: value}
        try:
            EDGE.task_from_fields(fields)
        except CorruptRecord:
            continue
        raise AssertionError(f"task {name}={value!r} was accepted")
    try:
        EDGE.finished_from_fields({"task_id": "t", "status": "failed", "attempt": float("inf"), "node_id": None,
                                   "node_name": None, "finished_at": None, "result": None, "error": None})
    except CorruptRecord:
        return
    raise AssertionError("a feed entry with an infinite attempt was accepted")
