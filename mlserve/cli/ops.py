"""Commands that act on deployments: deploy, predict, status, list, logs, rollback, delete.

Results (status lines, tables, predictions) go to stdout; progress and the outcome of a change
(``deployed ...``) to stderr.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from .app import JsonOpt, LockTimeoutOpt, ManifestOpt, StateOpt, TargetArg, TimeoutOpt, app
from .output import (RichReporter, clean, emit_json, interactive, plain, result_line, say,
                     step_summary, table)
from .payload import read_input


def _show_result(result, as_json: bool, verb: str) -> None:
    step_summary("rollback" if verb == "rolled back" else "deploy", 0, result.to_dict())
    if as_json:
        emit_json(result.to_dict())
        return
    release, url = plain(result.release), plain(result.url)
    if result.changed:
        say(f"[green]{verb}[/green] {release} to {plain(result.target)} ({plain(result.provider)}): "
            f"[bold]{url}[/bold]")
    else:
        say(f"[green]up to date[/green]: {release} already serving at [bold]{url}[/bold]")
    hosts = result.extra.get("hosts") or []
    if len(hosts) > 1:
        from .hosts import hosts_table
        hosts_table(hosts)


@app.command()
def deploy(target: TargetArg = None, file: ManifestOpt = None, state: StateOpt = None,
           image: Annotated[Optional[str], typer.Option(
               "--image", metavar="REF",
               help="Run this image, built earlier (docker targets): nothing is built.")] = None,
           timeout: TimeoutOpt = None, lock_timeout: LockTimeoutOpt = None,
           as_json: JsonOpt = False) -> None:
    """Deploy the model to TARGET; the previous release keeps serving unless the new one is healthy."""
    from .. import service
    from ..deadline import within
    with RichReporter(quiet=as_json) as reporter, within(timeout, "the deploy"):
        result = service.deploy(file, target, state, reporter, image=image)
    _show_result(result, as_json, "deployed")


@app.command()
def rollback(target: TargetArg = None, to: Annotated[Optional[str], typer.Option(
        "--to", help="Release id (or prefix) to return to. Default: the previous one.")] = None,
        file: ManifestOpt = None, state: StateOpt = None, timeout: TimeoutOpt = None,
        lock_timeout: LockTimeoutOpt = None,
        as_json: JsonOpt = False) -> None:
    """Serve an earlier release again (health and smoke checked first)."""
    from .. import service
    from ..deadline import within
    with RichReporter(quiet=as_json) as reporter, within(timeout, "the rollback"):
        result = service.rollback(file, target, state, to=to, reporter=reporter)
    _show_result(result, as_json, "rolled back")


@app.command()
def predict(target: TargetArg = None,
            input: Annotated[Optional[str], typer.Option(
                "--input", "-i", metavar="JSON|@FILE|-",
                help="The input: JSON, @FILE to read it from a file, or - for stdin. "
                     "Default: stdin when it is not a terminal.")] = None,
            file: ManifestOpt = None, state: StateOpt = None) -> None:
    """Send one prediction to a deployed target and print the output (JSON on stdout)."""
    from .. import service
    from ..errors import ProviderError
    payload = read_input(input)     # before anything is contacted: a bad input costs nothing
    with RichReporter() as reporter:
        code, body = service.predict(file, target, state, payload, reporter=reporter)
    if code != 200:
        detail = body.get("error") if isinstance(body, dict) else body
        raise ProviderError(f"the model answered HTTP {code}: {detail}",
                            fix="see `mlserve logs` for the model's traceback")
    typer.echo(json.dumps(body.get("output") if isinstance(body, dict) else body))


@app.command()
def status(target: TargetArg = None, file: ManifestOpt = None, state: StateOpt = None,
           as_json: JsonOpt = False) -> None:
    """Live status of a target (asked of the provider) and its recent releases."""
    from .. import service
    info = service.status(file, target, state)
    if as_json:
        emit_json(info)
        return
    colour = {"READY": "green", "FAILED": "red", "DELETED": "dim"}.get(info["status"], "yellow")
    fields = " ".join(plain(info[k]) for k in ("url", "release", "detail") if info.get(k))
    result_line(f"{plain(info['target'])} ({plain(info['provider'])}): "
                f"[{colour}]{plain(info['status'])}[/{colour}] {fields}".rstrip())
    if info["extra"].get("hosts"):
        from .hosts import hosts_table
        hosts_table(info["extra"]["hosts"], to_stdout=True)
    if not info["releases"]:
        return
    table("releases", ["release", "outcome", "when", "reason"],
          [[r["release"], r["outcome"], time.strftime("%Y-%m-%d %H:%M:%S",
                                                      time.localtime(r["created_at"])),
            r["reason"] or ""] for r in info["releases"]])


@app.command("list")
def list_(file: ManifestOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Every target of the manifest with what the journal says is deployed there."""
    from .. import service
    rows = service.list_deployments(file, state)
    if as_json:
        emit_json({"deployments": rows})
        return
    table("deployments", ["target", "provider", "status", "release", "url"],
          [[r["target"], r["provider"], r["status"], r["release"], r["url"]] for r in rows])


@app.command()
def logs(target: TargetArg = None,
         follow: Annotated[bool, typer.Option("--follow", "-F",
                                              help="Keep printing new lines.")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history.")] = 100,
         file: ManifestOpt = None, state: StateOpt = None) -> None:
    """The model server's log (stdout)."""
    from .. import service
    for line in service.logs(file, target, state, follow=follow, lines=lines):
        typer.echo(line)


@app.command()
def delete(target: TargetArg = None,
           yes: Annotated[bool, typer.Option("--yes", "-y",
                                             help="Do not ask for confirmation.")] = False,
           purge: Annotated[bool, typer.Option(
               "--purge", help="Also remove the target's images from the engine (docker).")] = False,
           file: ManifestOpt = None, state: StateOpt = None, lock_timeout: LockTimeoutOpt = None,
           as_json: JsonOpt = False) -> None:
    """Stop and remove a deployment (what mlserve created, nothing else).

    A target that was never deployed is not an error: there is nothing to delete (exit 0)."""
    from .. import service
    if not yes and interactive():
        name, options = service.project_for(file).target(target)
        typer.confirm(f"Delete the deployment of {clean(name)} ({clean(options.provider)})?",
                      abort=True, err=True)
    with RichReporter(quiet=as_json) as reporter:
        info = service.delete(file, target, state, reporter, purge=purge)
    step_summary("delete", 0, info)
    if as_json:
        emit_json(info)
    elif info.get("status") == "DELETED":
        say(f"[green]deleted[/green] {plain(info['target'])} ({plain(info['provider'])})")
    else:
        say(f"nothing to delete: {plain(info['target'])} ({plain(info['provider'])}) is not "
            "deployed")
