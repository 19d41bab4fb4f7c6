"""Entry point: runs the app (``app.py``) and is the one place errors are caught.

Errors are printed once, here: control characters escaped (``output.clean``), and every fix that
tells the user to run an ``mlserve`` command repeats the ``-f``/``--state`` they passed
(``hints.with_user_options``).
"""

from __future__ import annotations

import os
import sys

import typer

try:  # Typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older Typer
    from click import exceptions as click_exceptions

from . import build, cost, hints, journal, migrate, ops, plan, project  # noqa: F401  (importing them registers the commands)
from .app import app

_DEBUG = False


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


def _error(kind: str, message: str, exit_code: int, fix: str | None = None) -> dict:
    """The error object (``mlserve schema --output error``) for failures outside the error tree."""
    from .output import clean
    return {"error": kind, "message": clean(message).strip(), "where": None, "fix": fix,
            "exit_code": exit_code}


def _fail(obj: dict | None, exit_code: int) -> None:
    """Exit with ``exit_code``; under ``--json``, scripts get the error as data too, on stdout."""
    if obj is not None:
        from .output import emit_json
        try:
            emit_json(obj)
        except BrokenPipeError:
            pass
    sys.exit(exit_code)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turn every error into one message and an exit code."""
    global _DEBUG
    args, debug_flag = _split_debug(sys.argv[1:] if argv is None else list(argv))
    _DEBUG = debug_flag or os.environ.get("MLSERVE_DEBUG", "") not in ("", "0")
    hints.reset()
    from ..errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_INVALID, MlserveError
    as_json = "--json" in args[:args.index("--") if "--" in args else len(args)]
    try:
        code = app(args=args, prog_name="mlserve", standalone_mode=False)
    except MlserveError as exc:
        if _DEBUG:
            import traceback
            traceback.print_exc()
        exc.fix = hints.with_user_options(exc.fix)
        exc.details = hints.with_user_options(exc.details)
        _print_error(exc.render(), exc.exit_code)
        from .output import step_summary
        step_summary(next((a for a in args if not a.startswith("-")), ""), exc.exit_code,
                     exc.to_dict())
        _fail(exc.to_dict() if as_json else None, exc.exit_code)
    except click_exceptions.ClickException as exc:  # usage errors: exit 2
        _show_usage_error(exc)
        code = EXIT_INVALID if exc.exit_code == 2 else exc.exit_code
        _fail(_error("UsageError", exc.format_message(), code,
                     fix="see `mlserve --help` or `mlserve COMMAND --help`") if as_json else None,
              code)
    except typer.Abort as exc:  # a confirmation answered "no", or Ctrl-C in older Click
        if isinstance(exc.__context__, KeyboardInterrupt):
            _interrupted(as_json)
        sys.stderr.write("aborted: nothing was changed\n")
        _fail(_error("Aborted", "aborted: nothing was changed", EXIT_FAILURE) if as_json else None,
              EXIT_FAILURE)
    except KeyboardInterrupt:
        _interrupted(as_json)
    except BrokenPipeError:  # `mlserve ... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:  # a bug in mlserve: say so, without local variables
        if _DEBUG:
            raise
        message = f"internal error: {type(exc).__name__}: {exc}"
        fix = "run again with --debug for a traceback, and report it"
        _print_error(f"{message}\nRun again with --debug for a traceback, and report it.",
                     EXIT_FAILURE)
        _fail(_error("InternalError", message, EXIT_FAILURE, fix=fix) if as_json else None,
              EXIT_FAILURE)
    if code == EXIT_INTERRUPTED:    # Typer turns KeyboardInterrupt into Exit(130) itself
        _interrupted(as_json)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted(as_json: bool) -> None:
    from ..errors import EXIT_INTERRUPTED
    sys.stderr.write("interrupted\n")
    _fail(_error("Interrupted", "interrupted", EXIT_INTERRUPTED) if as_json else None,
          EXIT_INTERRUPTED)
