"""The diagnostic handlers every general node serves."""

from __future__ import annotations

import asyncio
from typing import Any

from ..handlers import HandlerSpec, TaskContext, make_spec

CAPABILITIES = frozenset({"basic_processing", "memory_storage"})


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


def handlers() -> list[HandlerSpec]:
    return [make_spec("echo", echo, {"basic_processing"}), make_spec("sleep", sleep, {"basic_processing"}),
            make_spec("fail", fail, {"basic_processing"})]
