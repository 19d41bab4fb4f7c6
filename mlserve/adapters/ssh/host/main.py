"""Entry point on the host: ``python3 HELPER BASE_DIR OP``.

``serve`` answers JSON request lines (``{"op": ..., ...}``) from stdin until it closes, one
result line each on stdout: ``{"ok": true, ...}`` or ``{"ok": false, "reason": ..., "log": ...,
"fix": ...}``. Any other OP answers one request; ``logs`` prints log lines before its result.
``supervise`` is not a request: it is how a release's supervisor process starts (``runner``).
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    base, op = argv[1], argv[2]
    if op == "supervise":
        from .runner import supervise
        return supervise(argv[3], argv[4])
    while line := sys.stdin.buffer.readline():
        request = json.loads(line)
        answer(base, request.pop("op", op), request)
        if op != "serve":
            break
    return 0


def answer(base: str, op: str, request: dict) -> None:
    from .ops import OPS
    from .store import HostError, Store
    try:
        result = {"ok": True, **OPS[op](Store(base), request, sys.stdin.buffer)}
    except HostError as exc:
        result = {"ok": False, "reason": exc.reason, "log": exc.log, "fix": exc.fix}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
