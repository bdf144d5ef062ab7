"""The handlers every general node serves: diagnostics, shared memory, and numeric statistics."""

from __future__ import annotations

import asyncio
import math
import statistics
from typing import Any

from ..handlers import HandlerSpec, TaskContext, make_spec

CAPABILITIES = frozenset({"basic_processing", "memory_storage", "statistics"})


async def echo(payload: Any) -> Any:
    """Returns its payload unchanged."""
    return payload


async def sleep(payload: Any) -> dict[str, float]:
    """Sleeps ``{"seconds": s}`` (default 1) and says how long it slept."""
    seconds = payload.get("seconds", 1.0) if isinstance(payload, dict) else payload
    try:
        seconds = float(seconds if seconds is not None else 1.0)
    except (TypeError, ValueError):
        raise ValueError(f"sleep needs a number of seconds, got {seconds!r}") from None
    if seconds < 0:
        raise ValueError("sleep needs a non-negative number of seconds")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


class DiagnosticFailure(RuntimeError):
    """Raised on purpose by the ``fail`` task type."""


async def fail(payload: Any, ctx: TaskContext) -> dict[str, int]:
    """Raises ``{"message": …}``; with ``{"times": n}`` only the first n attempts fail (a flaky task)."""
    message = payload.get("message") if isinstance(payload, dict) else payload
    times = payload.get("times") if isinstance(payload, dict) else None
    if times is not None and ctx.attempt > int(times):
        return {"attempt": ctx.attempt, "failed_before": int(times)}
    raise DiagnosticFailure(str(message or "failed on purpose"))


async def memory_store(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Writes ``{"key"?, "value", "memory_type"? = "fact", "priority"? = 5}`` to the shared memory."""
    if not isinstance(payload, dict) or "value" not in payload:
        raise ValueError('memory_store needs {"value": …} and optionally "key", "memory_type", "priority"')
    memory_type = str(payload.get("memory_type") or "fact")
    priority = int(payload.get("priority", 5))
    key = payload.get("key")
    stored = await ctx.remember(memory_type, payload["value"], priority=priority,
                                key=str(key) if key is not None else None)
    return {"key": stored, "memory_type": memory_type, "node_id": ctx.node_id}


async def memory_recall(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Reads ``{"key", "memory_type"?}`` (or a bare key) from this node's replica; siblings when in conflict."""
    key = payload.get("key") if isinstance(payload, dict) else payload
    if not key:
        raise ValueError('memory_recall needs {"key": …}')
    memory_type = payload.get("memory_type") if isinstance(payload, dict) else None
    found = await ctx.recall(str(key), memory_type)
    return {"key": found.key, "memory_type": found.memory_type, "value": found.value, "origin": found.origin,
            "siblings": [s.value for s in found.siblings]}


def _numbers(payload: Any) -> list[float]:
    values = payload.get("values", payload.get("data")) if isinstance(payload, dict) else payload
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError('analysis needs a non-empty list of numbers, or {"values": [...]}')
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"analysis: value #{i} ({v!r}) is not a finite number")
        out.append(float(v))
    return out


def describe(values: list[float]) -> dict[str, Any]:
    """Count, sum, mean, median, spread and quartiles of ``values`` (pure)."""
    n = len(values)
    ordered = sorted(values)
    out: dict[str, Any] = {
        "count": n, "sum": math.fsum(values), "mean": statistics.fmean(values), "median": statistics.median(values),
        "min": ordered[0], "max": ordered[-1], "range": ordered[-1] - ordered[0],
        "stdev": statistics.stdev(values) if n > 1 else 0.0, "pstdev": statistics.pstdev(values),
        "variance": statistics.variance(values) if n > 1 else 0.0,
        "quartiles": statistics.quantiles(values, n=4, method="inclusive") if n > 1 else [ordered[0]] * 3,
        "modes": statistics.multimode(values) if len(set(values)) < n else [],
    }
    q1, _, q3 = out["quartiles"]
    out["iqr"] = q3 - q1
    out["outliers"] = [v for v in values if v < q1 - 1.5 * out["iqr"] or v > q3 + 1.5 * out["iqr"]]
    return out


def analysis(payload: Any) -> dict[str, Any]:
    """Basic statistics of a numeric payload: ``[1, 2, 3]`` or ``{"values": [...]}``."""
    return describe(_numbers(payload))


def handlers() -> list[HandlerSpec]:
    return [make_spec("echo", echo, {"basic_processing"}), make_spec("sleep", sleep, {"basic_processing"}),
            make_spec("fail", fail, {"basic_processing"}),
            make_spec("memory_store", memory_store, {"memory_storage"}),
            make_spec("memory_recall", memory_recall, {"memory_storage"}),
            make_spec("analysis", analysis, {"statistics"})]
