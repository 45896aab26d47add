"""A rich progress bar for the long steps outside training (export, benchmark), like training's.

Training has Lightning's bar; exporting a model or timing its forms would otherwise sit silent for
minutes. On a terminal the bar redraws in place and is removed when done; in a log (no terminal)
rich prints nothing live, so CI output stays readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """Yield `step(label)`: one step done, `label` naming it."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[label]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total, label="")

        def step(label: str) -> None:
            bar.update(task, advance=1, label=label)

        yield step
