"""Console output: rich progress bars and tables on stderr/stdout, silent under --json."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

err = Console(stderr=True)
out = Console()


class RateColumn(ProgressColumn):
    """Items per second, e.g. "1,234 rows/s"."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} {self.unit}/s" if task.speed else "", style="progress.data.speed")


class UI:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    @contextlib.contextmanager
    def progress(self, what: str, total: int | None, unit: str | None = None) -> Iterator[Callable[[int], None]]:
        """A progress bar (``total`` None: unknown); yields ``advance(n)``. ``unit`` adds a rate column."""
        if self.quiet or not err.is_terminal and total is not None and total < 1:
            yield lambda n: None
            return
        rate = [RateColumn(unit)] if unit else []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *rate,
                      TimeElapsedColumn(), console=err, transient=False, disable=self.quiet) as bar:
            task = bar.add_task(what, total=total)
            yield lambda n: bar.advance(task, n)

    def log(self, msg: str) -> None:
        if not self.quiet:
            err.print(msg, soft_wrap=True)  # a warning stays one line, whatever the terminal's width


SILENT = UI(quiet=True)
