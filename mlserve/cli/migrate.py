"""``mlserve migrate``: move a deployment to another target, prove it answers alike, remove the old.

Progress goes to stderr; the result (one line, or one JSON object with ``--json``) to stdout.
The work is ``mlserve.migrate.migrate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import JsonOpt, LockTimeoutOpt, ManifestOpt, StateOpt, TimeoutOpt, app
from .output import (RichReporter, clean, emit_json, interactive, plain, result_line,
                     step_summary)


@app.command()
def migrate(
    source: Annotated[str, typer.Option("--from", metavar="TARGET", show_default=False,
                                        help="The target that serves now.")],
    dest: Annotated[str, typer.Option("--to", metavar="TARGET", show_default=False,
                                      help="The target to move it to (nothing deployed there).")],
    file: ManifestOpt = None, state: StateOpt = None, lock_timeout: LockTimeoutOpt = None,
    keep_source: Annotated[bool, typer.Option(
        "--keep-source", help="Leave the source serving after the migration.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plans of both targets and stop (no side effects).")] = False,
    rtol: Annotated[float, typer.Option(
        "--rtol", metavar="R", help="Relative tolerance for numbers in outputs.")] = 1e-6,
    atol: Annotated[float, typer.Option(
        "--atol", metavar="A", help="Absolute tolerance for numbers in outputs.")] = 0.0,
    inputs: Annotated[Optional[Path], typer.Option(
        "--inputs", metavar="FILE", help="Saved inputs to compare on, one JSON value per line "
        "(blank lines and lines starting with # are skipped), besides the smoke cases.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y",
                                      help="Do not ask before deleting the source.")] = False,
    timeout: TimeoutOpt = None, as_json: JsonOpt = False,
) -> None:
    """Move the model from one target to another: deploy it to --to, send the same inputs to
    both and compare the outputs, then delete --from (unless --keep-source).

    Any failure or interruption leaves --from serving and untouched and removes what was created
    on --to (exit 1)."""
    from ..migrate import migrate as run_migration
    if not (yes or keep_source or dry_run) and interactive():
        typer.confirm(f"Migrate the model from {clean(source)} to {clean(dest)}, then delete "
                      f"{clean(source)} once the outputs agree?", abort=True, err=True)
    with RichReporter(quiet=as_json) as reporter:
        result = run_migration(file, source, dest, state, keep_source=keep_source,
                               dry_run=dry_run, rtol=rtol, atol=atol, inputs=inputs,
                               reporter=reporter, timeout=timeout)
    step_summary("migrate", 0, result)
    if as_json:
        emit_json(result)
    elif result["status"] == "planned":
        _show_plans(result)
    else:
        kept = "kept" if result["source"] == "kept" else "deleted"
        result_line(f"[green]migrated[/green] {plain(result['release'])} from "
                    f"{plain(result['from'])} ({plain(result['providers']['from'])}) to "
                    f"{plain(result['to'])} ({plain(result['providers']['to'])}): "
                    f"[bold]{plain(result['url'])}[/bold]; {result['compared']} input(s) agreed; "
                    f"{plain(result['from'])} {kept}")


def _show_plans(result: dict) -> None:
    """One line per target: what a deploy there would do and why (``mlserve plan``)."""
    result_line(f"migrate {plain(result['from'])} -> {plain(result['to'])} (dry run: nothing "
                "was changed)")
    for target, plan in result["plans"].items():
        reasons = "; ".join(str(r) for r in plan.get("reasons") or [])
        result_line(f"  {plain(target)} ({plain(plan.get('provider'))}): "
                    f"{plain(plan.get('action'))} {plain(plan.get('release'))}"
                    + (f" ({plain(reasons)})" if reasons else ""))
    then = "keep" if result.get("source") == "kept" else "delete"
    result_line(f"  then: compare {result['inputs']} input(s) on both, {then} "
                f"{plain(result['from'])}")
