"""Running a release's steps: prepared everywhere first, then activated in waves, then finished.

A step (``mlserve.adapters.base.Step``) is one unit of a deploy: one SSH host, the one local
process, later one endpoint. Contract of ``run(steps, release, max_parallel, max_unavailable)``:

1. Prepare, at most ``max_parallel`` steps at once: create the new release beside the old one
   and check it (health, smoke). Nothing that serves traffic changes in this phase. The first
   failure stops it: steps not started yet are ``skipped``; steps already prepared are aborted
   (``not switched``: their unused new release is removed).
2. Activate, in step order, in waves of ``max_unavailable`` (bounded by ``max_parallel``): the
   new release takes traffic. A failure stops the run: that step keeps its old release
   (``failed``), later steps are aborted (``not switched``); earlier waves stay on the new release
   (``deployed``).
3. Finish, in parallel: drain and remove each activated step's old release. A failure here is
   noted in the step's reason; it serves the new release either way.

A step whose ``prepare`` or ``activate`` raises cleans up what it made itself (only it knows how
far it got): the runner aborts only steps that were prepared and not activated. An interrupt
(Ctrl-C, or ``--timeout`` through ``mlserve.deadline``, whose timer is disarmed when activation
starts) skips the steps not started, aborts the prepared ones and finishes the steps already
activated, then propagates.
Every step's optional ``close()`` is called when the run ends.
A step already serving the release is ``unchanged`` (``prepare`` returned False) and takes part
in neither later phase. Failures are ``MlserveError`` (any other exception is wrapped);
``failure(release, results)`` turns the first one into the error the command raises.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..deadline import point_of_no_return
from ..errors import DeployError, MlserveError
from .base import Step

DEPLOYED, UNCHANGED, FAILED, NOT_SWITCHED, SKIPPED = (
    "deployed", "unchanged", "failed", "not switched", "skipped")
_READY = "ready"        # prepared, not activated yet (never left in a returned result)


@dataclass
class StepResult:
    host: str                            # the step's label (a host for ssh, "local")
    status: str = SKIPPED
    release: str | None = None           # the release serving there afterwards
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
    pool = ThreadPoolExecutor(max_workers=min(max_parallel, len(items)))
    try:
        return list(pool.map(fn, items))
    except BaseException:   # interrupted or timed out: start nothing more, let running ones end
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def run(steps: list[Step], release: str, max_parallel: int = 1,
        max_unavailable: int = 1) -> list[StepResult]:
    """Run ``steps`` through the phases above; one result per step, in order."""
    results = {id(s): StepResult(s.label) for s in steps}
    stop = threading.Event()

    def fail(step: Step, exc: BaseException) -> None:
        stop.set()
        _failed(results[id(step)], step, exc)

    def prepare(step: Step) -> None:
        res = results[id(step)]
        if stop.is_set():
            res.release = step.previous
            return
        try:
            changed = step.prepare()
        except Exception as exc:  # noqa: BLE001 - recorded per step, raised by the caller
            fail(step, exc)
            return
        res.status = _READY if changed else UNCHANGED
        res.release = step.previous if changed else release

    def activate(step: Step) -> None:
        try:
            step.activate()
        except Exception as exc:  # noqa: BLE001
            fail(step, exc)
            return
        results[id(step)].status, results[id(step)].release = DEPLOYED, release

    try:
        try:
            parallel(prepare, steps, max_parallel)
        except BaseException:   # Ctrl-C or --timeout: steps still queued are skipped
            stop.set()
            raise
        point_of_no_return()        # a --timeout never interrupts a switch half-way
        ready = [s for s in steps if results[id(s)].status == _READY]
        wave = max(1, min(max_unavailable, max_parallel))
        for start in range(0, len(ready), wave):
            if stop.is_set():
                break
            parallel(activate, ready[start:start + wave], wave)
    finally:        # interrupted (Ctrl-C) too: nothing prepared is left half-way, and no
        # switched step keeps two releases taking traffic side by side
        left = [s for s in steps if results[id(s)].status == _READY]
        parallel(lambda s: _abort(s, results[id(s)]), left, max_parallel)
        switched = [s for s in steps if results[id(s)].status == DEPLOYED]
        try:
            parallel(lambda s: _finish(s, results[id(s)]), switched, max_parallel)
        finally:
            _close(steps)
    return [results[id(s)] for s in steps]


def _failed(res: StepResult, step: Step, exc: BaseException) -> None:
    res.status, res.release = FAILED, step.previous
    res.error = exc if isinstance(exc, MlserveError) else None
    res.reason = exc.message if isinstance(exc, MlserveError) else f"{type(exc).__name__}: {exc}"
    res.reason = res.reason.removeprefix(f"{step.label}: ")    # the host column says it
    if res.error is None:
        res.error = MlserveError(res.reason)


def _close(steps: list[Step]) -> None:
    for step in steps:                  # connections and the like a step held
        close = getattr(step, "close", None)
        if close is not None:
            close()


def _finish(step: Step, res: StepResult) -> None:
    try:
        step.finish()
    except Exception as exc:  # noqa: BLE001 - the step serves the new release already
        res.reason = f"switched, but the old release was not confirmed stopped: {exc}"


def _abort(step: Step, res: StepResult) -> None:
    res.status, res.release = NOT_SWITCHED, step.previous
    res.reason = "the rollout stopped before this host switched"
    try:
        step.abort()
    except Exception as exc:  # noqa: BLE001 - the step keeps its old release either way
        res.reason += f" (stopping the unused new release failed: {exc})"


def first_failure(results: list[StepResult]) -> StepResult | None:
    return next((r for r in results if r.status == FAILED), None)


def changed(results: list[StepResult]) -> bool:
    return any(r.status == DEPLOYED for r in results)


def summary(results: list[StepResult]) -> str:
    """Plain-text per-step lines, for error details (the CLI prints a Rich table)."""
    width = max(len(r.host) for r in results)
    return "\n".join(f"  {r.host:<{width}}  {r.status:<12}  {r.release or '-':<16}  {r.reason or ''}"
                     .rstrip() for r in results)


class RolloutError(DeployError):
    """A deploy or rollback that stopped; ``hosts`` says where each step stands."""

    def __init__(self, message: str, hosts: list[dict], exit_code: int, **kw) -> None:
        super().__init__(message, **kw)
        self.hosts = hosts
        self.exit_code = exit_code

    def to_dict(self) -> dict:
        return {**super().to_dict(), "hosts": self.hosts}


def failure(release: str, results: list[StepResult]) -> RolloutError | None:
    """The error a run with a failed step raises (None when none failed): one step's own error
    as it is; for several, which step stopped the rollout and where every step stands."""
    failed = first_failure(results)
    if failed is None:
        return None
    cause: MlserveError = failed.error
    hosts = [r.to_dict() for r in results]
    keeps = ("the previous release keeps serving" if failed.release
             else "nothing was serving there before")
    if len(results) == 1:
        return RolloutError(cause.message, hosts, cause.exit_code, where=cause.where,
                            fix=cause.fix or f"fix the cause and deploy again ({keeps})",
                            details=cause.details)
    switched = sum(r.status == DEPLOYED for r in results)
    details = summary(results) + (f"\n{cause.details}" if cause.details else "")
    return RolloutError(
        f"the rollout of {release} stopped at {failed.host} ({switched} of {len(results)} hosts "
        f"switched): {failed.reason}", hosts, cause.exit_code, where=cause.where,
        fix=cause.fix or "fix the cause and deploy again; hosts not switched keep their "
                         "previous release", details=details)


def prepare_or_undo(step: Step, prepare: Callable[[], bool], reporter: Any) -> bool:
    """``prepare()`` for a step whose ``prepare`` makes resources before it can fail (a cloud
    endpoint's model, config, deployment): when it fails, ``step.abort()`` removes what it made
    before the failure propagates; a failure of that clean-up is a warning (the first failure
    is the one to show)."""
    try:
        return prepare()
    except BaseException:
        try:
            step.abort()
        except Exception as exc:  # noqa: BLE001
            reporter.warn(f"cleaning up after the failed deploy failed too: {exc}")
        raise
