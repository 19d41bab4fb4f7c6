"""The Typer app and the options its commands share; command modules register on ``app``.

Kept apart from ``main`` (the entry point and error printer) so that the command modules import
this and ``main`` imports them, with no import circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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
StateOpt = Annotated[Optional[str], typer.Option(
    "--state", envvar="MLSERVE_STATE", metavar="DIR|s3://BUCKET/PREFIX", callback=hints.remember,
    help="The journal: a state directory, or s3://bucket/prefix for a journal shared by CI "
         "runners and laptops. Default: the manifest's state:, else .mlserve beside the "
         "manifest.")]


def _lock_timeout(value: Optional[float]) -> Optional[float]:
    from ..journal import set_lock_timeout
    set_lock_timeout(value)
    return value


LockTimeoutOpt = Annotated[Optional[float], typer.Option(
    "--lock-timeout", envvar="MLSERVE_LOCK_TIMEOUT", metavar="SECONDS", min=0, max=86400,
    callback=_lock_timeout,
    help="Wait up to SECONDS for a target another deploy holds (default 0: exit 1 at once, "
         "naming the holder).")]
JsonOpt = Annotated[bool, typer.Option("--json",
                                       help="Print one JSON object on stdout.")]
def _positive(value: Optional[float]) -> Optional[float]:
    import math
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter("must be a number of seconds greater than 0 (e.g. 600)")
    return value


TimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", metavar="SECONDS", callback=_positive, show_default=False,
    help="Give up after SECONDS (exit 1): what was started for the new release is stopped and "
         "the previous one keeps serving. Default: no limit.")]
TargetArg = Annotated[Optional[str], typer.Argument(
    metavar="TARGET", show_default=False,
    help="Target name from the manifest. Default: the only target, or `local`.")]

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
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    # Read by main.run before the app starts (it also accepts --debug after the command);
    # declared here so that --help lists it and MLSERVE_DEBUG is documented.
    del debug
