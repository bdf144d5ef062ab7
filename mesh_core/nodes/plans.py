"""Plans as pure data: steps and their dependencies (parsed from a payload or read from a goal sentence), the
DAG's order, critical path and schedule, and the allocation of steps to nodes. No I/O: the planner's handlers
(``planning_only``) run these, and the tests call them without a mesh.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import NodeInfo

MAX_STEPS = 500
DEFAULT_DURATION = 1.0


class PlanError(ValueError):
    """A plan that cannot be built; the message says which step and what to change."""


class PlanCycle(PlanError):
    """The steps' dependencies loop back on themselves."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        path = " → ".join(cycle)
        super().__init__(f"the plan's dependencies form a cycle: {path}; "
                         f"remove one of these 'after' links so the steps can be ordered")


@dataclass(frozen=True)
class Step:
    id: str
    duration: float = DEFAULT_DURATION
    after: tuple[str, ...] = ()
    title: str = ""
    task_type: str | None = None
    payload: Any = None
    requires: frozenset[str] = frozenset()
    timeout_s: float | None = None

    @property
    def executable(self) -> bool:
        return self.task_type is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "title": self.title or self.id, "duration": self.duration,
                               "after": list(self.after)}
        if self.task_type is not None:
            out["task_type"] = self.task_type
        if self.payload is not None:
            out["payload"] = self.payload
        if self.requires:
            out["requires"] = sorted(self.requires)
        return out


# -- parsing steps ---------------------------------------------------------------------------

def parse_steps(raw: Any) -> list[Step]:
    """Steps from ``[{"id", "duration", "after", "task_type"?, "payload"?, "requires"?}, …]``, checked."""
    if not isinstance(raw, list) or not raw:
        raise PlanError('a plan needs "steps": a non-empty list of {"id", "duration", "after"}')
    if len(raw) > MAX_STEPS:
        raise PlanError(f"a plan holds at most {MAX_STEPS} steps, got {len(raw)}")
    steps: list[Step] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PlanError(f"step #{i + 1} must be a mapping with an id, got {item!r}")
        sid = item.get("id")
        if sid is None or str(sid).strip() == "":
            raise PlanError(f"step #{i + 1} has no id")
        sid = str(sid)
        if sid in seen:
            raise PlanError(f"step id {sid!r} is used twice; ids must be unique")
        seen.add(sid)
        duration = item.get("duration", DEFAULT_DURATION)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= 0 \
                or duration == float("inf"):
            raise PlanError(f"step {sid!r}: duration must be a non-negative number, got {duration!r}")
        after = item.get("after") or []
        if isinstance(after, str):
            after = [after]
        if not isinstance(after, list):
            raise PlanError(f"step {sid!r}: after must be a list of step ids")
        requires = item.get("requires") or []
        if isinstance(requires, str):
            requires = [requires]
        task_type = item.get("task_type")
        timeout = item.get("timeout_s")
        steps.append(Step(sid, float(duration), tuple(str(a) for a in after), str(item.get("title") or ""),
                          str(task_type) if task_type else None, item.get("payload"),
                          frozenset(str(r) for r in requires), float(timeout) if timeout else None))
    for step in steps:
        for dep in step.after:
            if dep not in seen:
                raise PlanError(f"step {step.id!r} comes after {dep!r}, which is not a step of this plan")
            if dep == step.id:
                raise PlanCycle([step.id, step.id])
    return steps


# -- goal decomposition ---------------------------------------------------------------------

_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+?)\s*$")
_INLINE_NUMBERED = re.compile(r"(?:^|\s)\(?\d+[.)]\s+")
_SEQUENCE = re.compile(r"(?:[,;]\s*|\s+)(?:and\s+then|then|after\s+that|afterwards|next|finally|followed\s+by|"
                       r"and\s+finally|lastly|subsequently)\b[,:]?\s*", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_AFTER = re.compile(r"\s+(?:after|once)\s+", re.I)
_BEFORE = re.compile(r"\s+before\s+", re.I)
_AND = re.compile(r"(\s+(?:and|plus|as\s+well\s+as)\s+|\s*&\s*)", re.I)
_LEADING = re.compile(r"^(?:first(?:ly)?|to\s+begin(?:\s+with)?|start\s+by|begin\s+by|and|also|then|we\s+need\s+to|"
                      r"i\s+need\s+to|need\s+to|please)\b[,:]?\s*", re.I)
_DURATION = re.compile(r"\s*\(\s*(\d+(?:\.\d+)?)\s*(min(?:ute)?s?|m|h(?:ours?|rs?)?|d(?:ays?)?|w(?:eeks?)?)?\s*\)\s*$",
                       re.I)
_UNIT_HOURS = {"m": 1 / 60, "min": 1 / 60, "h": 1.0, "d": 24.0, "w": 168.0}


def _clean(text: str) -> tuple[str, float]:
    text = text.strip().strip(".;:,!").strip()
    duration = DEFAULT_DURATION
    m = _DURATION.search(text)
    if m:
        duration = float(m.group(1))
        unit = (m.group(2) or "").lower()
        if unit:
            duration *= _UNIT_HOURS["min" if unit.startswith("min") else unit[0]]
        text = text[:m.start()].strip()
    previous = None
    while previous != text:
        previous = text
        text = _LEADING.sub("", text).strip()
    return text.strip(".;:,!").strip(), duration


# Common imperative verbs: "X and <verb> …" starts a new step; "research and development budget" does not.
_VERB_LIST = """
add analyse analyze announce apply approve archive assemble assess audit back backup benchmark book build buy
calculate call check choose clean clear close code collect commit compare compile configure confirm contact copy
create debug decide define delete deliver deploy design detect discuss document download draft edit email enable
estimate evaluate execute export fetch file fill find finish fix format gather generate get hire identify implement
import improve inform inspect install integrate interview investigate label launch load log make measure meet merge
migrate monitor move notify open optimise optimize order organise organize pack paint parse pay pick plan plot
post prepare present print process profile prototype publish purchase push read rebuild record refactor register
release remove render repair replace report request research reserve reset resolve restart restore review rewrite
run save scan schedule scrape secure select send set setup ship sign sort split stage start stop store submit
summarise summarize survey sync tag test track train transfer translate tune update upgrade upload validate verify
visit wash watch write cook eat feed drive take bring drop go walk sell hold host
"""
_VERBS = frozenset(_VERB_LIST.split())


def _parallel_parts(clause: str) -> list[str]:
    """Split one stage into parallel steps: at commas, and at 'and'/'plus' when a verb starts the next part."""
    pieces = [p.strip() for p in re.split(r"\s*,\s*(?:and\s+)?", clause) if p.strip()]
    out: list[str] = []
    for piece in pieces:
        parts = _AND.split(piece)
        current = parts[0]
        for sep, nxt in zip(parts[1::2], parts[2::2], strict=True):
            if nxt.split() and nxt.split()[0].lower() in _VERBS and len(current.split()) >= 2:
                out.append(current)
                current = nxt
            else:
                current = f"{current}{sep}{nxt}"
        out.append(current)
    return out


def _stages(goal: str) -> tuple[list[list[str]], str]:
    lines = [ln for ln in goal.splitlines() if ln.strip()]
    items = [m.group(1) for m in (_LIST_ITEM.match(ln) for ln in lines) if m]
    if len(items) >= 2:
        return [[i] for i in items], "explicit list"
    inline = [p for p in _INLINE_NUMBERED.split(goal) if p.strip()]
    if len(_INLINE_NUMBERED.findall(goal)) >= 2:
        return [[p] for p in inline[-len(_INLINE_NUMBERED.findall(goal)):]], "numbered list"
    if ";" in goal and len([p for p in goal.split(";") if p.strip()]) >= 2:
        clauses = [p for p in goal.split(";") if p.strip()]
        method = "ordered clauses"
    else:
        clauses = []
        for sentence in _SENTENCE.split(goal.strip()):
            clauses += [c for c in _SEQUENCE.split(sentence) if c and c.strip()]
        method = "ordered clauses" if len(clauses) > 1 else "conjunctions"
    stages: list[list[str]] = []
    for clause in clauses:
        if _AFTER.search(clause) or _BEFORE.search(clause):
            method = "ordered clauses"
        # "deploy after the tests pass" → the tests first; "write docs before release" → docs first.
        m = _AFTER.split(clause, maxsplit=1)
        ordered = [m[1], m[0]] if len(m) == 2 and len(m[0].split()) >= 1 and len(m[1].split()) >= 1 else [clause]
        if len(ordered) == 1:
            b = _BEFORE.split(clause, maxsplit=1)
            ordered = b if len(b) == 2 else [clause]
        for part in ordered:
            stages.append(_parallel_parts(part))
    if any(len(s) > 1 for s in stages) and method == "conjunctions":
        method = "conjunctions (parallel)"
    return stages, method


def decompose(goal: str) -> tuple[list[Step], dict[str, Any]]:
    """Steps from a goal sentence: explicit lists and ordered clauses run in sequence; parts joined by
    'and' or commas inside one clause run in parallel. A trailing '(3h)' or '(2)' gives a duration."""
    if not isinstance(goal, str) or not goal.strip():
        raise PlanError('a plan needs "steps" or a "goal" sentence to decompose')
    stages, method = _stages(goal)
    steps: list[Step] = []
    previous: list[str] = []
    levels: list[list[str]] = []
    for stage in stages:
        current: list[str] = []
        for part in stage:
            title, duration = _clean(part)
            if not title:
                continue
            sid = f"s{len(steps) + 1}"
            steps.append(Step(sid, duration, tuple(previous), title))
            current.append(sid)
        if current:
            levels.append(current)
            previous = current
    if not steps:
        raise PlanError(f"the goal {goal!r} holds no step to plan")
    return steps, {"method": method, "stages": levels}


# -- ordering and scheduling (pure) ------------------------------------------------------------

def _find_cycle(steps: Sequence[Step], among: set[str]) -> list[str]:
    deps = {s.id: [d for d in s.after if d in among] for s in steps if s.id in among}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps[node]:
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                return list(reversed(cycle))  # reading order: a → b means b comes after a
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(deps):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return sorted(among)


def topological_order(steps: Sequence[Step]) -> list[str]:
    """Kahn's order; among steps ready together, the one listed first goes first. Raises PlanCycle."""
    position = {s.id: i for i, s in enumerate(steps)}
    waiting = {s.id: len(set(s.after)) for s in steps}
    children: dict[str, list[str]] = {s.id: [] for s in steps}
    for s in steps:
        for dep in set(s.after):
            children[dep].append(s.id)
    ready = sorted((sid for sid, n in waiting.items() if n == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        sid = ready.pop(0)
        order.append(sid)
        for child in children[sid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
        ready.sort(key=position.__getitem__)
    if len(order) != len(steps):
        raise PlanCycle(_find_cycle(steps, {s.id for s in steps} - set(order)))
    return order


@dataclass
class Schedule:
    order: list[str]
    start: dict[str, float]
    finish: dict[str, float]
    slack: dict[str, float]
    makespan: float
    critical_path: list[str]
    levels: list[list[str]] = field(default_factory=list)


def schedule(steps: Sequence[Step]) -> Schedule:
    """Earliest start and finish of every step (unlimited workers), slack, makespan and the critical path."""
    order = topological_order(steps)
    by_id = {s.id: s for s in steps}
    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    depth: dict[str, int] = {}
    for sid in order:
        step = by_id[sid]
        start[sid] = max((finish[d] for d in step.after), default=0.0)
        finish[sid] = start[sid] + step.duration
        depth[sid] = max((depth[d] + 1 for d in step.after), default=0)
    makespan = max(finish.values(), default=0.0)
    # Latest finish without delaying the makespan, walking the order backwards.
    latest: dict[str, float] = {}
    children: dict[str, list[str]] = {s.id: [] for s in steps}
    for s in steps:
        for dep in s.after:
            children[dep].append(s.id)
    for sid in reversed(order):
        latest[sid] = min((latest[c] - by_id[c].duration for c in children[sid]), default=makespan)
    slack = {sid: round(latest[sid] - finish[sid], 9) for sid in order}
    # The critical path: from the step finishing last, back through the predecessor that finishes latest.
    path: list[str] = []
    if order:
        position = {sid: i for i, sid in enumerate(order)}
        current: str | None = max(order, key=lambda s: (finish[s], -position[s]))
        while current is not None:
            path.append(current)
            deps = by_id[current].after
            current = max(deps, key=lambda d: (finish[d], -position[d])) if deps else None
        path.reverse()
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for sid in order:
        levels[depth[sid]].append(sid)
    return Schedule(order, start, finish, slack, makespan, path, levels)


def _peak_parallelism(sched: Schedule) -> int:
    edges = sorted([(t, 1) for t in sched.start.values()] + [(t, -1) for t in sched.finish.values()],
                   key=lambda e: (e[0], e[1]))
    peak = running = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def steps_of(payload: Any) -> tuple[str, list[Step], dict[str, Any] | None]:
    """The goal and steps of a plan payload: ``{"goal", "steps"}``, ``{"goal"}`` alone, or a goal string."""
    if isinstance(payload, str):
        payload = {"goal": payload}
    if not isinstance(payload, dict):
        raise PlanError('a plan needs {"goal": "…", "steps": [...]} or a goal sentence')
    goal = str(payload.get("goal") or "")
    if payload.get("steps"):
        return goal, parse_steps(payload["steps"]), None
    steps, how = decompose(goal)
    return goal, steps, how


def build_plan(payload: Any) -> dict[str, Any]:
    """The full plan: steps, DAG, topological order, schedule, critical path and makespan."""
    return plan_of(*steps_of(payload))


def plan_of(goal: str, steps: list[Step], decomposition: dict[str, Any] | None = None) -> dict[str, Any]:
    sched = schedule(steps)
    out: dict[str, Any] = {
        "goal": goal,
        "steps": [s.to_dict() for s in steps],
        "dag": {"nodes": [s.id for s in steps], "edges": [[d, s.id] for s in steps for d in s.after]},
        "order": sched.order,
        "levels": sched.levels,
        "critical_path": sched.critical_path,
        "makespan": sched.makespan,
        "schedule": {sid: {"start": sched.start[sid], "finish": sched.finish[sid], "slack": sched.slack[sid]}
                     for sid in sched.order},
        "peak_parallelism": _peak_parallelism(sched),
        "executable_steps": [s.id for s in steps if s.executable],
    }
    if decomposition is not None:
        out["decomposition"] = decomposition
    return out


# -- allocation to live nodes (pure over a list of nodes) ----------------------------------------

def _able(step: Step, node: NodeInfo) -> bool:
    if step.task_type is not None and step.task_type not in node.task_types:
        return False
    return step.requires <= node.capabilities


def _rank(step: Step, nodes: Sequence[NodeInfo], assigned: dict[str, int]) -> list[NodeInfo]:
    def cost(n: NodeInfo) -> tuple[float, int, str]:
        return (round(n.load + assigned.get(n.node_id, 0) / max(1, n.capacity), 6), assigned.get(n.node_id, 0),
                n.name)
    return sorted((n for n in nodes if _able(step, n)), key=cost)


def allocate_steps(steps: Sequence[Step], nodes: Sequence[NodeInfo]) -> dict[str, Any]:
    """Each step to the least loaded live node able to run it (its task type and every required capability),
    counting what this allocation already gave each node; the primary and a fallback on another node."""
    assigned: dict[str, int] = {}
    assignments: dict[str, dict[str, Any]] = {}
    unassigned: dict[str, str] = {}
    for sid in topological_order(steps):
        step = next(s for s in steps if s.id == sid)
        if step.task_type is None and not step.requires:
            unassigned[sid] = "no task_type or requires to match a node on"
            continue
        ranked = _rank(step, nodes, assigned)
        if not ranked:
            need = step.task_type or "-"
            caps = ", ".join(sorted(step.requires)) or "-"
            unassigned[sid] = f"no live node serves task type {need} with capabilities {{{caps}}}"
            continue
        chosen = ranked[0]
        assigned[chosen.node_id] = assigned.get(chosen.node_id, 0) + 1
        fallback = next((n for n in ranked[1:] if n.host != chosen.host), ranked[1] if len(ranked) > 1 else None)
        assignments[sid] = {
            "node_id": chosen.node_id, "node_name": chosen.name, "node_type": chosen.node_type.value,
            "why": f"load {chosen.load:.2f}, {len(ranked)} able node(s)",
            "fallback": None if fallback is None else {"node_id": fallback.node_id, "node_name": fallback.name,
                                                       "node_type": fallback.node_type.value},
        }
    return {"assignments": assignments, "unassigned": unassigned,
            "nodes_considered": [n.name for n in nodes],
            "per_node": {n.name: assigned.get(n.node_id, 0) for n in nodes if assigned.get(n.node_id)}}


def contingency_for(steps: Sequence[Step], nodes: Sequence[NodeInfo]) -> dict[str, Any]:
    """A fallback node for each step (another host first), and the steps with a single point of failure."""
    allocation = allocate_steps(steps, nodes)
    plan: dict[str, Any] = {}
    single: list[str] = []
    for sid, a in allocation["assignments"].items():
        fallback = a["fallback"]
        plan[sid] = {"primary": a["node_name"], "primary_id": a["node_id"],
                     "fallback": fallback["node_name"] if fallback else None,
                     "fallback_id": fallback["node_id"] if fallback else None}
        if fallback is None:
            plan[sid]["risk"] = f"single point of failure: only {a['node_name']} can run it"
            single.append(sid)
    for sid, why in allocation["unassigned"].items():
        plan[sid] = {"primary": None, "fallback": None, "risk": why}
    return {"contingency": plan, "single_points_of_failure": single}
