"""``mlserve predict``'s input: ``--input JSON``, ``--input @FILE``, ``--input -`` or piped stdin.

No input at all is an error (exit 2), never a silent ``null``: ``--input null`` sends null. Every
problem is an ``InvalidInput`` naming where the input came from, found before anything is
contacted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InvalidInput

# The most bytes read from a file or stdin: bounds memory when pointed at /dev/zero. The server's
# own body limit (10 MiB by default) answers 413 for anything between.
MAX_INPUT_BYTES = 64 * 1024 * 1024

_EXAMPLE = """--input '{"x": [1, 2]}', --input @input.json, or pipe it: mlserve predict < input.json"""


def read_input(option: str | None) -> Any:
    """The payload, parsed as JSON, from the ``--input`` option's value (``None``: not given)."""
    if option is None:
        if _stdin_is_terminal():
            raise InvalidInput("no input given", fix=f"give the input: {_EXAMPLE}")
        return _parse(_read_stream(sys.stdin.buffer, "stdin"), "stdin")
    if option == "-":
        return _parse(_read_stream(sys.stdin.buffer, "stdin"), "stdin")
    if option.startswith("@"):
        return _parse(_read_file(option[1:]), option)
    return _parse(option, "--input")


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is None or sys.stdin.isatty()
    except (ValueError, OSError):          # closed or unusable stdin: nothing to read
        return True


def _read_stream(stream: BinaryIO, source: str) -> str:
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInput(f"{source} holds more than {MAX_INPUT_BYTES // 2**20} MiB",
                           fix="send a smaller input (the server's body limit is 10 MiB by default)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source} is not UTF-8 text (byte {exc.start})",
                           fix="give the input as JSON text") from None


def _read_file(name: str) -> str:
    if not name:
        raise InvalidInput("--input @ names no file", fix="write the path after @: --input @input.json")
    path = Path(name).expanduser()
    try:
        if path.is_dir():
            raise InvalidInput(f"--input @{name}: {name} is a directory", fix="name a JSON file")
        with path.open("rb") as stream:
            return _read_stream(stream, f"--input @{name}")
    except OSError as exc:
        raise InvalidInput(f"--input @{name}: cannot read {name}: {exc.strerror or exc}",
                           fix="check the path (relative to the current directory) and its "
                               "permissions") from None


def _parse(text: str, source: str) -> Any:
    if not text.strip():
        raise InvalidInput(f"{source} is empty", fix=f"give the input: {_EXAMPLE}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidInput(f"{source} is not JSON: {exc}",
                           fix="""quote it for the shell: --input '{"x": [1, 2]}'""") from None
    except RecursionError:
        raise InvalidInput(f"{source} is not JSON mlserve can read: nested too deeply",
                           fix="flatten the input") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (the runtime accepts strict JSON only)")
