"""Rendering templates safely: the Jinja environment and the quoting filters every template uses.

Templates are dumb and strict: ``StrictUndefined`` makes a missing variable an error, logic lives
in Python (``mlserve.packaging``), and every value that comes from a manifest reaches a rendered
file through a named filter that quotes it for the file's language:

==================  ===========================================================================
``shell``           one POSIX shell word (``shlex.quote``): safe in bash/sh scripts
``dockerfile``      a single-quoted Dockerfile ``ENV``/``LABEL`` value (no expansion inside;
                    ``'`` written as ``'\\''``); a line break cannot be written and is refused
``yaml``            a YAML double-quoted scalar; every character that YAML would fold, strip
                    or refuse (control characters, line separators, BOM) is escaped
``yaml_block(n)``   a multi-line text as a YAML literal block (``|``) indented by ``n`` spaces,
                    or as a double-quoted scalar when a literal block could not keep it exactly
``py``              a Python literal (``repr``) of str/int/float/bool/None/list/dict
``py_verbatim``     like ``py``, but each string stands between its quotes exactly as it is (no
                    escape sequence) whenever a quoting form allows it: tools that read a
                    literal by stripping its quotes (Cog's static schema generator in
                    ``cog build``) then read the same value as Python; ``repr`` otherwise
==================  ===========================================================================

So a value with quotes, ``$(...)``, backticks, newlines or any unicode reads back exactly as it
was written in the manifest (tests parse each format and compare), or rendering fails with an
``InvalidInput`` naming the value: it never silently changes a file's meaning.
"""

from __future__ import annotations

import math
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import InvalidInput

# Characters YAML 1.1 (PyYAML, cloud-init) and 1.2 (Go yaml) treat as line breaks or refuse.
_YAML_BREAKS = frozenset("\r\x85\u2028\u2029")
_YAML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _yaml_printable(ch: str) -> bool:
    """YAML's c-printable minus line breaks: what may stand unescaped in a quoted scalar."""
    code = ord(ch)
    if ch in _YAML_BREAKS or ch == "\ufeff":
        return False
    return (0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def yaml_quote(value: Any) -> str:
    """``value`` as a YAML double-quoted scalar that every YAML parser reads back exactly."""
    text = _as_text(value, "yaml")
    out = []
    for ch in text:
        if ch in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[ch])
        elif _yaml_printable(ch):
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def yaml_block(value: Any, indent: int) -> str:
    """A multi-line text as a literal block scalar indented by ``indent`` spaces.

    Falls back to a double-quoted scalar when a literal block would change the text: characters
    YAML reads as line breaks or strips, a first line starting with a space, trailing spaces on
    a line, or trailing newlines other than exactly one.
    """
    text = _as_text(value, "yaml")
    lines = text.split("\n")
    exact = (text.endswith("\n") and not text.endswith("\n\n") and text.strip() != ""
             and not text.startswith((" ", "\t"))
             and all(_yaml_printable(ch) or ch in "\n\t" for ch in text)
             and not any(line != line.rstrip(" \t") for line in lines))
    if not exact:
        return yaml_quote(text)
    pad = " " * indent
    body = "\n".join(pad + line if line else "" for line in lines[:-1])
    return "|\n" + body


def dockerfile_quote(value: Any) -> str:
    """A single-quoted Dockerfile ``ENV``/``LABEL`` value: nothing inside is expanded or
    unescaped (``$`` and ``\\`` stay as they are); a ``'`` closes the quotes, is escaped, and
    reopens them. Docker's lexer and hadolint's parser both read it; line breaks cannot be
    written in an instruction and are refused."""
    text = _as_text(value, "dockerfile")
    bad = next((ch for ch in text if ch in "\n\r" or ord(ch) < 0x20 and ch != "\t"), None)
    if bad is not None:
        raise InvalidInput(
            f"the value {_preview(text)} contains a control character ({bad!r}), which a "
            "Dockerfile ENV or LABEL instruction cannot hold",
            fix="remove the line break from the value in mlserve.yaml, or pass the value when "
                "the container starts (docker run -e NAME=...)")
    return "'" + text.replace("'", "'\\''") + "'"


def shell_quote(value: Any) -> str:
    """One POSIX shell word that expands to exactly ``value`` (no expansion, no splitting)."""
    return shlex.quote(_as_text(value, "shell"))


def py_literal(value: Any) -> str:
    """A Python literal that ``ast.literal_eval`` reads back as ``value``."""
    _check_literal(value)
    return repr(value)


def py_verbatim(value: Any) -> str:
    """A Python literal like ``py_literal``, whose strings are written by ``verbatim_str`` where
    they can be (``repr`` where they cannot); ``ast.literal_eval`` reads back ``value``."""
    _check_literal(value)
    return _verbatim(value)


def verbatim_str(text: str) -> str | None:
    """A Python string literal holding ``text`` unchanged between its quotes (``'...'``,
    ``"..."``, ``r'...'`` with backslashes, ``'''...'''`` across lines), or None when none
    can: a character that is neither printable nor a line feed or tab (Python's tokenizer
    changes a carriage return; control, format and separator characters would hide in the
    file), a line break together with a backslash, or quotes that every form collides with."""
    if not all(ch.isprintable() or ch in "\n\t" for ch in text):
        return None
    one_line = "\n" not in text
    if "\\" in text:
        if not one_line or text.endswith("\\"):
            return None
        return next((f"r{q}{text}{q}" for q in "'\"" if q not in text), None)
    if one_line:
        for q in "'\"":
            if q not in text:
                return q + text + q
    return next((q + text + q for q in ("'''", '"""') if q not in text and not text.endswith(q[0])),
                None)


def _verbatim(value: Any) -> str:
    if isinstance(value, str):
        return verbatim_str(value) or repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_verbatim(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_verbatim(k)}: {_verbatim(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _check_literal(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"py filter: {value!r} has no Python literal")
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_literal(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_literal(key)
            _check_literal(item)
        return
    raise TypeError(f"py filter: {type(value).__name__} has no safe Python literal")


def _as_text(value: Any, filter_name: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list, tuple)):
        raise TypeError(f"{filter_name} filter: expected a string or number, got "
                        f"{type(value).__name__}")
    return str(value)


def _preview(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


FILTERS = {
    "shell": shell_quote,
    "dockerfile": dockerfile_quote,
    "yaml": yaml_quote,
    "yaml_block": yaml_block,
    "py": py_literal,
    "py_verbatim": py_verbatim,
}


@lru_cache(maxsize=None)
def environment(templates: Path):
    """The strict Jinja environment for one template family directory (e.g. templates/docker)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def render(family: str, template: str, **context: Any) -> str:
    """Render ``templates/<family>/<template>`` with ``context``; filters as documented above."""
    from .resources import templates_dir

    return environment(templates_dir() / family).get_template(template).render(**context)
