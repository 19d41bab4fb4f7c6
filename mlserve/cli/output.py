"""Printing: results (tables, status, ``--json``) on stdout; progress, warnings and errors on stderr.

Every piece of text that can carry user-controlled characters (manifest keys and values, target
names, paths, provider messages) goes through ``clean``: control characters (C0 except newline and
tab, DEL, C1, and the bidirectional overrides) are shown as ``\\x1b``/``\\u202e`` so that nothing a
project contains can move the cursor, recolour, retitle or reorder a terminal. Values placed into
Rich markup also go through ``plain`` so that a value such as ``[red]x`` prints literally.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Iterator

from ..report import Progress, Reporter
from .heartbeat import Heartbeat, interval_from_env

_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), *range(0x7f, 0xa0)) if c not in (0x09, 0x0a)}
_UNSAFE.update({c: f"\\u{c:04x}" for c in (0x061c, 0x200e, 0x200f, *range(0x202a, 0x202f),
                                          *range(0x2066, 0x206a))})

_console = None
_out = None


def clean(text: Any) -> str:
    """``text`` with every terminal control character shown as an escape (``\\x1b``)."""
    return str(text).translate(_UNSAFE)


def plain(text: Any) -> str:
    """``text`` made safe to embed in Rich markup: control characters escaped, markup literal."""
    from rich.markup import escape
    return escape(clean(text))


def console():
    """The stderr console, created on first use (Rich is imported only when something prints)."""
    global _console
    if _console is None:
        from rich.console import Console
        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


def out():
    """The stdout console, for results (status lines and tables) that scripts read."""
    global _out
    if _out is None:
        from rich.console import Console
        _out = Console(highlight=False, soft_wrap=True)
    return _out


def interactive() -> bool:
    return sys.stdin.isatty() and os.environ.get("CI", "").lower() not in ("true", "1")


def emit_json(obj: Any) -> None:
    # json.dumps escapes every control character (ensure_ascii), so this is terminal-safe too.
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A line on stderr. ``message`` is markup written by the CLI; values in it go through ``plain``."""
    console().print(clean(message))


def warning(message: str) -> None:
    """A warning on stderr; a hint in it that names an ``mlserve`` command repeats -f/--state."""
    from .hints import with_user_options
    console().print(f"[yellow]warning:[/yellow] {plain(with_user_options(message))}")


def result_line(message: str) -> None:
    """A result line on stdout (markup, values through ``plain``)."""
    out().print(clean(message))


def table(title: str, columns: list[str], rows: list[list[Any]], *, to_stdout: bool = True) -> None:
    """A table of plain values (never markup): results, so on stdout unless told otherwise."""
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*["" if v is None else plain(v) for v in row])
    (out() if to_stdout else console()).print(t)


class _RichProgress(Progress):
    def __init__(self, bar, task) -> None:
        self._bar, self._task = bar, task

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._task, amount)

    def update(self, description: str) -> None:
        self._bar.update(self._task, description=plain(description))


class _LineProgress(Progress):
    """Progress in a log: each ``log`` event is a line (and counts as output for heartbeats)."""

    def __init__(self, line, beat) -> None:
        self._line, self._beat = line, beat

    def log(self, event: str) -> None:
        self._line(event)
        self._beat.touch()


class RichReporter(Reporter):
    """Steps as dim lines, long work as a spinner or a bar (a terminal) or as a start line and
    heartbeats (logs), all on stderr. Use it as a context manager: leaving it stops heartbeats."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        self.quiet = quiet
        self._beat = None if quiet or console().is_terminal else Heartbeat(self._line, interval_from_env())

    def __enter__(self) -> "RichReporter":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._beat is not None:
            self._beat.end()

    def _line(self, text: str) -> None:
        console().print(f"[dim]•[/dim] {plain(text)}")

    def step(self, message: str) -> None:
        super().step(message)
        if not self.quiet:
            self._line(message)
        if self._beat is not None:
            self._beat.begin(message)

    def warn(self, message: str) -> None:
        super().warn(message)
        warning(message)
        if self._beat is not None:
            self._beat.touch()

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[Progress]:
        self.lines.append(description)
        if self.quiet:
            yield Progress()
            return
        started = time.monotonic()
        if self._beat is None:
            with self._bar(description, total) as step:
                yield step
        else:
            self._line(f"{description} ...")
            self._beat.begin(description)
            try:
                yield (step := _LineProgress(self._line, self._beat))
            finally:
                self._beat.end()
        # Reached only when the block returned: a step that raised never says "done".
        outcome = "done" if step.succeeded else "[red]failed[/red]"
        console().print(f"[dim]•[/dim] {plain(description)}: {outcome} "
                        f"({time.monotonic() - started:.1f} s)")

    @contextlib.contextmanager
    def _bar(self, description: str, total: float | None) -> Iterator[Progress]:
        from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), DownloadColumn()]
        columns.append(TimeElapsedColumn())
        with Bar(*columns, console=console(), transient=True) as bar:
            yield _RichProgress(bar, bar.add_task(plain(description), total=total))


#: commands whose outcome goes to the CI job's summary page when ``$GITHUB_STEP_SUMMARY`` is set
SUMMARY_COMMANDS = ("deploy", "plan", "migrate", "delete", "rollback")


def step_summary(command: str, code: int, result: Any) -> None:
    """Append ``command``'s outcome (``result``: its ``--json`` object, or the error's) as
    Markdown to ``$GITHUB_STEP_SUMMARY`` when GitHub Actions set it; the same text the action
    writes (``mlserve.ci_step``, which unsets the variable for the mlserve it runs)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path or command not in SUMMARY_COMMANDS:
        return
    from ..ci_step import outputs, summary
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(summary(command, code, result, outputs(command, code, result)))
    except OSError as exc:     # the summary is a courtesy: never fail the command for it
        print(f"warning: cannot write the job summary {path}: {exc.strerror or exc}",
              file=sys.stderr)
