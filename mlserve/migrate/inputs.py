"""``mlserve migrate --inputs FILE``: saved inputs, one JSON value per line (JSON Lines).

Each line is one input, exactly what ``mlserve predict --input`` takes (the value sent as
``{"input": ...}``). Blank lines and lines starting with ``#`` are skipped, so a file of saved
requests can carry notes; a UTF-8 byte-order mark at the start is ignored. Strict JSON, like
the runtime: ``NaN`` and ``Infinity`` are refused. Every problem is an ``InvalidInput`` (exit 2)
naming ``FILE:LINE``, raised before anything is deployed.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput

MAX_LINE_BYTES = 16 * 1024 * 1024      # the runtime's body limit is 10 MiB by default
MAX_INPUTS = 100_000                   # each one is sent to both targets: bound the run


@dataclass(frozen=True)
class Case:
    """One input both targets are asked, and where it came from (for messages)."""

    source: str          # "smoke case 2" or "inputs.jsonl:7"
    input: Any


def read_inputs(path: str | Path) -> list[Case]:
    """The inputs of ``path`` in file order (see the module docstring)."""
    path = Path(path).expanduser()
    name = str(path)
    try:
        if path.is_dir():
            raise InvalidInput(f"--inputs {name} is a directory", fix="name a JSON Lines file")
        with path.open("rb") as stream:
            return _parse(stream, name)
    except OSError as exc:
        raise InvalidInput(f"--inputs {name}: cannot read it: {exc.strerror or exc}",
                           fix="check the path (relative to the current directory) and its "
                               "permissions") from None


def _parse(stream, name: str) -> list[Case]:
    cases: list[Case] = []
    for number, raw in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), 1):
        where = f"{name}:{number}"
        if len(raw) > MAX_LINE_BYTES:
            raise InvalidInput(f"line {number} is longer than {MAX_LINE_BYTES // 2**20} MiB",
                               where=where, fix="save smaller inputs (one per line)")
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)     # editors on Windows write one
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"line {number} is not UTF-8 text (byte {exc.start + 1})",
                               where=where, fix="save the inputs as UTF-8 JSON") from None
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cases.append(Case(where, _value(stripped, number, where)))
        if len(cases) > MAX_INPUTS:
            raise InvalidInput(f"more than {MAX_INPUTS} inputs", where=where,
                               fix="compare on a sample of the saved inputs")
    return cases


def _value(text: str, number: int, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        column = f", column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidInput(f"line {number} is not JSON{column}: {detail}",
                           where=where, fix="write one JSON value per line (blank lines and "
                                            "lines starting with # are skipped)") from None
    except RecursionError:
        raise InvalidInput(f"line {number} is nested too deeply to read", where=where,
                           fix="flatten the input") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (the runtime accepts strict JSON only)")
