"""``--timeout SECONDS`` for commands that change a target (deploy, rollback, migrate).

Contract: ``within(seconds, what)`` arms a real-time timer (``SIGALRM``) on the main thread. When
it expires, ``Expired`` is raised wherever the main thread is, once. Like ``KeyboardInterrupt``
it is a ``BaseException``: no ``except Exception`` in an adapter or SDK swallows it, and every
path that cleans up after Ctrl-C cleans up after it (a step stops the release it was starting;
what was created is in the journal already through ``ctx.record``; ``adapters.phases`` starts no
more steps and aborts the prepared ones). Leaving the block, it becomes ``TimedOut`` (a
``DeployError``, exit 1) with the fix.

``point_of_no_return()`` disarms the timer: the runner calls it when steps start to take
traffic, so a timeout never leaves a fleet half switched (switching takes seconds; the long
waits — build, upload, start, health, smoke — come before). Without a timer (``seconds`` None,
a thread other than the main one, or a platform without ``SIGALRM``) nothing is armed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from .errors import DeployError

_armed: list[bool] = []         # [ends_at_switch] while a timer is armed (at most one)


class TimedOut(DeployError):
    """The command's ``--timeout`` expired before the new release took traffic (exit 1)."""


class Expired(BaseException):
    """Raised by the timer inside the block (see the module's contract); ``reason`` is what the
    journal records for the attempt it stopped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _can_arm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def within(seconds: float | None, what: str, *, ends_at_switch: bool = True) -> Iterator[None]:
    """Raise ``TimedOut`` in this block after ``seconds`` unless disarmed first: by
    ``point_of_no_return`` (when ``ends_at_switch``), or by leaving the block. ``migrate`` keeps
    its timer through the switch of the new target (the source still serves: undoing is safe)."""
    if seconds is None or not _can_arm():
        yield
        return

    message = f"{what} timed out after {seconds:g} s (--timeout)"

    def expired(signum, frame) -> None:
        if not _armed:          # disarmed while the signal was in flight
            return
        _armed.clear()
        raise Expired(message)
    previous = signal.signal(signal.SIGALRM, expired)
    _armed[:] = [ends_at_switch]
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Expired:
        raise TimedOut(message, fix=f"raise --timeout (it was {seconds:g}); the previous release "
                                    "keeps serving and what was started for the new one was "
                                    "stopped") from None
    finally:
        _disarm()
        signal.signal(signal.SIGALRM, previous)


def point_of_no_return() -> None:
    """Steps start to take traffic: disarm a timer that ends there (what follows must run to its
    end); a timer armed with ``ends_at_switch=False`` keeps running."""
    if _armed and _armed[0]:
        _disarm()


def _disarm() -> None:
    was_armed = bool(_armed)
    _armed.clear()              # first: a signal already in flight is then ignored
    if was_armed and _can_arm():
        signal.setitimer(signal.ITIMER_REAL, 0)
