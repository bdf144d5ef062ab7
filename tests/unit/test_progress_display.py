"""How ``submit --wait`` shows progress: plain lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io

from mesh_core.model import Task, TaskStatus
from mesh_tui.progress import ProgressShown, progress_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _at(fraction: float, message: str | None) -> Task:
    return Task("t1", "render", status=TaskStatus.RUNNING, progress=fraction, progress_message=message)


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    shown = ProgressShown(out)
    shown(_at(0.4, "step 2/5"))
    shown(_at(1.0, None))
    shown.close()
    assert out.getvalue().splitlines() == ["progress 40% step 2/5", "progress 100%"]
    assert progress_line(_at(0.004, "")) == "progress 0%"


def test_a_rich_bar_on_a_terminal() -> None:
    out = Terminal()
    shown = ProgressShown(out)
    shown(_at(0.4, "step 2/5"))
    shown(_at(0.6, "step 3/5"))
    shown.close()
    text = out.getvalue()
    assert "render step 3/5" in text and "60%" in text and "progress 60%" not in text
    assert "━" in text  # rich's bar
