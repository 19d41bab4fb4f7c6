"""``mlserve migrate --from A --to B``: move a live deployment, prove the new one answers like
the old one, and only then remove the old one.

Contract (``migrate(...)`` returns the result as plain data; every failure raises):

1. *Plan*: both targets are resolved, ``--inputs`` is read (a malformed line is exit 2 naming
   ``FILE:LINE``), A must serve, and both targets are planned (``mlserve.plan``: B's plan names
   the release a deploy would create). ``--dry-run`` stops here and returns both plans: nothing
   is written, not even a lock file.
2. *Lock*: the journal locks of both targets are taken in sorted order and held to the end
   (``service.deploy``/``delete`` are called with ``locked=True``): a concurrent deploy,
   delete or migrate of either target is refused ``Busy``, and since a held lock is refused at
   once rather than waited for, no two migrations can deadlock.
3. *Deploy B* with B's own checks (health, smoke) through ``service.deploy``. B must be empty
   (nothing deployed) or the leftover of an interrupted migration of this pair (a
   ``migrate-started`` event with no end in B's journal): migrating onto a target that serves
   something else is refused, since undoing a failed migration would then mean rolling B back.
   The release A serves must be the project's release (``migrate`` moves the release id).
4. *Compare*: the smoke inputs and every ``--inputs`` line are sent to A and B; HTTP statuses
   must be equal and 200 outputs agree per ``compare.first_difference`` (rtol/atol).
5. *Record and remove*: only when all agree, a ``migrated`` event naming A is written on B (and
   one naming B on A), then A is deleted unless ``keep_source``.

Any failure or interruption (SIGINT, SIGTERM) before step 5 leaves A untouched and deletes
what this migration created on B, then raises ``MigrateFailed`` (exit 1) with the reason. A
SIGKILL leaves B as it was; the next ``migrate`` of the pair resumes it, and ``delete`` removes
it. Timings of each phase are in the result (``timings``, seconds).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Iterator

from .. import service
from ..errors import InvalidInput
from ..report import Reporter
from .inputs import Case, read_inputs
from .run import Interrupted, MigrateFailed, Run, signals_raise

__all__ = ["migrate", "MigrateFailed", "Interrupted", "Clock"]


def migrate(manifest: str | Path | None, source: str, dest: str,
            state_dir: str | Path | None = None, *, keep_source: bool = False,
            dry_run: bool = False, rtol: float = 1e-6, atol: float = 0.0,
            inputs: str | Path | None = None, reporter: Reporter | None = None,
            timeout: float | None = None) -> dict:
    """``timeout``: seconds until the migration gives up (undone, exit 1); the source's
    deletion, once the outputs agree, is not interrupted."""
    from ..deadline import within
    from ..plan import plan       # here: the comparison modules stay cheap to import
    reporter = reporter or Reporter()
    clock = Clock()
    with clock("plan"):
        run = _prepare(manifest, source, dest, state_dir, rtol, atol, inputs)
        run.reporter, run.keep_source = reporter, keep_source
        run.plans[run.a] = plan(manifest, run.a, state_dir)
        run.check_source(run.plans[run.a]["live"])      # refused here: nothing was written
        run.plans[run.b] = plan(manifest, run.b, state_dir)
    if dry_run:
        return {**run.summary(), "status": "planned", "plans": run.plans,
                "inputs": len(run.cases), "source": "kept" if keep_source else "deleted",
                "timings": clock.timings}
    with signals_raise(), contextlib.ExitStack() as locks:
        try:
            with within(timeout, f"migration from {run.a!r} to {run.b!r}", ends_at_switch=False):
                _until_recorded(run, clock, locks)
        except BaseException as exc:
            failed = run.undo(exc)
            failed.result["timings"] = clock.timings
            raise failed from None
        with clock("delete"):
            run.remove_source()
    return {**run.summary(), "status": "migrated", "source": "kept" if keep_source else "deleted",
            "timings": clock.timings}


def _until_recorded(run: Run, clock: "Clock", locks: contextlib.ExitStack) -> None:
    """Steps 2-4 and the record: what ``Run.undo`` takes back when any of them fails."""
    with clock("lock"):
        for target in sorted({run.a, run.b}):
            locks.enter_context(run.lock(target))
    with clock("check"):
        run.check_targets()
    with clock("deploy"):
        run.deploy_b()
    with clock("compare"):
        run.compare()
    with clock("record"):
        run.record()


class Clock:
    """Wall time per phase (a phase entered twice adds up)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0)
                                        + time.perf_counter() - start, 4)


def _prepare(manifest, source: str, dest: str, state_dir, rtol: float, atol: float,
             inputs) -> "Run":
    """Everything decided before a target is touched: arguments, targets, inputs (exit 2)."""
    for name, value in (("--rtol", rtol), ("--atol", atol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise InvalidInput(f"{name} must be a finite number >= 0, not {value!r}",
                               fix=f"{name} 1e-6 (relative) or {name} 0")
    project = service.project_for(manifest)
    a, a_options = project.target(source)
    b, b_options = project.target(dest)
    if a == b:
        others = ", ".join(t for t in project.manifest.targets if t != a) or "(add one)"
        raise InvalidInput(f"--from and --to both name target {a!r}",
                           fix=f"migrate to another target of the manifest: {others}")
    from .. import adapters
    for options in (a_options, b_options):     # a build-only provider: refused with its reason
        adapters.get(options.provider)
    cases = [Case(f"smoke case {i}", c.input) for i, c in enumerate(project.manifest.smoke, 1)]
    cases += read_inputs(inputs) if inputs is not None else []
    return Run(manifest, state_dir, project, a, a_options.provider, b, b_options.provider,
               cases, rtol, atol)
