"""Fix hints that repeat the ``-f``/``--state`` the user passed.

Errors are raised deep in the core, which does not know how the command was typed; their fixes
say ``mlserve status local``. The shared ``--file`` and ``--state`` options record what was given
on the command line (``remember``, with the root command group that parsed them), and the CLI's error printer rewrites every ``mlserve CMD`` in
a fix so that it carries those options, for the commands that accept them (read from the app
itself, so a new command needs nothing here). Values from ``MLSERVE_STATE`` are not repeated:
the environment still holds them when the user runs the fix.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

_passed: dict[str, str] = {}
_root: list = []          # the command group the options were parsed by (its commands' options)


def reset() -> None:
    _passed.clear()
    _root.clear()


def remember(ctx, param, value: Any) -> Any:
    """Option callback: note ``--file``/``--state`` when typed on the command line."""
    source = ctx.get_parameter_source(param.name)
    if value is not None and source is not None and source.name == "COMMANDLINE":
        _passed[param.opts[0]] = str(value)
        _root[:] = [ctx.find_root().command]
    return value


def _accepted_options() -> dict[str, set[str]]:
    group = _root[0]       # set with _passed: the root group this command line was parsed by
    return {name: {opt for p in cmd.params for opt in p.opts}
            for name, cmd in getattr(group, "commands", {}).items()}


def with_user_options(fix: str | None) -> str | None:
    """``fix`` (or a warning) with ``-f X``/``--state Y`` added after every ``mlserve CMD`` whose
    command takes them."""
    if not fix or not _passed:
        return fix
    accepted = _accepted_options()

    def add(match: re.Match) -> str:
        command = match.group(1)
        extra = [f"{'-f' if opt == '--file' else opt} {shlex.quote(value)}"
                 for opt, value in _passed.items() if opt in accepted.get(command, ())]
        return " ".join([match.group(0), *extra])

    pattern = r"\bmlserve (" + "|".join(map(re.escape, sorted(accepted, key=len, reverse=True))) + r")\b"
    return re.sub(pattern, add, fix)
