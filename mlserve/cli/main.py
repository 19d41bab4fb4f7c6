"""Entry point: the Typer app, shared options, and the one place errors are caught."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # Typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older Typer
    from click import exceptions as click_exceptions

app = typer.Typer(
    name="mlserve",
    help="Deploy one model (load() + predict()) to any layer of the serving stack: this machine, "
         "SSH hosts, containers, model endpoints — and move it between them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

ManifestOpt = Annotated[Optional[Path], typer.Option(
    "--file", "-f", help="Manifest (or its directory). Default: ./mlserve.yaml")]
StateOpt = Annotated[Optional[Path], typer.Option(
    "--state", envvar="MLSERVE_STATE", help="State directory. Default: .mlserve beside the manifest")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
TargetArg = Annotated[Optional[str], typer.Argument(
    help="Target name from the manifest. Default: the only target, or `local`.")]

_DEBUG = False


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"mlserve {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", envvar="MLSERVE_DEBUG",
                                        help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    global _DEBUG
    _DEBUG = _DEBUG or debug


from . import build, ops, project  # noqa: E402,F401  (registers the commands)


def _print_error(text: str, exit_code: int) -> None:
    from .output import console
    from rich.markup import escape
    first, _, rest = text.partition("\n")
    console().print(f"[bold red]error:[/bold red] {escape(first)}")
    if rest:
        console().print(escape(rest))
    console().print(f"[dim](exit {exit_code})[/dim]")


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turn every error into one message and an exit code."""
    global _DEBUG
    args = sys.argv[1:] if argv is None else argv
    _DEBUG = "--debug" in args or os.environ.get("MLSERVE_DEBUG", "") not in ("", "0")
    from ..errors import EXIT_FAILURE, EXIT_INVALID, MlserveError
    try:
        code = app(args=args, prog_name="mlserve", standalone_mode=False)
    except MlserveError as exc:
        if _DEBUG:
            import traceback
            traceback.print_exc()
        _print_error(exc.render(), exc.exit_code)
        if "--json" in args:   # scripts get the error as data too, on stdout
            from .output import emit_json
            emit_json(exc.to_dict())
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:  # usage errors: exit 2
        exc.show()
        sys.exit(EXIT_INVALID if exc.exit_code == 2 else exc.exit_code)
    except typer.Abort:  # a confirmation answered "no"
        sys.stderr.write("aborted: nothing was changed\n")
        sys.exit(EXIT_FAILURE)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:  # `mlserve ... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:  # a bug in mlserve: say so, without local variables
        if _DEBUG:
            raise
        _print_error(f"internal error: {type(exc).__name__}: {exc}\nRun again with --debug for a "
                     "traceback, and report it.", EXIT_FAILURE)
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)
