"""Printing: human output (Rich) on stderr, ``--json`` objects and results on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Iterator

from ..report import Progress, Reporter

_console = None


def console():
    """The stderr console, created on first use (Rich is imported only when something prints)."""
    global _console
    if _console is None:
        from rich.console import Console
        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


def interactive() -> bool:
    return sys.stdin.isatty() and os.environ.get("CI", "").lower() not in ("true", "1")


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    console().print(message)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console().print(t)


class _RichProgress(Progress):
    def __init__(self, bar, task) -> None:
        self._bar, self._task = bar, task

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._task, amount)

    def update(self, description: str) -> None:
        self._bar.update(self._task, description=description)


class RichReporter(Reporter):
    """Steps as dim lines, long work as a spinner or a bar, all on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        self.quiet = quiet

    def step(self, message: str) -> None:
        super().step(message)
        if not self.quiet:
            console().print(f"[dim]•[/dim] {message}")

    def warn(self, message: str) -> None:
        super().warn(message)
        console().print(f"[yellow]warning:[/yellow] {message}")

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[Progress]:
        self.lines.append(description)
        if self.quiet:
            yield Progress()
            return
        if not console().is_terminal:   # logs and CI: one line when done, no redraws
            yield Progress()
            console().print(f"[dim]•[/dim] {description}: done")
            return
        from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), DownloadColumn()]
        columns.append(TimeElapsedColumn())
        with Bar(*columns, console=console(), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield _RichProgress(bar, task)
        console().print(f"[dim]•[/dim] {description}: done")
