"""The runtime's logs: a cheap access log on stdout and events (lifecycle, tracebacks) on stderr.

The access log is the hot path. A request costs one ``list.append`` of a tuple; the tuples are
formatted and written in one ``write`` by a timer on the event loop (``tick``, every 100 ms) and at
shutdown. The timestamp is a string cached by the same timer, so no request formats a time.
Python ``logging`` is never called per request.

Every line either stream receives passes through ``Redactor``: the values of the environment
variables named in ``MLSERVE_SECRET_NAMES`` become ``***`` (user code can put them in exception
messages), in the forms a program commonly prints them (see ``secret_forms``). What the model
itself writes is masked by ``mlserve.runtime.masking``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from typing import TextIO

from .config import MIN_SECRET_CHARS

MASK = "***"
TICK_SECONDS = 0.1


#: A line of a multi-line secret (a PEM key) shorter than this is not masked on its own.
MIN_SECRET_LINE_CHARS = 16


def secret_forms(secret: str) -> set[str]:
    """``secret`` as a program commonly prints it: as is, escaped inside a JSON or Python string or
    bytes literal (``repr``, a dict in a log line), URL-encoded, without surrounding white space,
    and each long line of a multi-line value. Other encodings (base64, hex) are not masked."""
    from urllib.parse import quote, quote_plus  # only runs when there are secrets

    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        repr(secret.encode("utf-8", "surrogatepass"))[2:-1],  # print(b"...") of the encoded value
        quote(secret, safe="", errors="surrogatepass"),
        quote_plus(secret, safe="", errors="surrogatepass"),
    }
    if "\n" in secret:
        forms.update(line for line in secret.splitlines() if len(line.strip()) >= MIN_SECRET_LINE_CHARS)
    stripped = secret.strip()  # a value read from a file often ends in a newline the model strips
    if stripped != secret and len(stripped) >= MIN_SECRET_CHARS:
        forms |= secret_forms(stripped)
    return {form for form in forms if form}


class Redactor:
    """Masks the given secret values (``config`` drops the ones too short to mask)."""

    def __init__(self, secrets: list[str]) -> None:
        forms = set().union(*(secret_forms(s) for s in secrets if s))
        # Longest first, so a form that contains another is masked whole.
        self._secrets = sorted(forms, key=len, reverse=True)

    @property
    def forms(self) -> list[str]:
        return list(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Logs:
    """Both streams. ``access`` is loop-thread only; ``event`` may be called from any thread."""

    def __init__(self, redact: Redactor, access_enabled: bool = True, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.redact = redact
        self.now = utc_now()  # refreshed by tick(); read by the app for each access record
        self.access_enabled = access_enabled
        self._access: list[tuple] = []
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._lock = threading.Lock()

    def access(self, record: tuple) -> None:
        """``record`` = (time, client, method, path, status, seconds)."""
        self._access.append(record)

    def event(self, message: str) -> None:
        line = f"{utc_now()} mlserve.runtime {message}"
        self._write(self._err, self.redact(line if line.endswith("\n") else line + "\n"))

    def failure(self, message: str, exc: BaseException) -> None:
        """Log ``message`` then the traceback (frames and message only: never local variables)."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.event(f"{message}\n{text}")

    def tick(self) -> None:
        self.now = utc_now()
        self.flush_access()

    def flush_access(self) -> None:
        if not self._access:
            return
        records, self._access = self._access, []
        self._write(self._out, self.redact("".join(map(_format_access, records))))

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken log stream must not take the server down


def _format_access(record: tuple) -> str:
    when, client, method, path, status, seconds = record
    peer = f"{client[0]}:{client[1]}" if client else "-"
    return f"{when} {peer} {method} {path} {status} {seconds * 1000.0:.2f}ms\n"


class EventHandler(logging.Handler):
    """Routes uvicorn's own (lifecycle) log records into ``Logs.event`` with redaction."""

    def __init__(self, logs: Logs) -> None:
        super().__init__(logging.INFO)
        self._logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the server
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            self._logs.failure(f"{record.levelname.lower()}: {message}", record.exc_info[1])
        else:
            self._logs.event(f"{record.levelname.lower()}: {message}")


def route_uvicorn_logs(logs: Logs) -> None:
    handler = EventHandler(logs)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler] if name == "uvicorn" else []
        logger.setLevel(logging.INFO)
        logger.propagate = name != "uvicorn"
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
