"""Commands about the project itself: init, validate, schema, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .main import JsonOpt, ManifestOpt, app
from .output import emit_json, say


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    name: Annotated[Optional[str], typer.Option(help="Model name (default: the directory's).")] = None,
    port: Annotated[int, typer.Option(help="Port of the local target.")] = 8080,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Scaffold a working model, requirements and manifest with a local target."""
    from ..scaffold import scaffold
    written = scaffold(directory, name=name, port=port, force=force)
    for path in written:
        say(f"[green]created[/green] {path}")
    say(f"next: [bold]mlserve deploy -f {directory / 'mlserve.yaml'}[/bold]")


@app.command()
def validate(file: ManifestOpt = None, as_json: JsonOpt = False) -> None:
    """Check a manifest: every problem with its file:line:column and the fix."""
    from ..manifest import load_project
    project = load_project(file)
    m = project.manifest
    if as_json:
        emit_json({"valid": True, "file": str(project.path), "name": m.name,
                   "targets": {k: v.provider for k, v in m.targets.items()}})
        return
    targets = ", ".join(f"{k} ({v.provider})" for k, v in m.targets.items())
    say(f"[green]valid[/green]: {project.located.file} — model {m.name!r}, targets: {targets}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of mlserve.yaml (for editors and CI checks)."""
    import json
    from ..manifest import json_schema
    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@app.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def serve(ctx: typer.Context) -> None:
    """Run the model server in the foreground (the runtime every bundle runs).

    Arguments are the runtime's own: mlserve serve --app-dir DIR --entrypoint model.py:Model --port 8080
    """
    from ..runtime.__main__ import main as runtime_main
    raise typer.Exit(runtime_main(list(ctx.args)) or 0)


@app.command()
def providers(as_json: JsonOpt = False) -> None:
    """The providers mlserve knows: layer, packaging, and whether it deploys or only builds."""
    from ..providers import catalogue
    from .output import table
    entries = catalogue()
    if as_json:
        emit_json({"providers": entries})
        return
    table("providers", ["provider", "layer", "packaging", "mlserve does", "not supported"],
          [[e["name"], e["layer"], e["packaging"], "deploy" if e["deploy"] else "build",
            "; ".join(f"{k}: {v}" for k, v in e["unsupported"].items())] for e in entries])
