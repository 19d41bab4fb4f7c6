"""``mlserve migrate --from A --to B``: move a live deployment, prove the new one answers like
the old one, and only then remove the old one.

Contract (``migrate(...)`` returns the result as plain data; every failure raises):

1. *Plan*: both targets are resolved, ``--inputs`` is read (a malformed line is exit 2 naming
   ``FILE:LINE``), A must serve, and both targets are planned (``mlserve.plan``: B's plan names
   the release a deploy would create). ``--dry-run`` stops here and returns both plans: nothing
   is written, not even a lock file.
2. *Lock*: the source's journal lock is held for the whole migration (a second migrate of the
   same pair, or a deploy/delete of A, is refused ``Busy``). The destination's lock is taken by
   its deploy and then held by the migration until it ends. Why not both up front in sorted
   order: ``service.deploy`` and ``service.delete`` take their target's lock themselves and the
   lock is not re-entrant (a second holder in one process is refused, by design). Locks are
   never waited for (a held lock is ``Busy`` at once), so no order of two migrations can
   deadlock; the cost is a window of a few instructions after B's deploy in which another
   command could take B (the migration then fails and says so) and one before A's delete.
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
            inputs: str | Path | None = None, reporter: Reporter | None = None) -> dict:
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
    with signals_raise(), contextlib.ExitStack() as a_lock, contextlib.ExitStack() as b_lock:
        with clock("lock"):
            a_lock.enter_context(run.lock(run.a))
        with clock("check"):
            run.check_targets()
        try:
            with clock("deploy"):
                run.deploy_b()
            with clock("lock"):
                b_lock.enter_context(run.lock(run.b))
            with clock("compare"):
                run.compare()
            with clock("record"):
                run.record()
        except BaseException as exc:
            b_lock.close()                      # service.delete(B) takes B's lock itself
            failed = run.undo(exc)
            failed.result["timings"] = clock.timings
            raise failed from None
    # Both locks are released: service.delete(A) takes A's lock itself.
    with clock("delete"):
        run.remove_source()
    return {**run.summary(), "status": "migrated", "source": "kept" if keep_source else "deleted",
            "timings": clock.timings}


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
