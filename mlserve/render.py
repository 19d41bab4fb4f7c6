"""Rendering templates safely: the Jinja environment and the quoting filters every template uses.

Templates are dumb and strict: ``StrictUndefined`` makes a missing variable an error, logic lives
in Python (``mlserve.packaging``), and every value that comes from a manifest reaches a rendered
file through a named filter that quotes it for the file's language:

==================  ===========================================================================
``shell``           one POSIX shell word (``shlex.quote``): safe in bash/sh scripts; a NUL
                    (which no shell word can hold) is refused
``dockerfile``      a single-quoted Dockerfile ``ENV``/``LABEL`` value (no expansion inside;
                    ``'`` written as ``'\\''``); a line break cannot be written and is refused
``yaml``            a YAML double-quoted scalar; every character that YAML would fold, strip
                    or refuse (control characters, line separators, BOM) is escaped; a bool
                    as ``true``/``false``
``yaml_key(n)``     a mapping key with its ``:``: ``"key":``, or, when the quoted key is too long
                    for an implicit key (YAML allows 1024 characters), the explicit form
                    ``? "key"`` with ``:`` on the next line, indented by ``n`` spaces
``yaml_block(n)``   a multi-line text as a YAML literal block (``|``) indented by ``n`` spaces,
                    or as a double-quoted scalar when a literal block could not keep it exactly
``py``              a Python literal (``repr``) of str/int/float/bool/None/list/dict
``py_verbatim``     like ``py``, but each string stands between its quotes exactly as it is (no
                    escape sequence) whenever a quoting form allows it: tools that read a
                    literal by stripping its quotes (Cog's static schema generator in
                    ``cog build``) then read the same value as Python; ``repr`` otherwise
``docker_image``    a Dockerfile ``FROM``/``ARG`` image reference, which no quoting can hold:
                    checked against Docker's reference grammar and written as it is
``docker_json``     one element of a Dockerfile JSON array (``COPY ["src", "dest"]``): Docker
                    still expands ``$`` and removes quotes and backslashes in it, so those are
                    escaped for Docker before the JSON encoding
``systemd``         one word of a systemd unit setting (``User=``, ``ExecStart=``): ``%`` doubled
                    (specifiers); whitespace, quotes, backslashes and control characters refused
``comment``         text inside a ``#`` comment line: backslashes, line breaks and every other
                    control or separator character written as escapes, so the comment stays one
                    line and cannot end in a line continuation
``plain``           a value the schema restricts to letters, digits and ``_.-+/=`` (names,
                    environment variable names, base64): written as it is, which is a literal
                    in every format above; anything else is refused
``int``             an ``int`` (not a bool, not a string that looks like one), written as is
==================  ===========================================================================

So a value with quotes, ``$(...)``, backticks, newlines or any unicode reads back exactly as it
was written in the manifest (tests parse each format and compare), or rendering fails with an
``InvalidInput`` naming the field (``Sourced`` values carry it): it never silently changes a
file's meaning.

Enforced, not hoped for: every filter returns ``Quoted`` text, and the environment's
``finalize`` hook refuses any ``{{ ... }}`` whose value is not ``Quoted`` or an ``int``. A
template that writes a variable without a filter fails on its first render (every template is
rendered by the golden and hostile-value tests), whatever the variable holds and however it was
derived. Text mlserve itself generates (a Python annotation, say) is marked with ``trusted``.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import InvalidInput


class Quoted(str):
    """Text quoted for the language it lands in (by a filter, or ``trusted``): the only text a
    template may write."""


class Sourced(str):
    """A manifest value that knows its field (``env.GREETING``) and where it was written
    (``mlserve.yaml:7:3``), so a filter that must refuse it can say which field to change."""

    field: str
    where: str | None

    def __new__(cls, text: str, field: str, where: str | None = None) -> "Sourced":
        self = super().__new__(cls, text)
        self.field, self.where = field, where
        return self

    @classmethod
    def at(cls, located: Any, text: str, *keys: str) -> "Sourced":
        """``text``, found at ``keys`` of the manifest ``located`` (a ``yamlpos.Located``)."""
        return cls(text, ".".join(keys), located.where(keys))


def trusted(text: str) -> Quoted:
    """Text mlserve generated from its own fixed pieces (never from a manifest value)."""
    return Quoted(text)


def _refuse(value: Any, problem: str, fix: str) -> InvalidInput:
    """An ``InvalidInput`` naming ``value``'s field when it is ``Sourced``."""
    field = getattr(value, "field", None)
    shown = _preview(str(value))
    head = f"{field}: the value {shown}" if field else f"the value {shown}"
    return InvalidInput(f"{head} {problem}", where=getattr(value, "where", None), fix=fix)

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
    if isinstance(value, bool):
        return Quoted("true" if value else "false")
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
    return Quoted('"' + "".join(out) + '"')


#: YAML limits an implicit (``key: value``) key to 1024 characters of the stream.
_YAML_IMPLICIT_KEY_MAX = 1024


def yaml_key(value: Any, indent: int) -> Quoted:
    """``value`` as a mapping key followed by its ``:``; a key too long to stand implicitly is
    written in the explicit form (``? key`` then ``:`` on the next line at ``indent``)."""
    quoted = yaml_quote(value)
    if len(quoted) < _YAML_IMPLICIT_KEY_MAX:
        return Quoted(quoted + ":")
    return Quoted(f"? {quoted}\n{' ' * indent}:")


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
    return Quoted("|\n" + body)


def dockerfile_quote(value: Any) -> str:
    """A single-quoted Dockerfile ``ENV``/``LABEL`` value: nothing inside is expanded or
    unescaped (``$`` and ``\\`` stay as they are); a ``'`` closes the quotes, is escaped, and
    reopens them. Docker's lexer and hadolint's parser both read it; line breaks cannot be
    written in an instruction and are refused."""
    text = _as_text(value, "dockerfile")
    bad = next((ch for ch in text if ch in "\n\r" or ord(ch) < 0x20 and ch != "\t"), None)
    if bad is not None:
        raise _refuse(value, f"contains a control character ({bad!r}), which a Dockerfile ENV "
                      "or LABEL instruction cannot hold",
                      "remove the character from the value in mlserve.yaml, or pass the value "
                      "when the container starts (docker run -e NAME=...)")
    return Quoted("'" + text.replace("'", "'\\''") + "'")


def shell_quote(value: Any) -> str:
    """One POSIX shell word that expands to exactly ``value`` (no expansion, no splitting). A
    NUL cannot be held by any shell word (bash drops it), so it is refused."""
    text = _as_text(value, "shell")
    if "\0" in text:
        raise _refuse(value, "contains a NUL character, which no shell word, argument or "
                      "environment variable can hold", "remove the NUL from the value in mlserve.yaml")
    return Quoted(shlex.quote(text))


def py_literal(value: Any) -> str:
    """A Python literal that ``ast.literal_eval`` reads back as ``value``."""
    _check_literal(value)
    return Quoted(repr(value))


def py_verbatim(value: Any) -> str:
    """A Python literal like ``py_literal``, whose strings are written by ``verbatim_str`` where
    they can be (``repr`` where they cannot); ``ast.literal_eval`` reads back ``value``."""
    _check_literal(value)
    return Quoted(_verbatim(value))


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


# Docker's reference grammar (github.com/distribution/reference, regexp.go): lowercase path
# components joined by separators, an optional registry host[:port] first, then :tag, @digest.
_ALNUM = r"[a-z0-9]+"
_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])"
_IMAGE_REF = re.compile(
    rf"(?:{_HOST}(?::[0-9]+)?/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?", re.ASCII)


def docker_image(value: Any) -> Quoted:
    """An image reference for ``FROM`` / ``ARG BASE_IMAGE=``, where nothing can be quoted: the
    whole value must match Docker's reference grammar (so it holds no space, quote, ``$``,
    backslash or line break), else an ``InvalidInput`` naming the field."""
    text = _as_text(value, "docker_image")
    match = _IMAGE_REF.fullmatch(text)
    if match is None or len(text) > 255 + 128 + 80 or len(match["path"]) > 255:
        raise _refuse(value, "is not a Docker image reference, and a Dockerfile FROM line "
                      "cannot quote anything else",
                      "write [registry[:port]/]name[:tag][@sha256:digest] with a lowercase name "
                      "and nothing around it (e.g. python:3.11-slim, ghcr.io/acme/base:1.2)")
    return Quoted(text)


def docker_json(value: Any) -> Quoted:
    """One element of a Dockerfile JSON array (``COPY ["src", "dest"]``). Docker decodes the
    JSON, then still runs its shell-word processing on each element (``$`` expands, quotes and
    backslashes are removed): those are backslash-escaped first, so the path arrives as is."""
    text = _as_text(value, "docker_json")
    escaped = "".join("\\" + ch if ch in "\\$'\"" else ch for ch in text)
    return Quoted(json.dumps(escaped, ensure_ascii=True))


def systemd_word(value: Any) -> Quoted:
    """One word of a systemd unit setting: ``%`` doubled (systemd expands specifiers in
    ``Description=``, ``User=``, ``ExecStart=`` and file paths); what would split the word, be
    unescaped or end the line (whitespace, quotes, backslashes, control characters) refused."""
    text = _as_text(value, "systemd")
    bad = next((ch for ch in text if ch in "\\'\"" or not ch.isprintable() or ch.isspace()),
               None)
    if bad is not None or not text:
        raise _refuse(value, f"cannot be one word of a systemd unit setting ({bad!r})",
                      "use letters, digits and ._-/ only")
    return Quoted(text.replace("%", "%%"))


def comment_text(value: Any) -> Quoted:
    """Text for the inside of a ``#`` comment line: a backslash, line break or any other
    control, format or separator character is written as a Python-style escape, so the comment
    stays on its line and cannot end in a line continuation."""
    text = _as_text(value, "comment")
    return Quoted("".join(ch if ch.isprintable() and ch != "\\" else repr(ch)[1:-1]
                          for ch in text))


_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/=-]*")


def plain(value: Any) -> Quoted:
    """A value the schema restricts to letters, digits and ``_.-+/=``, which every format reads
    as a literal written as it is; anything else is refused."""
    text = _as_text(value, "plain")
    if not _PLAIN.fullmatch(text):
        raise _refuse(value, "may only hold letters, digits and _.-+/=",
                      "use letters, digits, dashes and underscores")
    return Quoted(text)


def strict_int(value: Any) -> int:
    """``value`` itself when it is an int; Jinja's own ``int`` filter would turn any text it
    cannot read into 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"int filter: expected an int, got {type(value).__name__}")
    return value


def only_quoted(value: Any) -> Any:
    """The environment's ``finalize``: a ``{{ ... }}`` may write only what a quoting filter
    made (``Quoted``) or an int; anything else is a template that forgot its filter."""
    if isinstance(value, Quoted) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"a template writes a {type(value).__name__} without a quoting filter "
                    f"({', '.join(FILTERS)}): {_preview(str(value))}")


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
    "yaml_key": yaml_key,
    "py": py_literal,
    "py_verbatim": py_verbatim,
    "docker_image": docker_image,
    "docker_json": docker_json,
    "systemd": systemd_word,
    "comment": comment_text,
    "plain": plain,
    "int": strict_int,
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
        finalize=only_quoted,
    )
    env.filters.update(FILTERS)
    return env


def render(family: str, template: str, **context: Any) -> str:
    """Render ``templates/<family>/<template>`` with ``context``; filters as documented above."""
    from .resources import templates_dir

    return environment(templates_dir() / family).get_template(template).render(**context)
