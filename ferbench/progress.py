"""Progress bars on stderr for long work (decoding, training); silent when not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True, soft_wrap=True)  # piped output: one line per message, never wrapped


@contextmanager
def progress_bar(description: str, total: int, enabled: bool | None = None):
    """Yield `advance(n, **fields)`; shows a bar on a terminal, a closing line otherwise."""
    enabled = sys.stderr.isatty() if enabled is None else enabled
    if not enabled:
        yield lambda n=1, **fields: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n=1, info: str | None = None):
            bar.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance
