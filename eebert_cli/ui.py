"""Console output: rich progress bars and tables on stderr/stdout, silent under --json."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err = Console(stderr=True)
out = Console()


class UI:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    @contextlib.contextmanager
    def progress(self, what: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar; yields ``advance(n)``."""
        if self.quiet or not err.is_terminal and total < 1:
            yield lambda n: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=False, disable=self.quiet) as bar:
            task = bar.add_task(what, total=total)
            yield lambda n: bar.advance(task, n)

    def log(self, msg: str) -> None:
        if not self.quiet:
            err.print(msg)


SILENT = UI(quiet=True)
