"""The planner: turns a goal into a DAG of steps, schedules it, allocates it to live nodes, and runs it.

A planning_only node coordinates and never executes other work: its profile
serves only the planning task types below (``disable_execution``, on by
default), so the router never sends it an ``echo``. ``execute_plan`` submits
the plan's executable steps to the rest of the mesh as subtasks, each as soon
as every step it depends on has finished, and gathers their results.

Plans are pure data; everything but ``allocate``/``contingency``/``execute_plan``
is a pure function, tested without a mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..handlers import HandlerSpec, TaskContext, make_spec
from ..model import TaskStatus
from .plans import allocate_steps, build_plan, contingency_for, decompose, plan_of, steps_of

CAPABILITIES = frozenset({"planning", "goal_decomposition", "scheduling", "resource_allocation"})


# -- handlers ----------------------------------------------------------------------------------

def handle_plan(payload: Any) -> dict[str, Any]:
    """DAG, topological order, critical path, makespan and schedule of ``{"goal", "steps"}`` or a goal."""
    return build_plan(payload)


def handle_decompose(payload: Any) -> dict[str, Any]:
    """The steps a goal sentence breaks into, and how it was read."""
    goal = payload.get("goal") if isinstance(payload, dict) else payload
    steps, how = decompose(str(goal or ""))
    return {"goal": goal, "steps": [s.to_dict() for s in steps], **how}


def handle_schedule(payload: Any) -> dict[str, Any]:
    plan = build_plan(payload)
    return {k: plan[k] for k in ("order", "levels", "schedule", "makespan", "critical_path", "peak_parallelism")}


async def handle_allocate(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    _, steps, _ = steps_of(payload)
    return allocate_steps(steps, ctx.workers())


async def handle_contingency(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    _, steps, _ = steps_of(payload)
    return contingency_for(steps, ctx.workers())


def _fill(payload: Any, results: dict[str, Any]) -> Any:
    """Replace ``{"$result": "step id"}`` anywhere in a payload with that step's result."""
    if isinstance(payload, dict):
        if set(payload) == {"$result"} and str(payload["$result"]) in results:
            return results[str(payload["$result"])]
        return {k: _fill(v, results) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_fill(v, results) for v in payload]
    return payload


async def handle_execute_plan(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Run the plan's executable steps on the mesh as subtasks, each once its dependencies are done.

    A step with no task type is a milestone: it completes at once. A failed step's dependents are
    skipped (never submitted) while independent branches go on; ``ok`` says whether every step succeeded.
    The task's progress is the share of steps settled, with ``step k/n``.
    """
    goal, steps, decomposition = steps_of(payload)
    plan = plan_of(goal, steps, decomposition)
    by_id = {s.id: s for s in steps}
    options = payload if isinstance(payload, dict) else {}
    default_timeout = options.get("step_timeout_s")
    began = time.monotonic()
    state: dict[str, dict[str, Any]] = {sid: {"status": "waiting"} for sid in by_id}
    results: dict[str, Any] = {}
    submitted: list[str] = []
    running: dict[asyncio.Task[Any], str] = {}

    def finished(sid: str) -> bool:
        return state[sid]["status"] in ("succeeded", "milestone")

    async def launch_ready() -> None:
        progress = True
        while progress:
            progress = False
            for sid in plan["order"]:
                entry = state[sid]
                if entry["status"] != "waiting":
                    continue
                step = by_id[sid]
                blocked = [d for d in step.after if state[d]["status"] in ("failed", "skipped")]
                if blocked:
                    entry.update(status="skipped", error=f"not run: {blocked[0]} did not succeed")
                    progress = True
                    continue
                if not all(finished(d) for d in step.after):
                    continue
                if not step.executable:
                    entry.update(status="milestone")
                    progress = True
                    continue
                try:
                    task_id = await ctx.submit(step.task_type or "", _fill(step.payload, results),
                                               required_capabilities=step.requires,
                                               timeout_s=step.timeout_s or default_timeout,
                                               context={"plan_step": sid})
                except Exception as exc:
                    entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    progress = True
                    continue
                submitted.append(sid)
                entry.update(status="running", task_id=task_id, submitted_s=round(time.monotonic() - began, 4))
                running[asyncio.get_running_loop().create_task(ctx.wait_task(task_id))] = sid

    def report() -> None:  # the steps settled so far (done, milestone, failed or skipped), as the task's progress
        settled = sum(1 for e in state.values() if e["status"] not in ("waiting", "running"))
        ctx.progress(settled / len(state) if state else 1.0, f"step {settled}/{len(state)}")

    try:
        await launch_ready()
        report()
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for job in done:
                sid = running.pop(job)
                entry = state[sid]
                try:
                    task = job.result()
                except Exception as exc:
                    entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    continue
                entry.update(node_id=task.node_id, node_name=task.node_name, attempts=task.attempt,
                             started_at=task.started_at, finished_at=task.finished_at,
                             done_s=round(time.monotonic() - began, 4))
                if task.status is TaskStatus.SUCCEEDED:
                    entry["status"] = "succeeded"
                    results[sid] = task.result
                else:
                    entry.update(status="failed", error=task.error or task.status.value)
            await launch_ready()
            report()
    except asyncio.CancelledError:
        for job, sid in running.items():
            job.cancel()
            with contextlib.suppress(Exception):
                await ctx.cancel(state[sid]["task_id"])
        raise
    failed = [sid for sid, e in state.items() if e["status"] in ("failed", "skipped")]
    return {"goal": plan["goal"], "ok": not failed, "failed": failed, "results": results,
            "steps": state, "submitted_order": submitted, "order": plan["order"],
            "critical_path": plan["critical_path"], "planned_makespan": plan["makespan"],
            "elapsed_s": round(time.monotonic() - began, 4)}


PLANNING_HANDLERS: tuple[tuple[str, Any, frozenset[str]], ...] = (
    ("plan", handle_plan, frozenset({"planning"})),
    ("decompose_goal", handle_decompose, frozenset({"goal_decomposition"})),
    ("schedule", handle_schedule, frozenset({"scheduling"})),
    ("allocate", handle_allocate, frozenset({"resource_allocation"})),
    ("contingency", handle_contingency, frozenset({"resource_allocation"})),
    ("execute_plan", handle_execute_plan, frozenset({"planning"})),
)


def handlers() -> list[HandlerSpec]:
    return [make_spec(name, fn, caps) for name, fn, caps in PLANNING_HANDLERS]
