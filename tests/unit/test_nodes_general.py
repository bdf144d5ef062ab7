"""General handlers, the node-type factory and the recommendation."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from mesh_core.config import NODE_TYPES, MeshConfig
from mesh_core.errors import ConfigError
from mesh_core.model import NodeType
from mesh_core.nodes import MachineFacts, create_specialized_node, get_recommended_node_type
from mesh_core.nodes.general import DiagnosticFailure, analysis, echo, fail, sleep


def test_analysis_statistics_of_a_numeric_payload() -> None:
    out = analysis([2, 4, 4, 4, 5, 5, 7, 9])
    assert (out["count"], out["sum"], out["mean"], out["median"]) == (8, 40, 5.0, 4.5)
    assert (out["min"], out["max"], out["range"]) == (2, 9, 7)
    assert out["pstdev"] == 2.0 and round(out["stdev"], 4) == 2.1381
    assert out["modes"] == [4.0] and out["quartiles"] == [4.0, 4.5, 5.5]
    assert analysis({"values": [1, 2, 3, 100]})["outliers"] == [100.0]
    assert analysis([7])["stdev"] == 0.0


@pytest.mark.parametrize("payload", [[], "abc", [1, "x"], [True], [float("nan")], {"values": None}])
def test_analysis_refuses_what_is_not_numbers(payload: object) -> None:
    with pytest.raises(ValueError, match="analysis"):
        analysis(payload)


async def test_diagnostics_keep_their_behaviour() -> None:
    assert await echo({"a": [1]}) == {"a": [1]}
    assert await sleep({"seconds": 0}) == {"slept": 0.0}
    first = SimpleNamespace(attempt=1)
    second = SimpleNamespace(attempt=2)
    with pytest.raises(DiagnosticFailure, match="nope"):
        await fail({"message": "nope", "times": 1}, first)  # type: ignore[arg-type]
    assert await fail({"message": "nope", "times": 1}, second) == {"attempt": 2, "failed_before": 1}  # type: ignore[arg-type]


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_every_type_has_a_profile(node_type: str) -> None:
    profile = create_specialized_node(node_type)
    assert profile.node_type.value == node_type
    assert profile.handlers and profile.capabilities
    if node_type != "planning_only":
        assert {"echo", "sleep", "fail", "memory_store", "memory_recall", "analysis"} <= profile.task_types
    if node_type != "general":
        assert profile.notes


def test_specialised_capabilities_and_task_types() -> None:
    lang = create_specialized_node(NodeType.LANGUAGE_EXPERT)
    assert {"nlp", "text_analysis", "language_detection", "sentiment", "keywords", "entities",
            "summarization"} <= lang.capabilities
    assert "translation" not in lang.capabilities
    assert {"text_analysis", "detect_language", "sentiment", "keywords", "entities", "summarize"} <= lang.task_types
    assert lang.metrics is not None and "cache" in lang.metrics()["language_expert"]
    sensor = create_specialized_node("sensor_connected")
    assert {"monitoring", "metrics", "alerts"} <= sensor.capabilities
    assert {"metrics_snapshot", "metrics_history", "alerts"} <= sensor.task_types
    assert sensor.on_start is not None and sensor.on_stop is not None
    hub = create_specialized_node("coordination_hub")
    assert "seed peer" in hub.notes[0] and "coordination" in hub.capabilities


def test_unknown_type_and_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        create_specialized_node("oracle")
    with pytest.raises(ConfigError, match="not understood"):
        create_specialized_node("sensor_connected", MeshConfig(
            node_configs={"sensor_connected": {"rules": ["cpu is high"]}}))
    with pytest.raises(ConfigError, match="true or false"):
        create_specialized_node("planning_only", MeshConfig(
            node_configs={"planning_only": {"disable_execution": "sometimes"}}))


@pytest.mark.parametrize(("facts", "expected"), [
    (MachineFacts(8, 16.0, ("temperatures: coretemp",), ("py3langid", "vaderSentiment", "yake")),
     NodeType.SENSOR_CONNECTED),
    (MachineFacts(8, 16.0, (), ("py3langid", "vaderSentiment", "yake")), NodeType.LANGUAGE_EXPERT),
    (MachineFacts(8, 16.0, (), ("py3langid",)), NodeType.GENERAL),
    (MachineFacts(2, 8.0, (), ("py3langid", "vaderSentiment", "yake")), NodeType.GENERAL),
    (MachineFacts(1, 0.5, (), ()), NodeType.PLANNING_ONLY),
])
def test_recommendation_from_machine_facts(facts: MachineFacts, expected: NodeType) -> None:
    choice, reasons = get_recommended_node_type(facts)
    assert choice is expected and len(reasons) >= 2


def test_recommendation_on_this_machine_is_a_type_that_exists() -> None:
    choice, reasons = get_recommended_node_type()
    assert choice.value in NODE_TYPES and reasons and "core" in reasons[0]


async def test_memory_store_and_recall_through_the_mesh(tmp_path) -> None:
    from tests.backends.conftest import Cluster, eventually
    cluster = Cluster(tmp_path, "sqlite")
    try:
        a = await cluster.node("a")
        b = await cluster.node("b")
        stored = await a.wait_for(await a.submit_task("memory_store", {"key": "colour", "value": {"sky": "blue"}}),
                                  timeout=5)
        assert stored["key"] == "colour"
        await eventually(lambda: asyncio.sleep(0, b.memory_count()))
        recalled = await b.wait_for(await b.submit_task("memory_recall", {"key": "colour"}), timeout=5)
        assert recalled["value"] == {"sky": "blue"}
    finally:
        await cluster.close()
