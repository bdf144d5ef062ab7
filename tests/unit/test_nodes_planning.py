"""The planner's pure parts: DAG, order, schedule, critical path, decomposition, allocation, contingency."""

from __future__ import annotations

import pytest

from mesh_core.config import MeshConfig
from mesh_core.model import NodeInfo, NodeType
from mesh_core.nodes import create_specialized_node
from mesh_core.nodes.plans import (
    PlanCycle,
    PlanError,
    allocate_steps,
    build_plan,
    contingency_for,
    decompose,
    parse_steps,
    topological_order,
)

# A known project: critical path a → c → e → f (3 + 4 + 2 + 1 = 10); b and d have slack.
PROJECT = [
    {"id": "a", "duration": 3},
    {"id": "b", "duration": 2, "after": ["a"]},
    {"id": "c", "duration": 4, "after": ["a"]},
    {"id": "d", "duration": 1, "after": ["b"]},
    {"id": "e", "duration": 2, "after": ["c", "d"]},
    {"id": "f", "duration": 1, "after": ["e"]},
    {"id": "g", "duration": 5},
]


def test_known_durations_give_the_known_critical_path_and_makespan() -> None:
    plan = build_plan({"goal": "ship", "steps": PROJECT})
    assert plan["critical_path"] == ["a", "c", "e", "f"]
    assert plan["makespan"] == 10
    assert plan["order"] == ["a", "b", "c", "d", "e", "f", "g"]  # among ready steps, the one listed first
    s = plan["schedule"]
    assert (s["c"]["start"], s["c"]["finish"]) == (3, 7)
    assert (s["d"]["start"], s["d"]["finish"], s["d"]["slack"]) == (5, 6, 1)
    assert (s["e"]["start"], s["f"]["finish"]) == (7, 10)
    assert s["g"]["slack"] == 5 and all(s[x]["slack"] == 0 for x in plan["critical_path"])
    assert plan["levels"] == [["a", "g"], ["b", "c"], ["d"], ["e"], ["f"]]
    assert plan["peak_parallelism"] == 3  # g, b and c overlap from 3 to 5
    assert ["a", "c"] in plan["dag"]["edges"] and ["d", "e"] in plan["dag"]["edges"]


def test_order_respects_every_dependency() -> None:
    steps = parse_steps(PROJECT)
    order = topological_order(steps)
    position = {sid: i for i, sid in enumerate(order)}
    assert all(position[d] < position[s.id] for s in steps for d in s.after)


def test_a_cycle_is_refused_with_a_clear_error() -> None:
    steps = [{"id": "build", "after": ["test"]}, {"id": "test", "after": ["deploy"]},
             {"id": "deploy", "after": ["build"]}, {"id": "docs"}]
    with pytest.raises(PlanCycle) as caught:
        build_plan({"steps": steps})
    message = str(caught.value)
    assert "cycle" in message and "remove one" in message
    assert caught.value.cycle[0] == caught.value.cycle[-1]
    assert set(caught.value.cycle) == {"build", "test", "deploy"}
    with pytest.raises(PlanCycle):
        build_plan({"steps": [{"id": "x", "after": ["x"]}]})


@pytest.mark.parametrize(("steps", "message"), [
    ([{"id": "a"}, {"id": "a"}], "used twice"),
    ([{"id": "a", "after": ["ghost"]}], "not a step"),
    ([{"id": "a", "duration": -1}], "non-negative"),
    ([{"duration": 1}], "no id"),
    ([], "needs \"steps\""),
])
def test_bad_plans_say_what_to_fix(steps: list, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        build_plan({"goal": "x", "steps": steps} if steps else {"steps": steps, "goal": ""})


def test_goal_sentence_decomposition() -> None:
    steps, how = decompose("Design the schema, write the API and build the UI, then test everything "
                           "and finally deploy to production (2h)")
    assert [s.title for s in steps] == ["Design the schema", "write the API", "build the UI", "test everything",
                                        "deploy to production"]
    assert steps[3].after == ("s1", "s2", "s3") and steps[4].after == ("s4",)
    assert steps[4].duration == 2.0 and how["stages"] == [["s1", "s2", "s3"], ["s4"], ["s5"]]


@pytest.mark.parametrize(("goal", "titles", "method"), [
    ("1. gather requirements 2. write code 3. ship it", ["gather requirements", "write code", "ship it"],
     "numbered list"),
    ("- buy flour\n- bake bread (3h)\n- eat", ["buy flour", "bake bread", "eat"], "explicit list"),
    ("First clean the data; train the model; evaluate the results",
     ["clean the data", "train the model", "evaluate the results"], "ordered clauses"),
    ("Deploy the service after the tests pass", ["the tests pass", "Deploy the service"], "ordered clauses"),
    ("Review the research and development budget", ["Review the research and development budget"], "conjunctions"),
])
def test_goal_forms(goal: str, titles: list[str], method: str) -> None:
    steps, how = decompose(goal)
    assert [s.title for s in steps] == titles
    assert how["method"] == method
    assert all(s.after == (f"s{i}",) for i, s in enumerate(steps[1:], start=1)) or len(steps) == 1


def test_plan_from_a_goal_alone() -> None:
    plan = build_plan("collect the logs and collect the metrics, then write the report")
    assert plan["order"] == ["s1", "s2", "s3"] and plan["critical_path"][-1] == "s3" and plan["makespan"] == 2
    assert plan["decomposition"]["method"] == "ordered clauses"
    with pytest.raises(PlanError):
        build_plan({"goal": "   "})


def _node(name: str, types: set[str], caps: set[str], running: int = 0, host: str = "h1",
          node_type: NodeType = NodeType.GENERAL) -> NodeInfo:
    return NodeInfo(node_id=f"id-{name}", name=name, node_type=node_type, host=host, capacity=10, running=running,
                    task_types=frozenset(types), capabilities=frozenset(caps))


NODES = [
    _node("busy", {"echo", "sleep"}, {"basic_processing"}, running=8, host="h1"),
    _node("idle", {"echo", "sleep"}, {"basic_processing"}, running=0, host="h1"),
    _node("other", {"echo"}, {"basic_processing"}, running=1, host="h2"),
    _node("lang", {"text_analysis", "echo"}, {"nlp", "basic_processing"}, running=2, host="h3",
          node_type=NodeType.LANGUAGE_EXPERT),
    _node("planner", {"plan", "execute_plan"}, {"planning"}, host="h4", node_type=NodeType.PLANNING_ONLY),
]


def test_allocation_by_capability_and_load() -> None:
    steps = parse_steps([
        {"id": "nlp", "task_type": "text_analysis", "requires": ["nlp"]},
        {"id": "s1", "task_type": "sleep", "after": ["nlp"]},
        {"id": "s2", "task_type": "sleep", "after": ["nlp"]},
        {"id": "e", "task_type": "echo", "after": ["s1", "s2"]},
        {"id": "gpu", "task_type": "render", "requires": ["gpu"]},
        {"id": "meeting"},
    ])
    result = allocate_steps(steps, NODES)
    a = result["assignments"]
    assert a["nlp"]["node_name"] == "lang"
    assert a["s1"]["node_name"] == "idle"            # least loaded able node
    assert a["s2"]["node_name"] == "idle"            # 0.0 + 1/10 still under busy's 0.8
    assert a["e"]["node_name"] == "other"            # idle now carries 2/10, other 1/10
    assert "gpu" in result["unassigned"] and "render" in result["unassigned"]["gpu"]
    assert "meeting" in result["unassigned"]
    assert all(x["node_name"] != "planner" for x in a.values())


def test_contingency_names_a_fallback_on_another_host() -> None:
    steps = parse_steps([{"id": "e", "task_type": "echo"}, {"id": "t", "task_type": "text_analysis"}])
    result = contingency_for(steps, NODES)["contingency"]
    assert result["e"]["primary"] == "idle" and result["e"]["fallback"] == "other"  # h2, not busy on h1
    assert result["t"]["primary"] == "lang" and result["t"]["fallback"] is None
    assert "single point of failure" in result["t"]["risk"]


def test_planning_only_profile_serves_only_planning() -> None:
    profile = create_specialized_node("planning_only")
    assert profile.task_types == {"plan", "decompose_goal", "schedule", "allocate", "contingency", "execute_plan"}
    assert "echo" not in profile.task_types and profile.disable_execution
    assert {"planning", "goal_decomposition", "scheduling", "resource_allocation"} <= profile.capabilities
    relaxed = create_specialized_node("planning_only", MeshConfig(
        node_configs={"planning_only": {"disable_execution": False}}))
    assert "echo" in relaxed.task_types and not relaxed.disable_execution


class FakeMesh:
    """Runs each submitted subtask at once: echo returns its payload, 'boom' fails, others are unknown."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, object]] = []
        self.tasks: dict[str, object] = {}

    async def submit_task(self, task_type: str, payload: object = None, **kwargs: object) -> str:
        from mesh_core.errors import UnknownTaskType
        if task_type not in ("echo", "boom"):
            raise UnknownTaskType(f"no active node has a handler for task type {task_type!r}")
        task_id = f"t{len(self.submitted)}"
        self.submitted.append((task_type, payload))
        from mesh_core.model import Task, TaskStatus
        ok = task_type == "echo"
        self.tasks[task_id] = Task(task_id, task_type, payload, status=TaskStatus.SUCCEEDED if ok else
                                   TaskStatus.DEAD_LETTER, node_id="w1", node_name="w1",
                                   result=payload if ok else None, error=None if ok else "boom failed")
        return task_id

    async def wait_task(self, task_id: str, timeout: float | None = None) -> object:
        import asyncio
        await asyncio.sleep(0)
        return self.tasks[task_id]


async def test_execute_plan_runs_in_order_passes_results_and_skips_after_a_failure() -> None:
    from mesh_core.handlers import TaskContext
    from mesh_core.model import Task
    from mesh_core.nodes.planning_only import handle_execute_plan
    mesh = FakeMesh()
    reports = []
    ctx = TaskContext(Task("plan-1", "execute_plan"), mesh, report=reports.append)
    report = await handle_execute_plan({"goal": "g", "steps": [
        {"id": "a", "task_type": "echo", "payload": {"n": 1}},
        {"id": "gate", "after": ["a"]},                                   # a milestone
        {"id": "b", "task_type": "echo", "after": ["gate"], "payload": {"from_a": {"$result": "a"}}},
        {"id": "bad", "task_type": "boom", "after": ["a"]},
        {"id": "after_bad", "task_type": "echo", "after": ["bad"]},
        {"id": "nobody", "task_type": "render"},
    ]}, ctx)
    assert report["submitted_order"] == ["a", "b", "bad"]  # b and bad only once a finished
    assert report["results"] == {"a": {"n": 1}, "b": {"from_a": {"n": 1}}}
    steps = report["steps"]
    assert steps["gate"]["status"] == "milestone" and steps["b"]["status"] == "succeeded"
    assert steps["bad"]["status"] == "failed" and steps["bad"]["error"] == "boom failed"
    assert steps["after_bad"]["status"] == "skipped" and "bad did not succeed" in steps["after_bad"]["error"]
    assert steps["nobody"]["status"] == "failed" and "render" in steps["nobody"]["error"]
    assert not report["ok"] and set(report["failed"]) == {"bad", "after_bad", "nobody"}
    assert mesh.submitted == [("echo", {"n": 1}), ("echo", {"from_a": {"n": 1}}), ("boom", None)]
    # the steps settled, reported as the task's progress: never backwards, all six at the end
    fractions = [p.fraction for p in reports]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 1
    assert reports[-1].fraction == 1.0 and reports[-1].message == "step 6/6"
    assert ctx.task.progress == 1.0 and ctx.task.progress_message == "step 6/6"
