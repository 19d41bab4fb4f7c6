"""One migration's steps and what it has learnt (see the package docstring for the contract).

``Run`` is driven by ``mlserve.migrate.migrate`` in order: ``lock`` (both targets), then under
the locks ``check_targets``, ``deploy_b``, ``compare``, ``record`` and ``remove_source``;
``undo`` turns any failure before the record into ``MigrateFailed`` after removing what was
created on B.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import service
from ..errors import DeployError, MlserveError, NotFound
from ..report import Reporter
from ..journal import open_state
from ..session import journal_location
from ..vocab import DeployState
from .compare import MISSING, Difference, first_difference, shown
from .inputs import Case

#: Journal events on the destination: a migration began (B may hold what it created), ended
#: well, or was undone. A "started" with no end after it marks B as a killed migration's leftover.
STARTED, FINISHED, FAILED = "migrate-started", "migrated", "migrate-failed"
EMPTY = (DeployState.NOT_DEPLOYED, DeployState.DELETED)      # nothing there
MISMATCHES_SHOWN = 10

Call = Callable[[Any], "tuple[int, Any]"]


class MigrateFailed(DeployError):
    """A migration that did not complete: A still serves. ``--json`` carries the result too."""

    def __init__(self, message: str, result: dict, *, status: str = "failed", **kw) -> None:
        super().__init__(message, **kw)
        self.result, self.status = result, status

    def to_dict(self) -> dict:
        return {**self.result, **super().to_dict(), "status": self.status}


class Interrupted(BaseException):
    """SIGTERM during a migration, raised like KeyboardInterrupt so that cleanup runs."""


class Run:
    def __init__(self, manifest, state_dir, project, a: str, a_provider: str, b: str,
                 b_provider: str, cases: list[Case], rtol: float, atol: float) -> None:
        self.manifest, self.state_dir = manifest, state_dir
        self.journal = journal_location(project, state_dir)
        self.a, self.a_provider, self.b, self.b_provider = a, a_provider, b, b_provider
        self.cases, self.rtol, self.atol = cases, rtol, atol
        self.reporter: Reporter = Reporter()
        self.keep_source = False
        self.release: str | None = None
        self.url: str | None = None
        self.compared = 0
        self.mismatches: list[dict] = []
        self.touched_b = False       # B may now hold something this migration created
        self.plans: dict[str, dict] = {}     # target -> mlserve.plan.plan(...)
        self.phase = "check"

    def summary(self) -> dict:
        return {"from": self.a, "to": self.b,
                "providers": {"from": self.a_provider, "to": self.b_provider},
                "release": self.release, "url": self.url, "compared": self.compared,
                "mismatches": self.mismatches, "rtol": self.rtol, "atol": self.atol}

    # -- locks and journal -------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, target: str) -> Iterator[None]:
        state = open_state(self.journal)
        try:
            with state.lock(target, f"migrate {self.a} -> {self.b}"):
                yield
        finally:
            state.close()

    def _event(self, target: str, kind: str, message: str) -> None:
        state = open_state(self.journal)
        try:
            state.event(target, kind, message)
        finally:
            state.close()

    def _leftover(self) -> bool:
        """B holds what an interrupted migration of this pair created (no end recorded)."""
        state = open_state(self.journal, read_only=True)
        try:
            events = [e for e in state.events(self.b, 1000)
                      if e["kind"] in (STARTED, FINISHED, FAILED, "deleted")]
        finally:
            state.close()
        return bool(events) and events[-1]["kind"] == STARTED \
            and events[-1]["message"].startswith(f"from {self.a}:")

    # -- steps -------------------------------------------------------------------------------
    def check_targets(self) -> None:
        """A serves the project's release; B is empty or this pair's leftover (under the locks,
        asked of the providers again: the plans may be out of date)."""
        a = service.status(self.manifest, self.a, self.state_dir)
        self.check_source({"state": a["status"], "release": a["release"], "detail": a["detail"]})
        self._check_dest()

    def check_source(self, live: dict) -> None:
        """A serves, by what its provider says (``live``: plan's or status's answer)."""
        if live["state"] in EMPTY:
            raise NotFound(f"target {self.a!r} is not deployed: there is nothing to migrate",
                           fix=f"mlserve deploy {self.a}")
        if live["state"] != DeployState.READY:
            raise DeployError(f"target {self.a!r} is {live['state']}"
                              + (f" ({live['detail']})" if live.get("detail") else "")
                              + ": migrate moves a deployment that serves",
                              fix=f"see `mlserve status {self.a}`; redeploy it first")
        self.release = live["release"]

    def _check_dest(self) -> None:
        b = service.status(self.manifest, self.b, self.state_dir)
        if b["status"] not in EMPTY and not self._leftover():
            raise DeployError(
                f"target {self.b!r} already has a deployment ({b['status']}, release "
                f"{b['release']}): migrate moves a model onto an empty target",
                fix=f"mlserve delete {self.b} first, or migrate to another target")
        built = self.plans[self.b].get("release") if self.plans else None
        if built != self.release:
            raise DeployError(
                f"target {self.a!r} serves release {self.release}, but the project's files are "
                f"now release {built}: migrate moves the release that serves",
                fix=f"mlserve deploy {self.a} first (then both serve {built}), or restore the "
                    f"files {self.a!r} was deployed from")

    def deploy_b(self) -> None:
        self._event(self.b, STARTED, f"from {self.a}: release {self.release} (pid {os.getpid()})")
        self.touched_b, self.phase = True, "deploy"
        self.reporter.step(f"deploying {self.release} to {self.b} ({self.b_provider})")
        result = service.deploy(self.manifest, self.b, self.state_dir, self.reporter,
                                locked=True)
        self.url = result.url
        if result.release != self.release:      # the files changed while we worked
            raise DeployError(f"target {self.b!r} got release {result.release}, not "
                              f"{self.release}: the project's files changed during the migration",
                              fix="leave the files alone while migrating, then run it again")

    def compare(self) -> None:
        self.phase = "compare"
        if not self.cases:
            self.reporter.warn("nothing to compare: the manifest has no smoke cases and no "
                               f"--inputs were given; {self.b!r} was checked for health only")
        call_a = self._caller(self.a)
        try:
            call_b = self._caller(self.b)
            try:
                self._compare_all(call_a, call_b)
            finally:
                _close(call_b)
        finally:
            _close(call_a)
        if self.mismatches:
            first = self.mismatches[0]
            raise DeployError(
                f"outputs differ on {len(self.mismatches)} of {self.compared} input(s); first: "
                f"{mismatch_line(first, self.a, self.b)}",
                fix="fix what makes them differ, or widen --rtol/--atol if the difference is "
                    "numerical noise",
                details="\n".join(f"  {mismatch_line(m, self.a, self.b)}"
                                  for m in self.mismatches[:MISMATCHES_SHOWN])
                + (f"\n  ... and {len(self.mismatches) - MISMATCHES_SHOWN} more"
                   if len(self.mismatches) > MISMATCHES_SHOWN else ""))

    def _compare_all(self, call_a: Call, call_b: Call) -> None:
        with self.reporter.progress(f"comparing {len(self.cases)} input(s) on {self.a} and "
                                    f"{self.b}") as step:
            for case in self.cases:
                found = self._compare_one(case, call_a, call_b)
                self.compared += 1
                step.update(f"comparing {self.a} and {self.b}: {self.compared}/{len(self.cases)}")
                if found is not None:
                    self.mismatches.append(found)
            if self.mismatches:
                step.failed()

    def _caller(self, target: str) -> Call:
        """One prediction on ``target``: payload -> (HTTP status, body)."""
        return service.caller(self.manifest, target, self.state_dir, self.reporter)

    def _compare_one(self, case: Case, call_a: Call, call_b: Call) -> dict | None:
        status_a, body_a = _ask(call_a, self.a, case)
        status_b, body_b = _ask(call_b, self.b, case)
        if status_a != status_b:
            return _mismatch(case, Difference("$", _answer(status_a, body_a),
                                              _answer(status_b, body_b),
                                              f"HTTP {status_a} vs HTTP {status_b}"))
        if status_a != 200:                  # both refused it alike: the same behaviour
            return None
        found = first_difference(_output(body_a), _output(body_b), self.rtol, self.atol)
        return None if found is None else _mismatch(case, found)

    def record(self) -> None:
        detail = f"release {self.release}, {self.compared} input(s) agreed (rtol={self.rtol:g}, " \
                 f"atol={self.atol:g})"
        self._event(self.b, FINISHED, f"from {self.a} ({self.a_provider}): {detail}")
        self._event(self.a, FINISHED, f"to {self.b} ({self.b_provider}): {detail}")

    def remove_source(self) -> None:
        if self.keep_source:
            self.reporter.step(f"keeping {self.a} (--keep-source)")
            return
        self.reporter.step(f"deleting {self.a} ({self.a_provider})")
        try:
            service.delete(self.manifest, self.a, self.state_dir, self.reporter, locked=True)
        except (MlserveError, KeyboardInterrupt, Interrupted) as exc:
            raise MigrateFailed(
                f"{self.b!r} now serves release {self.release} (migrated), but deleting "
                f"{self.a!r} failed: {reason(exc)}", self.summary(), status="migrated",
                fix=f"mlserve delete {self.a}") from None

    def undo(self, exc: BaseException) -> MigrateFailed:
        """Remove what this migration created on B; the error that says what happened."""
        message = f"migration from {self.a!r} to {self.b!r} failed: {reason(exc)}"
        fix = exc.fix if isinstance(exc, MlserveError) and exc.fix else None
        if self.phase == "deploy" and isinstance(exc, MlserveError):   # its fix says "deploy"
            fix = f"fix what stopped {self.b!r} from serving (above), then migrate again"
        fix = fix or "fix the cause, then migrate again"
        if not self.touched_b:
            message += "; nothing was changed"
        else:
            with signals_ignored():
                removed = self._remove_b()
            message += (f"; what was created on {self.b!r} was removed" if removed is None else
                        f"; removing what was created on {self.b!r} failed too ({removed})")
            fix = fix if removed is None else f"mlserve delete {self.b}"
        if self.release:
            message += f"; {self.a!r} still serves release {self.release}"
        failed = MigrateFailed(message, self.summary(), fix=fix,
                               details=exc.details if isinstance(exc, MlserveError) else None)
        if isinstance(exc, MlserveError):      # e.g. 3 for B's missing credentials
            failed.exit_code = exc.exit_code
        return failed

    def _remove_b(self) -> str | None:
        """None when B is clean again, else why not."""
        self.reporter.step(f"removing what was created on {self.b}")
        try:
            service.delete(self.manifest, self.b, self.state_dir, self.reporter, locked=True)
            self._event(self.b, FAILED, f"from {self.a}: undone")
        except MlserveError as exc:
            return exc.message
        return None


def _ask(call: Call, target: str, case: Case) -> tuple[int, Any]:
    try:
        return call(case.input)
    except (OSError, MlserveError) as exc:
        detail = exc.message if isinstance(exc, MlserveError) else str(exc)
        raise DeployError(f"target {target!r} did not answer {case.source}: {detail}",
                          fix=f"see `mlserve status {target}` and `mlserve logs {target}`"
                          ) from None


def _close(call: Call) -> None:
    """A caller may keep a session open for more calls (ssh): end it."""
    getattr(call, "close", lambda: None)()


def _output(body: Any) -> Any:
    return body.get("output") if isinstance(body, dict) else body


def _answer(status: int, body: Any) -> Any:
    if status == 200:
        return _output(body)
    return body.get("error") if isinstance(body, dict) else body


def _mismatch(case: Case, found: Difference) -> dict:
    entry = {"input": case.source, "path": found.path, "reason": found.reason}
    if found.a is not MISSING:
        entry["from"] = found.a
    if found.b is not MISSING:
        entry["to"] = found.b
    return entry


def mismatch_line(m: dict, a: str, b: str) -> str:
    """``inputs.jsonl:3 at $.y[2]: a gave 2, b gave 2.5 (numbers differ ...)``."""
    return (f"{m['input']} at {m['path']}: {a} gave {shown(m.get('from', MISSING))}, "
            f"{b} gave {shown(m.get('to', MISSING))} ({m['reason']})")


def reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(exc, Interrupted):
        return "interrupted (SIGTERM)"
    if isinstance(exc, MlserveError):
        return exc.message
    return getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"   # deadline.Expired


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM raises ``Interrupted`` (SIGINT already raises KeyboardInterrupt), so that a
    terminated migration still removes what it created. Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Interrupted("SIGTERM")
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C or SIGTERM must not leave the cleanup half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
