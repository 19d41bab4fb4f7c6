"""Health and smoke checks every adapter shares, over plain HTTP (stdlib only).

``wait_healthy`` polls ``GET /health`` until 200 while the release's process is alive;
``run_smoke`` sends each smoke case and compares the output exactly. Adapters that cannot reach
the release directly (SSH) pass their own ``call`` function; the logic stays here.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

# "ValueError: bad", "pkg.errors.Failure", "KeyboardInterrupt": a traceback's last line.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(: |$)")
#: payload -> (HTTP status, decoded body): how predict, smoke checks and migrate ask a release
#: (``Adapter.caller``).
Call = Callable[[object], "tuple[int, object]"]


def http_json(method: str, url: str, body: object = None,
              timeout: float = 10.0) -> tuple[int, object]:
    """(status, decoded JSON or text) for any status. Connection problems raise OSError.

    ``http.client`` rather than ``urllib.request``: the SSH host helper imports this module,
    and urllib's opener machinery costs each SSH exec a few ms of the host's CPU for nothing
    (the URLs are our own plain-HTTP runtimes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = None if body is None else json.dumps(body).encode()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data is not None else {})
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    except http.client.HTTPException as exc:        # a malformed answer: as if none came
        raise ConnectionError(f"bad HTTP answer from {url}: {exc!r}") from None
    finally:
        conn.close()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_healthy(url: str, timeout: float, alive: Callable[[], bool] = lambda: True,
                 tick: Callable[[], None] = lambda: None, max_delay: float = 0.5,
                 request: Callable[..., tuple[int, object]] | None = None) -> str | None:
    """Poll ``url`` + /health. None when healthy, else the reason it is not.

    The delay between polls grows from 20 ms to ``max_delay``; on loopback a small
    ``max_delay`` costs nothing and shortens a small model's deploy. ``request`` (``http_json``'s
    signature) sends the poll another way, e.g. from inside a container on a remote engine."""
    request = request or http_json
    deadline = time.monotonic() + timeout
    delay = 0.02
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not alive():
            return EXITED_WHILE_LOADING
        try:
            status, body = request("GET", url.rstrip("/") + "/health", timeout=2)
            if status == 200:
                return None
            last = f"/health answered {status}"
        except OSError as exc:
            last = f"/health unreachable ({exc.__class__.__name__})"
        tick()
        time.sleep(delay)
        delay = min(delay * 1.5, max_delay)
    return f"not healthy after {timeout:g}s ({last})"


EXITED_WHILE_LOADING = "the release's process exited while loading"


def load_headline(reason: str, log: str) -> str | None:
    """For a release whose checks failed with ``reason``: the exception that ended its load
    (from ``log``) when its process died loading, else None. Local and SSH deploys lead their
    error with it, so the first line says *why* (``ModuleNotFoundError: ...``)."""
    return load_failure(log) if reason == EXITED_WHILE_LOADING else None


def load_failure(log: str) -> str | None:
    """The exception that ended a runtime's load, from its log: the last traceback's final line
    (``ModuleNotFoundError: No module named 'torch'``), else the runtime's own last error line,
    else None. Cut to one line of at most 300 characters."""
    found = None
    in_traceback = False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            in_traceback = False
            if _EXCEPTION_LINE.match(line):
                found = line
        elif not in_traceback and " mlserve.runtime error: " in line:
            found = line.split(" mlserve.runtime error: ", 1)[1]
    if found is None:
        return None
    found = found.strip()
    return found if len(found) <= 300 else found[:297] + "..."


def predict_call(url: str, timeout: float = 60.0,
                 request: Callable[..., tuple[int, object]] | None = None) -> Call:
    request = request or http_json

    def call(payload: object) -> tuple[int, object]:
        return request("POST", url.rstrip("/") + "/predict", {"input": payload}, timeout=timeout)
    return call


def run_smoke(call: Call, cases: list) -> str | None:
    """None when every case passes, else a description of the first failure."""
    for i, case in enumerate(cases):
        try:
            status, body = call(case.input)
        except OSError as exc:
            return f"smoke case {i + 1}: request failed ({exc})"
        if status != 200:
            detail = body.get("error") if isinstance(body, dict) else body
            return f"smoke case {i + 1}: HTTP {status}: {detail}"
        output = body.get("output") if isinstance(body, dict) else body
        if case.expect is not None and output != case.expect:
            return (f"smoke case {i + 1}: expected {json.dumps(case.expect)}, "
                    f"got {json.dumps(output)}")
    return None
