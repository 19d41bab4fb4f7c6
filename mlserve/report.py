"""How the core reports progress without knowing about terminals.

``service`` and adapters call a ``Reporter``; the CLI passes one that draws Rich spinners and
progress bars on stderr, tests pass the plain one (which records what it was told).
"""

from __future__ import annotations

import contextlib
from typing import Iterator


class Progress:
    """What a ``progress`` block can tell its reporter while it runs."""

    succeeded = True

    def failed(self) -> None:
        """The step ended without raising but did not succeed (it returns a failure reason): the
        reporter must not say it is done."""
        self.succeeded = False

    def advance(self, amount: float = 1) -> None:
        """Move the bar on by ``amount``."""

    def update(self, description: str) -> None:
        """Change the text shown beside the bar."""

    def log(self, event: str) -> None:
        """An event a log shows as a line of its own (an image build step, a pushed layer); a
        live bar shows it as its text."""
        self.update(event)


class Reporter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, message: str) -> None:
        """A stage of the work has started (shown as a line)."""
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append("warning: " + message)

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[Progress]:
        """A bar (``total`` known) or spinner for long work."""
        self.lines.append(description)
        yield Progress()
