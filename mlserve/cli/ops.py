"""Commands that act on deployments: deploy, predict, status, list, logs, rollback, delete."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from .main import JsonOpt, ManifestOpt, StateOpt, TargetArg, app
from .output import RichReporter, emit_json, interactive, say, table


def _show_result(result, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(result.to_dict())
        return
    if result.changed:
        say(f"[green]{verb}[/green] {result.release} to {result.target} ({result.provider}): "
            f"[bold]{result.url}[/bold]")
    else:
        say(f"[green]up to date[/green]: {result.release} already serving at [bold]{result.url}[/bold]")
    hosts = result.extra.get("hosts") or []
    if len(hosts) > 1:
        from .hosts import hosts_table
        hosts_table(hosts)


@app.command()
def deploy(target: TargetArg = None, file: ManifestOpt = None, state: StateOpt = None,
           as_json: JsonOpt = False) -> None:
    """Deploy the model to TARGET; the previous release keeps serving unless the new one is healthy."""
    from .. import service
    result = service.deploy(file, target, state, RichReporter(quiet=as_json))
    _show_result(result, as_json, "deployed")


@app.command()
def rollback(target: TargetArg = None, to: Annotated[Optional[str], typer.Option(
        "--to", help="Release id (or prefix) to return to. Default: the previous one.")] = None,
        file: ManifestOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Serve an earlier release again (health and smoke checked first)."""
    from .. import service
    result = service.rollback(file, target, state, to=to, reporter=RichReporter(quiet=as_json))
    _show_result(result, as_json, "rolled back")


@app.command()
def predict(target: TargetArg = None,
            input: Annotated[str, typer.Option("--input", "-i", help="The input, as JSON.")] = "null",
            file: ManifestOpt = None, state: StateOpt = None) -> None:
    """Send one prediction to a deployed target and print the output (JSON on stdout)."""
    from .. import service
    from ..errors import InvalidInput, ProviderError
    try:
        payload = json.loads(input)
    except ValueError as exc:
        raise InvalidInput(f"--input is not JSON: {exc}",
                           fix="""quote it for the shell: --input '{"x": [1, 2]}'""") from None
    code, body = service.predict(file, target, state, payload, reporter=RichReporter())
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
    say(f"{info['target']} ({info['provider']}): [{colour}]{info['status']}[/{colour}] "
        f"{info['url'] or ''} {info['release'] or ''} {info['detail']}")
    if info["extra"].get("hosts"):
        from .hosts import hosts_table
        hosts_table(info["extra"]["hosts"])
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
         follow: Annotated[bool, typer.Option("--follow", "-F", help="Keep printing new lines.")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history.")] = 100,
         file: ManifestOpt = None, state: StateOpt = None) -> None:
    """The model server's log (stdout)."""
    from .. import service
    for line in service.logs(file, target, state, follow=follow, lines=lines):
        typer.echo(line)


@app.command()
def delete(target: TargetArg = None,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
           file: ManifestOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Stop and remove a deployment (what mlserve created, nothing else)."""
    from .. import service
    if not yes and interactive():
        typer.confirm(f"Delete the deployment of {target or 'the default target'}?", abort=True)
    info = service.delete(file, target, state, RichReporter(quiet=as_json))
    if as_json:
        emit_json(info)
    else:
        say(f"[green]deleted[/green] {info['target']} ({info['provider']})")
