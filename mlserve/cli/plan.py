"""``mlserve plan``: what ``deploy`` would do to a target and why (``mlserve.plan``), on stdout.

Exit 0 whatever the plan (scripts read ``action``), 2 for invalid input, 1 for a journal that
cannot be used (as ``status``).
"""

from __future__ import annotations

from typing import Any

from .app import JsonOpt, ManifestOpt, StateOpt, TargetArg, app
from .output import RichReporter, emit_json, plain, result_line, step_summary, table

_COLOUR = {"none": "green", "create": "cyan", "update": "yellow"}


@app.command()
def plan(target: TargetArg = None, file: ManifestOpt = None, state: StateOpt = None,
         as_json: JsonOpt = False) -> None:
    """What `deploy` would do to TARGET, and why: the changes since the journal's current
    release and what the provider serves now. Changes nothing."""
    from ..plan import plan as make_plan
    with RichReporter(quiet=as_json) as reporter:
        result = make_plan(file, target, state, reporter)
    step_summary("plan", 0, result)
    if as_json:
        emit_json(result)
        return
    colour = _COLOUR.get(result["action"], "yellow")
    result_line(f"{plain(result['target'])} ({plain(result['provider'])}): "
                f"[{colour}]{plain(result['action'])}[/{colour}] {plain(result['release'])}"
                + (f" (now {plain(result['current'])})"
                   if result["current"] not in (None, result["release"]) else "")
                + f": {plain('; '.join(result['reasons']))}")
    if result["changes"]:
        table("changes", ["kind", "subject", "before", "after"],
              [[c["kind"], c["subject"], _shown(c["kind"], c["before"]),
                _shown(c["kind"], c["after"])]
               for c in result["changes"]])
    if result.get("calls"):
        result_line(f"calls: {plain(', '.join(result['calls']))}")
    for drift in result["drift"]:
        result_line(f"[red]drift[/red] {plain(drift['kind'])}: {plain(drift['detail'])}")


def _shown(kind: str, value: Any) -> str:
    """A cell: a file as ``sha256 (size B, executable)``, anything else as it is."""
    if value is None:
        return ""
    if kind.startswith("file-") and isinstance(value, dict):
        return (f"{value['sha256']} ({value['size']} B"
                + (", executable)" if value["executable"] else ")"))
    return str(value)
