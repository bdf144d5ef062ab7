"""Side-by-side conflict views (pure): which JSON paths differ, pretty lines tagged by path, a safe merge."""

from __future__ import annotations

import json
from typing import Any

ROOT = "$"


def _child(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


def differing_paths(a: Any, b: Any, path: str = ROOT) -> list[str]:
    """Every deepest path where ``a`` and ``b`` disagree (a key on one side only counts as a difference)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                out.append(_child(path, key))
            else:
                out += differing_paths(a[key], b[key], _child(path, key))
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = []
        for i in range(max(len(a), len(b))):
            if i >= len(a) or i >= len(b):
                out.append(_child(path, i))
            else:
                out += differing_paths(a[i], b[i], _child(path, i))
        return out
    return [] if a == b and type(a) is type(b) else [path]


def merge(a: Any, b: Any, path: str = ROOT) -> tuple[Any, list[str]]:
    """Deep-merge ``a`` and ``b``: mappings by key, lists as an ordered union, equal scalars.

    Returns the merged value and the paths that disagree; the merge is only
    safe (compatible) when that list is empty.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        merged: dict[str, Any] = {}
        clashes: list[str] = []
        for key in list(a) + [k for k in b if k not in a]:
            if key in a and key in b:
                merged[key], sub = merge(a[key], b[key], _child(path, key))
                clashes += sub
            else:
                merged[key] = a[key] if key in a else b[key]
        return merged, clashes
    if isinstance(a, list) and isinstance(b, list):
        out = list(a)
        for item in b:
            if item not in out:
                out.append(item)
        return out, []
    if a == b and type(a) is type(b):
        return a, []
    return a, [path]


def pretty_lines(value: Any, indent: int = 2) -> list[tuple[str, str]]:
    """``value`` as indented JSON, one ``(path, line)`` per line, so a view can mark the lines that differ."""
    lines: list[tuple[str, str]] = []

    def emit(v: Any, path: str, depth: int, prefix: str, comma: str) -> None:
        pad = " " * (indent * depth)
        if isinstance(v, dict) and v:
            lines.append((path, f"{pad}{prefix}{{"))
            items = list(v.items())
            for i, (k, item) in enumerate(items):
                emit(item, _child(path, k), depth + 1, f"{json.dumps(str(k))}: ", "," if i < len(items) - 1 else "")
            lines.append((path, f"{pad}}}{comma}"))
        elif isinstance(v, list) and v:
            lines.append((path, f"{pad}{prefix}["))
            for i, item in enumerate(v):
                emit(item, _child(path, i), depth + 1, "", "," if i < len(v) - 1 else "")
            lines.append((path, f"{pad}]{comma}"))
        else:
            lines.append((path, f"{pad}{prefix}{json.dumps(v, ensure_ascii=False, default=str)}{comma}"))

    emit(value, ROOT, 0, "", "")
    return lines


def is_marked(path: str, differing: list[str]) -> bool:
    """A line is marked when its path is a differing path or lies inside one."""
    return any(path == d or path.startswith(d + ".") or path.startswith(d + "[") for d in differing)
