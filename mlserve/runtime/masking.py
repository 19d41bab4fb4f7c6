"""Mask secrets in everything the process writes to file descriptors 1 and 2.

A model can print a secret through ``print``, ``sys.stderr``, ``logging``, ``warnings``, a C
extension writing to fd 1 or 2, or a child process (``subprocess``, ``os.system``,
``multiprocessing``) that inherited them. Patching Python's streams would miss half of those, so
``mask_std_streams`` works one level down, before the model is imported:

- fds 1 and 2 are saved (``dup``, not inherited by children) and handed back as text streams for
  the runtime's own writers, which mask their text already (``logs.Redactor``);
- fds 1 and 2 become the write ends of two pipes, inherited by every child; one thread per pipe
  masks what it reads and writes it to the saved fd.

A pump forwards whole lines, and a partial line after ``IDLE_SECONDS`` without more data or once
it exceeds ``MAX_LINE_BYTES``. It never forwards the end of its buffer while that end could be
the start of a secret (a secret written in two ``write`` calls is masked whole); those few bytes
wait for the next write or the end of the stream.

At exit (``atexit``: after an uncaught exception's traceback is printed) Python's streams are
flushed, fds 1 and 2 are pointed at ``/dev/null``, and the runtime waits (at most
``DRAIN_SECONDS``) until the pumps have forwarded everything in their pipes. Nothing is written
unmasked: what a child that outlives the runtime writes later, or what is still in a pipe when
the process is killed, is lost.

Only used when there are secrets: without them fds 1 and 2 are left alone and nothing costs more.
Caveat: a pump thread needs the GIL, so a C extension that writes more than a pipe holds (1 MiB
here, where Linux allows) without ever releasing the GIL would block until it does.
"""

from __future__ import annotations

import atexit
import faulthandler
import fcntl
import os
import select
import struct
import sys
import termios
import threading
import time
from typing import TextIO

MASK = b"***"
IDLE_SECONDS = 0.05
MAX_LINE_BYTES = 64 * 1024
DRAIN_SECONDS = 5.0
PIPE_BYTES = 1024 * 1024
_READ_BYTES = 64 * 1024


def encoded_forms(forms: list[str]) -> list[bytes]:
    """The masked forms as the bytes a program writes (UTF-8; undecodable environment bytes kept)."""
    out = []
    for form in forms:
        try:
            out.append(form.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            out.append(form.encode("utf-8", "surrogatepass"))
    return sorted(set(out), key=len, reverse=True)


class Masker:
    """Masks byte strings; ``held`` says how much of a buffer's end could start a secret."""

    def __init__(self, forms: list[bytes]) -> None:
        self._forms = [f for f in forms if f]
        self._longest = max(map(len, self._forms), default=0)

    def __call__(self, data: bytes) -> bytes:
        for form in self._forms:
            if form in data:
                data = data.replace(form, MASK)
        return data

    def held(self, data: bytes) -> int:
        """Length of the longest end of ``data`` that is a proper prefix of a secret form."""
        tail = data[-(self._longest - 1):] if self._longest > 1 else b""
        best = 0
        for form in self._forms:
            first = form[:1]
            start = tail.find(first, max(0, len(tail) - len(form) + 1))
            while start != -1 and len(tail) - start > best:
                if form.startswith(tail[start:]):
                    best = len(tail) - start
                    break
                start = tail.find(first, start + 1)
        return best


class Pump:
    """Reads one pipe until every writer has closed it; masks; writes to ``target`` (an fd)."""

    def __init__(self, source: int, target: int, mask: Masker, name: str) -> None:
        self._source = source
        self._target = target
        self._mask = mask
        self.quiet = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def drained(self) -> bool:
        """True once the pump has forwarded all it was given: it ended, or it sleeps on an empty pipe."""
        if not self.thread.is_alive():
            return True
        try:
            unread = struct.unpack("i", fcntl.ioctl(self._source, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:  # the pump closed it as it ended
            return True
        return self.quiet and unread == 0

    def _run(self) -> None:
        try:
            self._pump()
        except Exception:  # noqa: BLE001 - a bug here must not block every writer on a full pipe
            self._discard()
        finally:
            os.close(self._source)

    def _discard(self) -> None:
        """Drop the rest of the stream: forwarding it unmasked would be worse than losing it."""
        try:
            while os.read(self._source, _READ_BYTES):
                pass
        except OSError:
            pass

    def _pump(self) -> None:
        poller = select.poll()
        poller.register(self._source, select.POLLIN)
        pending, waiting = bytearray(), False
        while True:
            self.quiet = not waiting  # about to sleep with nothing to forward but a held secret prefix
            ready = poller.poll(IDLE_SECONDS * 1000 if waiting else None)
            self.quiet = False
            if not ready:
                pending, waiting = self._forward(pending, partial=True), False
                continue
            try:
                data = os.read(self._source, _READ_BYTES)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            # Until a line ends, only collect: a line written in many small pieces is masked once.
            if b"\n" in data or len(pending) > MAX_LINE_BYTES:
                pending = self._forward(pending, partial=False)
            waiting = bool(pending)
        self._write(self._mask(bytes(pending)))

    def _forward(self, buffer: bytearray, partial: bool) -> bytearray:
        """Write what is safe to write now; return the rest (already masked) to keep."""
        masked = self._mask(bytes(buffer))
        keep_from = len(masked) - self._mask.held(masked)
        if not partial:
            line_end = masked.rfind(b"\n") + 1
            if len(masked) - line_end <= MAX_LINE_BYTES:
                keep_from = min(keep_from, line_end)
        self._write(masked[:keep_from])
        return bytearray(masked[keep_from:])

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._target, view):]
            except OSError:
                return  # the log is gone: drop, but keep reading so writers never block


class MaskedStreams:
    """The saved fds 1 and 2 as text streams (for the runtime's own, already masked, writers)."""

    def __init__(self, out: TextIO, err: TextIO, pumps: list[Pump]) -> None:
        self.out = out
        self.err = err
        self._pumps = pumps
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the model may have replaced or closed them
                pass
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)  # our last write ends of the pipes close: the pumps see EOF
        os.close(devnull)
        # Usually the pumps see the end of their pipes at once; a child that outlives the runtime
        # keeps a pipe open, so also stop waiting once every pump has forwarded what it was given.
        deadline = time.monotonic() + DRAIN_SECONDS
        while not all(pump.drained() for pump in self._pumps) and time.monotonic() < deadline:
            time.sleep(0.005)


def _pipe_onto(fd: int, mask: Masker, saved: int) -> Pump:
    read_end, write_end = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default 64 KiB still works
    os.dup2(write_end, fd)  # inheritable: children write into the pipe too
    os.close(write_end)
    return Pump(read_end, saved, mask, f"mlserve-mask-{fd}")


def _saved(fd: int) -> int:
    try:
        os.fstat(fd)
    except OSError:  # started with the fd closed: /dev/null stands in, and the pipe goes there
        null = os.open(os.devnull, os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    return os.dup(fd)  # not inheritable: no child gets the unmasked log


def mask_std_streams(forms: list[str]) -> MaskedStreams:
    """Route fds 1 and 2 through masking pumps; see the module docstring."""
    mask = Masker(encoded_forms(forms))
    saved = {fd: _saved(fd) for fd in (1, 2)}
    pumps = [_pipe_onto(fd, mask, saved[fd]) for fd in (1, 2)]
    streams = MaskedStreams(
        open(saved[1], "w", encoding="utf-8", errors="backslashreplace", closefd=False),
        open(saved[2], "w", encoding="utf-8", errors="backslashreplace", closefd=False),
        pumps,
    )
    if faulthandler.is_enabled():  # a crash dump (frames, no values) must not die in a pipe
        faulthandler.enable(streams.err, all_threads=True)
    for pump in pumps:
        pump.thread.start()
    atexit.register(streams.close)
    return streams
