"""The sensor's alert-rule language, pure: parsing ``"cpu_percent > 90 for 10s"`` (or its mapping form) into a
``Rule``, and judging one observation at a time against the rule's hold time. No I/O."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_RULE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*"
                   r"(?:for\s+(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?)?\s*$")


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str
    threshold: float
    for_seconds: float = 0.0
    severity: str = "warning"

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def text(self) -> str:
        window = f" for {self.for_seconds:g}s" if self.for_seconds else ""
        return f"{self.metric} {self.op} {self.threshold:g}{window}"


def parse_rule(raw: Any) -> Rule:
    """``"cpu_percent > 90 for 10s"`` or ``{"metric", "op", "threshold", "for_seconds"?, "name"?, "severity"?}``."""
    if isinstance(raw, str):
        m = _RULE.match(raw)
        if not m:
            raise ConfigError(f"config: sensor rule {raw!r} is not understood "
                              "(allowed: 'METRIC OP NUMBER [for N s|m|h]', e.g. 'cpu_percent > 90 for 10s')")
        metric, op, threshold, window, unit = m.groups()
        seconds = float(window) * _UNITS[unit or "s"] if window else 0.0
        return Rule(raw.strip(), metric, op, float(threshold), seconds)
    if isinstance(raw, dict):
        try:
            op = str(raw.get("op", ">"))
            if op not in _OPS:
                raise ValueError(f"op {op!r} is not one of {', '.join(_OPS)}")
            rule = Rule("", str(raw["metric"]), op, float(raw["threshold"]), float(raw.get("for_seconds", 0.0)),
                        str(raw.get("severity", "warning")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"config: sensor rule {raw!r} is incomplete or wrong ({exc}); "
                              "it needs metric, threshold and optionally op, for_seconds, name, severity") from None
        if rule.for_seconds < 0 or not math.isfinite(rule.threshold):
            raise ConfigError(f"config: sensor rule {raw!r}: for_seconds must be >= 0 and threshold finite")
        return Rule(str(raw.get("name") or rule.text()), rule.metric, rule.op, rule.threshold, rule.for_seconds,
                    rule.severity)
    raise ConfigError(f"config: sensor rule {raw!r} must be a string or a mapping")


@dataclass
class RuleState:
    """Where one rule stands: since when it has held, and whether its alert is up."""

    since: float | None = None
    active: bool = False
    raised_at: float | None = None


def judge(rule: Rule, state: RuleState, value: float | None, now: float) -> str | None:
    """Advance ``state`` by one observation; returns ``"raise"``, ``"clear"`` or None. A missing value changes
    nothing (a source that failed once neither raises nor clears)."""
    if value is None:
        return None
    if rule.holds(value):
        if state.since is None:
            state.since = now
        if not state.active and now - state.since >= rule.for_seconds:
            state.active = True
            state.raised_at = now
            return "raise"
        return None
    state.since = None
    if state.active:
        state.active = False
        return "clear"
    return None
