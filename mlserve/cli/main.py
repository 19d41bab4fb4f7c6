"""Entry point: the Typer app, shared options, and the one place errors are caught.

Errors are printed once, here: control characters escaped (``output.clean``), and every fix that
tells the user to run an ``mlserve`` command repeats the ``-f``/``--state`` they passed
(``hints.with_user_options``).
"""

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

from . import hints

app = typer.Typer(
    name="mlserve",
    help="Deploy one model (load() + predict()) to any layer of the serving stack: this machine, "
         "SSH hosts, containers, model endpoints — and move it between them.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _flags_show_no_type() -> None:
    """Typer's help shows a ``<bool>`` placeholder beside every flag (``--json <bool>``), as if it
    took a value; no flag does. One patch covers ours, ``--help`` and the completion flags; a test
    checks every command's help, so a Typer release that changes this is noticed."""
    from typer.core import TyperOption
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_type()
ManifestOpt = Annotated[Optional[Path], typer.Option(
    "--file", "-f", metavar="FILE", callback=hints.remember,
    help="Manifest (or its directory). Default: mlserve.yaml here or in the nearest parent "
         "directory.")]
StateOpt = Annotated[Optional[Path], typer.Option(
    "--state", envvar="MLSERVE_STATE", metavar="DIR", callback=hints.remember,
    help="State directory. Default: .mlserve beside the manifest.")]
JsonOpt = Annotated[bool, typer.Option("--json",
                                       help="Print one JSON object on stdout.")]
TargetArg = Annotated[Optional[str], typer.Argument(
    metavar="[TARGET]", show_default=False,
    help="Target name from the manifest. Default: the only target, or `local`.")]

_DEBUG = False


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"mlserve {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="MLSERVE_DEBUG",
        help="Show tracebacks for errors (also accepted after the command).")] = False,
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    global _DEBUG
    _DEBUG = _DEBUG or debug


from . import build, ops, project  # noqa: E402,F401  (registers the commands)


def _unwrap_help() -> None:
    """Help comes from docstrings wrapped for the source; Rich's markup mode keeps their line
    breaks, so help wrapped twice comes out ragged. Join each paragraph into one line: the
    terminal's width decides the wrapping."""
    import inspect
    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if text:
            info.help = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


_unwrap_help()


def _print_error(text: str, exit_code: int) -> None:
    from .output import console, plain
    first, _, rest = text.partition("\n")
    console().print(f"[bold red]error:[/bold red] {plain(first)}")
    if rest:
        console().print(plain(rest))
    console().print(f"[dim](exit {exit_code})[/dim]")


def _show_usage_error(exc) -> None:
    """Click's own usage message, with whatever the user typed made terminal-safe."""
    import io
    from .output import clean
    buffer = io.StringIO()
    exc.show(file=buffer)
    sys.stderr.write(clean(buffer.getvalue()))


def _split_debug(args: list[str]) -> tuple[list[str], bool]:
    """``--debug`` is a global option, accepted anywhere before a ``--`` separator."""
    end = args.index("--") if "--" in args else len(args)
    kept = [a for a in args[:end] if a != "--debug"] + args[end:]
    return kept, len(kept) != len(args)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turn every error into one message and an exit code."""
    global _DEBUG
    args, debug_flag = _split_debug(sys.argv[1:] if argv is None else list(argv))
    _DEBUG = debug_flag or os.environ.get("MLSERVE_DEBUG", "") not in ("", "0")
    hints.reset()
    from ..errors import EXIT_FAILURE, EXIT_INVALID, MlserveError
    try:
        code = app(args=args, prog_name="mlserve", standalone_mode=False)
    except MlserveError as exc:
        if _DEBUG:
            import traceback
            traceback.print_exc()
        exc.fix = hints.with_user_options(exc.fix)
        exc.details = hints.with_user_options(exc.details)
        _print_error(exc.render(), exc.exit_code)
        if "--json" in args:   # scripts get the error as data too, on stdout
            from .output import emit_json
            emit_json(exc.to_dict())
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:  # usage errors: exit 2
        _show_usage_error(exc)
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
