"""How ``submit --wait`` shows a running task's progress (on standard error, so standard output stays the
result a script reads): a ``rich`` progress bar on a terminal, plain ``progress 40% step 2/5`` lines otherwise.

Never imports textual (the ``--no-ui`` and one-shot paths use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from mesh_core.model import Task

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def progress_line(task: Task) -> str:
    """One plain line for a progress report: ``progress 40% step 2/5``."""
    percent = round((task.progress or 0.0) * 100)
    return f"progress {percent}% {task.progress_message or ''}".rstrip()


class ProgressShown:
    """Called with the task each time its progress changes; ``close`` once the wait is over."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self._bar: Progress | None = None  # started at the first report on a terminal
        self._row: TaskID | None = None

    def __call__(self, task: Task) -> None:
        if not self.terminal:
            print(progress_line(task), file=self.stream, flush=True)
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
        if self._bar is None:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._row = self._bar.add_task(task.task_type, total=1.0)
        assert self._row is not None
        self._bar.update(self._row, completed=task.progress or 0.0,
                         description=f"{task.task_type} {task.progress_message or ''}".rstrip())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
