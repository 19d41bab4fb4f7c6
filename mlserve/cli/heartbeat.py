"""Heartbeats for logs: while a stage runs and prints nothing, a line every few seconds.

On a terminal a spinner shows that mlserve is alive; in a CI log (stderr not a terminal) a stage
that takes minutes (a venv's pip install, a model that loads slowly, an SSH rollout) would look
hung, and a CI job with a no-output timeout would kill it. ``Heartbeat`` prints
``• STAGE: still running (N s)`` whenever ``interval`` seconds pass without output, from one
daemon thread that exits when no stage is running.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

# Seconds between "still running" lines (the issue asks for at least one every 10 s);
# MLSERVE_HEARTBEAT_SECONDS overrides it (tests shorten it).
HEARTBEAT_SECONDS = 9.0


def interval_from_env() -> float:
    try:
        return max(0.05, float(os.environ.get("MLSERVE_HEARTBEAT_SECONDS", "") or HEARTBEAT_SECONDS))
    except ValueError:
        return HEARTBEAT_SECONDS


class Heartbeat:
    """``begin(stage)`` starts (or replaces) the running stage, ``touch()`` records other output,
    ``end()`` stops beating until the next ``begin``."""

    def __init__(self, emit: Callable[[str], None], interval: float) -> None:
        self._emit, self._interval = emit, interval
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._stage: str | None = None
        self._started = self._last = 0.0
        self._thread: threading.Thread | None = None

    def begin(self, stage: str) -> None:
        with self._lock:
            self._stage, self._started = stage, time.monotonic()
            self._last = self._started
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mlserve-heartbeat",
                                                daemon=True)
                self._thread.start()

    def touch(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self._stage, thread = None, self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stage is None:
                    self._thread = None
                    self._wake.clear()
                    return
                now = time.monotonic()
                wait = self._last + self._interval - now
                if wait <= 0:
                    self._emit(f"{self._stage}: still running ({now - self._started:.0f} s)")
                    self._last, wait = now, self._interval
            self._wake.wait(wait)
            self._wake.clear()
