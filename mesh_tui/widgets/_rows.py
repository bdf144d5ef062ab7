"""Incremental DataTable updates keyed by id: add, remove and update only the cells that changed.

Panes describe each row as plain *specs* — ``(text, style, sort_key)`` per
cell — which compare cheaply; a ``Cell`` (a Rich ``Text``) is built only for
a cell that is new or changed, and all changed cells of one refresh are
written with a single repaint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

Spec = tuple[str, str, Any]  # text, style, sort key (None: the text)


def spec(text: str, style: str = "", sort_key: Any = None) -> Spec:
    return (text, style, sort_key)


class Cell(Text):
    """A table cell that sorts by a value of its own (a load, an age) rather than by its text."""

    def __init__(self, text: str = "", style: str = "", sort_key: Any = None) -> None:
        super().__init__(text, style=style, end="", no_wrap=True, overflow="ellipsis")
        self.sort_key = text if sort_key is None else sort_key


def sort_value(cell: Any) -> Any:
    key = getattr(cell, "sort_key", None)
    if key is None:
        key = cell.plain if isinstance(cell, Text) else str(cell)
    return (0, key) if isinstance(key, int | float) else (1, str(key).lower())


def sync_rows(table: DataTable[Any], columns: Sequence[str], rows: Mapping[str, tuple[Spec, ...]],
              shown: dict[str, tuple[Spec, ...]], sort_column: str | None = None) -> bool:
    """Make ``table`` show exactly ``rows``, touching only what changed.

    ``shown`` is the caller's memory of what the table holds (updated in
    place). Returns True when the order may have changed (a row came or went,
    or a cell of ``sort_column`` changed), so the caller knows to re-sort.
    """
    reorder = False
    sort_index = columns.index(sort_column) if sort_column in columns else -1
    for key in [k for k in shown if k not in rows]:
        table.remove_row(key)
        del shown[key]
        reorder = True
    changes: list[tuple[str, str, Cell]] = []
    for key, specs in rows.items():
        old = shown.get(key)
        if old is None:
            table.add_row(*(Cell(*s) for s in specs), key=key)
            reorder = True
        elif old != specs:
            for i, (column, new, before) in enumerate(zip(columns, specs, old, strict=True)):
                if new != before:
                    changes.append((key, column, Cell(*new)))
                    reorder = reorder or i == sort_index
        shown[key] = specs
    write_cells(table, changes)
    return reorder


def write_cells(table: DataTable[Any], changes: Sequence[tuple[str, str, Any]]) -> None:
    """``update_cell`` for many cells with one repaint (``update_cell`` repaints per call)."""
    if not changes:
        return
    data = getattr(table, "_data", None)
    if not isinstance(data, dict) or not hasattr(table, "_update_count"):
        for row_key, column_key, value in changes:  # a DataTable without those internals: the public way
            table.update_cell(row_key, column_key, value)
        return
    for row_key, column_key, value in changes:
        data[RowKey(row_key)][ColumnKey(column_key)] = value
    table._update_count += 1
    table.refresh()


def cursor_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor, if any."""
    if table.row_count == 0:
        return None
    try:
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
    except Exception:
        return None
    return row_key.value
