"""Rolling one release over a fleet: checked everywhere first, then switched in waves.

Contract of ``roll(workers, max_parallel, max_unavailable)``:

1. Prepare, at most ``max_parallel`` hosts at once: connect, upload, start the new release
   beside the old one and check health and smoke *on the host*. Nothing that serves traffic
   changes in this phase. The first failure stops it: hosts not started yet are ``skipped``,
   hosts already checked get their new release stopped (``not switched``).
2. Switch, in host order, in waves of ``max_unavailable`` hosts (bounded by ``max_parallel``):
   each host's new release takes the public port and its old one is told to drain. A failure
   stops the rollout: that host keeps its old release (``failed``), later hosts are stopped
   back (``not switched``); earlier waves stay on the new release (``deployed``).
3. Finish, in parallel: wait for each switched host's old release to have drained and exited.

A host already serving the release is ``unchanged`` and takes part in neither phase. A worker
is anything with ``label``, ``previous`` (release serving before), ``prepare() -> bool``
(False: unchanged), ``activate()``, ``finish()`` and ``abort()``; failures are ``MlserveError``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from ...errors import MlserveError

DEPLOYED, UNCHANGED, FAILED, NOT_SWITCHED, SKIPPED = (
    "deployed", "unchanged", "failed", "not switched", "skipped")


class Worker(Protocol):
    label: str
    previous: str | None

    def prepare(self) -> bool: ...
    def activate(self) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


@dataclass
class HostResult:
    host: str
    status: str = SKIPPED
    release: str | None = None          # the release serving on the host afterwards
    reason: str | None = None
    error: MlserveError | None = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"host": self.host, "status": self.status, "release": self.release,
                "reason": self.reason, **self.info}


def parallel(fn: Callable, items: Iterable, max_parallel: int) -> list:
    """``fn(item)`` for every item, ``max_parallel`` at once, results in order."""
    items = list(items)
    if len(items) <= 1 or max_parallel <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(max_parallel, len(items))) as pool:
        return list(pool.map(fn, items))


def roll(workers: list[Worker], release: str, max_parallel: int,
         max_unavailable: int) -> list[HostResult]:
    results = {id(w): HostResult(w.label) for w in workers}
    stop = threading.Event()

    def fail(worker: Worker, exc: Exception) -> None:
        stop.set()
        res = results[id(worker)]
        res.status, res.release = FAILED, worker.previous
        res.error = exc if isinstance(exc, MlserveError) else None
        res.reason = exc.message if isinstance(exc, MlserveError) else f"{type(exc).__name__}: {exc}"
        res.reason = res.reason.removeprefix(f"{worker.label}: ")    # the host column says it
        if res.error is None:
            res.error = MlserveError(res.reason)

    def prepare(worker: Worker) -> None:
        res = results[id(worker)]
        if stop.is_set():
            res.release = worker.previous
            return
        try:
            changed = worker.prepare()
        except Exception as exc:  # noqa: BLE001 - recorded per host, raised by the caller
            fail(worker, exc)
            return
        res.status = "ready" if changed else UNCHANGED
        res.release = worker.previous if changed else release

    parallel(prepare, workers, max_parallel)
    ready = [w for w in workers if results[id(w)].status == "ready"]
    wave = max(1, min(max_unavailable, max_parallel))
    for start in range(0, len(ready), wave):
        if stop.is_set():
            break

        def activate(worker: Worker) -> None:
            try:
                worker.activate()
            except Exception as exc:  # noqa: BLE001
                fail(worker, exc)
                return
            results[id(worker)].status, results[id(worker)].release = DEPLOYED, release

        parallel(activate, ready[start:start + wave], wave)
    left = [w for w in ready if results[id(w)].status == "ready"]
    parallel(lambda w: _abort(w, results[id(w)]), left, max_parallel)
    switched = [w for w in ready if results[id(w)].status == DEPLOYED]
    parallel(lambda w: _finish(w, results[id(w)]), switched, max_parallel)
    return [results[id(w)] for w in workers]


def _finish(worker: Worker, res: HostResult) -> None:
    try:
        worker.finish()
    except Exception as exc:  # noqa: BLE001 - the host serves the new release already
        res.reason = f"switched, but the old release was not confirmed stopped: {exc}"


def _abort(worker: Worker, res: HostResult) -> None:
    res.status, res.release = NOT_SWITCHED, worker.previous
    res.reason = "the rollout stopped before this host switched"
    try:
        worker.abort()
    except Exception as exc:  # noqa: BLE001 - the host keeps its old release either way
        res.reason += f" (stopping the unused new release failed: {exc})"


def first_failure(results: list[HostResult]) -> HostResult | None:
    return next((r for r in results if r.status == FAILED), None)


def summary(results: list[HostResult]) -> str:
    """Plain-text per-host lines, for error details (the CLI prints a Rich table)."""
    width = max(len(r.host) for r in results)
    return "\n".join(f"  {r.host:<{width}}  {r.status:<12}  {r.release or '-':<16}  {r.reason or ''}"
                     .rstrip() for r in results)
