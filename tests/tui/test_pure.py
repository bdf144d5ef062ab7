"""The UI's pure helpers: conflict diffs and merges, text helpers, filtering, event folding, completion."""

from __future__ import annotations

from collections import deque

from mesh_core.events import NodeStatusChanged, TaskUpdated
from mesh_core.security import without_password
from mesh_tui.app import TASK_LINES_PER_BATCH, fold
from mesh_tui.diff import differing_paths, is_marked, merge, pretty_lines
from mesh_tui.state import age, bar, common_prefix, push_sample, sparkline, status_light
from mesh_tui.widgets.command_input import takes_arguments
from mesh_tui.widgets.nodes_table import heartbeat_age, matches


def test_differing_paths_names_the_deepest_disagreements() -> None:
    a = {"owner": "hub", "region": "eu", "tags": ["prod"], "only_a": 1}
    b = {"owner": "plan", "region": "eu", "tags": ["prod", "gpu"], "only_b": {"x": 1}}
    assert differing_paths(a, b) == ["$.owner", "$.tags[1]", "$.only_a", "$.only_b"]
    assert differing_paths({"n": 1}, {"n": 1.0}) == ["$.n"]  # a type change is a change
    assert differing_paths([1, 2], [1, 2]) == []


def test_merge_is_safe_only_without_clashes() -> None:
    merged, clashes = merge({"a": 1, "tags": ["x"]}, {"b": 2, "tags": ["x", "y"]})
    assert merged == {"a": 1, "tags": ["x", "y"], "b": 2} and clashes == []
    _, clashes = merge({"a": 1, "n": {"k": "left"}}, {"a": 1, "n": {"k": "right"}})
    assert clashes == ["$.n.k"]


def test_pretty_lines_tag_each_line_with_its_path() -> None:
    lines = pretty_lines({"owner": "hub", "tags": ["prod", "gpu"]})
    assert [line for _, line in lines] == ["{", '  "owner": "hub",', '  "tags": [', '    "prod",', '    "gpu"',
                                           "  ]", "}"]
    marked = [line for path, line in lines if is_marked(path, ["$.tags[1]"])]
    assert marked == ['    "gpu"']
    assert is_marked("$.tags[1].x", ["$.tags[1]"]) and not is_marked("$.tags[10]", ["$.tags[1]"])


def test_text_helpers() -> None:
    assert bar(0.5, 10) == "█████░░░░░" and bar(2.0, 4) == "████" and bar(-1, 3) == "░░░"
    assert age(0.42) == "0.4s" and age(42) == "42s" and age(185) == "3m05s" and age(7260) == "2h01m"
    assert heartbeat_age(0.3) == "<1s" and heartbeat_age(2.7) == "2s"
    assert sparkline([0, 0.5, 1.0], 5) == "  ▁▅█"
    assert common_prefix(["/mesh_status", "/mesh_sync"]) == "/mesh_s"
    assert status_light("suspect") == "🟡" and status_light("?") == "⚫" and status_light("?", unknown="•") == "•"


def test_history_takes_one_sample_per_half_second() -> None:
    history: deque[float] = deque(maxlen=5)
    last: list[float] = []
    for now, value in ((0.0, 0.1), (0.1, 0.2), (0.6, 0.3), (0.6, 0.4), (1.2, 0.5)):
        push_sample(history, last, now, value)
    assert list(history) == [0.2, 0.4, 0.5]


def test_node_filter_words_and_fields() -> None:
    node = {"name": "lang-01", "node_type": "language_expert", "status": "active", "node_id": "abc123",
            "capabilities": ["nlp", "translation"]}
    assert matches(node, "lang") and matches(node, "type:language") and matches(node, "cap:nlp status:act")
    assert not matches(node, "type:planning") and not matches(node, "lang dead")


def test_a_burst_of_task_updates_is_folded_but_membership_is_kept() -> None:
    burst = [TaskUpdated(task_id=f"t{i}", task_type="echo", status="assigned") for i in range(50)]
    burst.insert(30, NodeStatusChanged(node_id="n", name="n", old="active", new="dead", incarnation=1))
    message = fold(burst)
    assert message.skipped == 50 - TASK_LINES_PER_BATCH
    assert any(isinstance(e, NodeStatusChanged) for e in message.events)
    assert len(message.events) == TASK_LINES_PER_BATCH + 1


def test_completion_knows_which_commands_take_arguments() -> None:
    assert not takes_arguments("/mesh_status") and takes_arguments("/mesh_recall")


def test_the_headless_start_line_never_shows_a_redis_password() -> None:
    assert without_password("redis://mesh:s3cr%40t@host:6379/0") == "redis://mesh:***@host:6379/0"
    assert without_password("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"


def test_the_local_pane_shows_grpc_tls_its_expiry_and_insecure() -> None:
    from rich.console import Console

    from mesh_tui.state import MeshState
    from mesh_tui.widgets.local_node import render_local

    def shown(backend: dict[str, object]) -> str:
        state = MeshState(now=0.0, enabled=True, local={"name": "w1", "node_id": "ab" * 8, "protocol": "grpc_mesh",
                                                       "backend": backend},
                          nodes=(), task_counts={}, tasks={})
        console = Console(width=100, record=True)
        console.print(render_local(state))
        return console.export_text()

    tls = {"name": "w1", "days_left": 5.0, "not_after": "2026-12-05T00:00:00+00:00", "expiring": True,
           "expired": False}
    assert "🔒 w1 · 5 days left" in shown({"backend": "grpc_mesh", "grpc_tls": tls})
    assert "EXPIRED 2026-12-05" in shown({"backend": "grpc_mesh", "grpc_tls": {**tls, "expired": True}})
    text = shown({"backend": "grpc_mesh", "insecure": True})
    assert "grpc_mesh ⚠️ INSECURE" in text and "INSECURE: plaintext on a non-loopback address" in text
