"""Reaching a container's loopback ports, on any engine.

A new release is checked on its check port, which listens on 127.0.0.1 of the engine's host
only (host networking). On the local engine mlserve asks it directly. On a remote engine
(``tcp://``, ``ssh://``) that loopback is the remote host's: mlserve asks from inside a container
of the deployment instead, through the engine's exec API, which every engine that runs the
container also serves (over the same SSH or TLS channel as the rest of the API). The request is
made by the image's own Python (``http.client``; the body travels in the exec's environment,
never on a command line), so nothing else has to be installed there and no port has to be
opened to mlserve's machine.

``engine_is_local(base)``
    True for ``unix://`` engines (this machine's loopback is the containers').
``check_port_of(container, deadline)``
    The check port a runtime started with ``--check-port 0`` bound, read from its log's
    ``listening on 127.0.0.1:N`` line; None if the container stopped or the deadline passed first.
``exec_request(container)``
    A function with ``mlserve.checks.http_json``'s signature that sends the request from inside
    ``container``; connection failures raise ``ConnectionError`` as ``http_json``'s do.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(public ")

#: Runs inside the container: one HTTP request to 127.0.0.1, the answer as JSON on stdout;
#: exit 3 when the connection fails (then stdout names the error).
_SCRIPT = """\
import http.client, json, os, sys
port, timeout, method, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
body = os.environ.get("MLSERVE_PROBE_BODY")
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
try:
    conn.request(method, path, body=body.encode() if body is not None else None,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    reply = conn.getresponse()
    sys.stdout.write(json.dumps([reply.status, reply.read().decode("utf-8", "replace")]))
except Exception as exc:
    sys.stdout.write(json.dumps([0, type(exc).__name__ + ": " + str(exc)]))
    sys.exit(3)
"""


def engine_is_local(base: str) -> bool:
    return base.startswith("unix://")


def check_port_of(container, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        found = _LISTENING.search(container.logs())
        if found:
            return int(found.group(1))
        try:
            container.reload()
        except Exception:  # noqa: BLE001 - removed under us
            return None
        if container.status not in ("created", "running"):
            return None
        time.sleep(0.05)
    return None


def exec_request(container) -> Callable[..., tuple[int, object]]:
    def request(method: str, url: str, body: object = None,
                timeout: float = 10.0) -> tuple[int, object]:
        parts = urlsplit(url)
        env = {} if body is None else {"MLSERVE_PROBE_BODY": json.dumps(body)}
        try:
            code, out = container.exec_run(
                ["python", "-c", _SCRIPT, str(parts.port), str(timeout), method, parts.path or "/"],
                environment=env)
        except Exception as exc:  # noqa: BLE001 - the container went away: as no answer
            raise ConnectionError(f"exec in {container.name} failed: {exc}") from None
        try:
            status, text = json.loads(out)
        except (ValueError, TypeError):
            raise ConnectionError(f"no answer from inside {container.name} (exit {code})") from None
        if code != 0:
            raise ConnectionError(str(text))
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text
    return request
