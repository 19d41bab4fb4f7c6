"""Commands about the project itself: init, validate, schema, serve, providers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import JsonOpt, ManifestOpt, TargetArg, app
from .output import emit_json, plain, result_line, say, warning


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    name: Annotated[Optional[str], typer.Option(help="Model name (default: the directory's).")] = None,
    port: Annotated[int, typer.Option(help="Port of the local target.")] = 8080,
    force: Annotated[bool, typer.Option("--force",
                                        help="Overwrite existing files.")] = False,
) -> None:
    """Scaffold a working model, requirements and manifest with a local target."""
    from ..scaffold import scaffold
    written = scaffold(directory, name=name, port=port, force=force)
    for path in written:
        say(f"[green]created[/green] {plain(path)}")
    import shlex
    say(f"next: [bold]mlserve deploy -f {plain(shlex.quote(str(directory / 'mlserve.yaml')))}[/bold]")


@app.command()
def validate(target: TargetArg = None, file: ManifestOpt = None, as_json: JsonOpt = False) -> None:
    """Check a manifest: every problem with its file:line:column and the fix. With TARGET, also
    refuse what the manifest asks of TARGET that its provider cannot do (as plan and deploy do);
    without, that is a warning per target."""
    from ..manifest import load_project
    project = load_project(file)
    m = project.manifest
    if target is not None:
        project.target(target)                  # refused if its provider cannot do what is asked
    gaps = project.feature_gaps() if target is None else []
    for gap in gaps:
        warning(f"{gap} (commands on that target refuse it)")
    if as_json:
        named = [project.target(target)[0]] if target is not None else list(m.targets)
        emit_json({"valid": True, "file": str(project.path), "name": m.name,
                   "targets": {k: v.provider for k, v in m.targets.items()},
                   "extras": project.extras(named), "warnings": gaps})
        return
    targets = ", ".join(f"{k} ({v.provider})" for k, v in m.targets.items())
    result_line(f"[green]valid[/green]: {plain(project.located.file)} — model "
                f"{plain(repr(m.name))}, targets: {plain(targets)}")


@app.command()
def schema(output: Annotated[Optional[str], typer.Option(
        "--output", metavar="COMMAND", show_default=False,
        help="Print instead the schema of COMMAND's --json output (`error`: the error object "
             "every command prints under --json when it fails).")] = None) -> None:
    """Print the JSON Schema of mlserve.yaml (for editors and CI checks), or of a command's
    --json output."""
    import json
    if output is not None:
        from .. import schemas
        try:
            document = schemas.load(output)
        except KeyError:
            raise typer.BadParameter(f"no output schema {output!r}; one of: "
                                     f"{', '.join(schemas.names())}", param_hint="--output") from None
        typer.echo(json.dumps(document, indent=2))
        return
    from ..manifest import json_schema
    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@app.command(help="Run the model server in the foreground, in this Python environment.\n\n"
                  "The runtime every bundle runs. With a manifest (-f, or mlserve.yaml here or in a "
                  "parent directory): its model, name, env, secrets, concurrency, and the port of "
                  "its default target. Without one: --entrypoint (and --app-dir).")
def serve(
    file: ManifestOpt = None,
    port: Annotated[Optional[int], typer.Option(
        "--port", "-p", min=0, max=65535, metavar="PORT", show_default=False,
        help="Port. Default: the default target's port, else 8080.")] = None,
    host: Annotated[Optional[str], typer.Option(
        "--host", metavar="ADDRESS", show_default=False,
        help="Address to listen on. Default: the local target's host, else 127.0.0.1 "
             "(0.0.0.0 to be reachable from other machines).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(
        "--concurrency", min=1, metavar="N", show_default=False,
        help="Predict calls in flight at most. Default: the manifest's scaling.concurrency.")] = None,
    app_dir: Annotated[Optional[Path], typer.Option(
        "--app-dir", metavar="DIR", show_default=False,
        help="Serve the code in DIR without a manifest.")] = None,
    entrypoint: Annotated[Optional[str], typer.Option(
        "--entrypoint", metavar="FILE.py:Class", show_default=False,
        help="The model class, without a manifest (default: model.py:Model).")] = None,
) -> None:
    from .serve import runtime_arguments
    from ..runtime.__main__ import main as runtime_main
    argv = runtime_arguments(file, port=port, host=host, concurrency=concurrency,
                             app_dir=app_dir, entrypoint=entrypoint)
    raise typer.Exit(runtime_main(argv) or 0)


@app.command()
def providers(as_json: JsonOpt = False) -> None:
    """The providers mlserve knows: layer, packaging, whether it deploys or only builds, and
    what each cannot do (--json: with the reason)."""
    from ..providers import catalogue
    from .output import table
    entries = catalogue()
    if as_json:
        emit_json({"providers": entries})
        return
    table("providers", ["provider", "layer", "packaging", "mlserve does", "not supported"],
          [[e["name"], e["layer"], e["packaging"], "deploy" if e["deploy"] else "build",
            ", ".join(e["unsupported"])] for e in entries])
    say("why each is not supported: [bold]mlserve providers --json[/bold] (features)")
