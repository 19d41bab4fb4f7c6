"""``mlserve journal export|import``: move a journal between backends (a state directory and
``s3://bucket/prefix``). The document goes to stdout (or ``-o FILE``); the outcome of an import
to stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import JsonOpt, ManifestOpt, StateOpt, app
from .output import emit_json, plain, say

journal_app = typer.Typer(name="journal", no_args_is_help=True,
                          help="Move a journal between backends (a directory, s3://).")
app.add_typer(journal_app)


def _location(file, state):
    from ..journal import locate
    if state:
        return locate(Path.cwd(), None, state)
    from ..manifest import load_project
    from ..session import journal_location
    return journal_location(load_project(file), None)


@journal_app.command("export")
def export(file: ManifestOpt = None, state: StateOpt = None,
           output: Annotated[Optional[Path], typer.Option(
               "--output", "-o", metavar="FILE", help="Write it here. Default: stdout.")] = None
           ) -> None:
    """Print the journal (the manifest's, or --state's) as one JSON document."""
    from ..journal.transfer import export_journal
    document = json.dumps(export_journal(_location(file, state)), sort_keys=True, indent=1)
    if output is None:
        sys.stdout.write(document + "\n")
    else:
        output.write_text(document + "\n")


@journal_app.command("import")
def import_(source: Annotated[str, typer.Argument(
        metavar="FILE", help="A document written by `mlserve journal export` (- for stdin).")],
        file: ManifestOpt = None, state: StateOpt = None,
        force: Annotated[bool, typer.Option(
            "--force", help="Replace what the destination journal holds.")] = False,
        as_json: JsonOpt = False) -> None:
    """Load an exported journal into the manifest's journal, or --state's (empty, or --force)."""
    from ..errors import InvalidInput
    from ..journal.transfer import import_journal, read_document
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}",
                           fix="give a file written by `mlserve journal export`") from None
    where = "stdin" if source == "-" else source
    result = import_journal(read_document(text, where), _location(file, state), force=force,
                            where=where)
    if as_json:
        emit_json(result)
    else:
        say(f"[green]imported[/green] {result['releases']} releases, {result['deployments']} "
            f"deployments and {result['events']} events into {plain(result['destination'])}")
