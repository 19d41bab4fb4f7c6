"""The strict pydantic base every manifest model uses, and how untrusted values are shown.

``Strict`` makes unknown keys errors with a did-you-mean hint. ``shown``, ``given`` and
``clean`` are how every message built from the manifest shows what the user wrote: quoted,
truncated, and with control characters (ESC, CR, NUL, bidi overrides, line separators) escaped,
so a hostile manifest cannot move the cursor or reorder text on the terminal that prints the error.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

SHOWN_LIMIT = 60
# Patterns of the manifest's names. pydantic checks `pattern=` with Rust's regex engine, where `$`
# is the end of the text (a trailing newline does not match); Python's `re` checks use fullmatch.
NAME_RE = r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_RE = r"^[A-Z_][A-Z0-9_]*$"
PYTHON_RE = r"^3\.(9|1[0-9])$"
#: An image repository as docker parses it, without tag or digest: [DOMAIN[:PORT]/]PATH with
#: lower-case path components (distribution/reference's grammar).
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REPOSITORY = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    rf"(?::[0-9]{{1,5}})?/)?{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*")
IMAGE_REPOSITORY_RE = f"^{IMAGE_REPOSITORY}$"
DOCKER_HOST_RE = r"^(unix|tcp|ssh)://\S+$"


def clean(text: str) -> str:
    """``text`` with every non-printable character (but the space) written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """A value as a message shows it: a quoted string or a number, escaped and truncated."""
    if isinstance(value, str):
        more = f"… ({len(value):,} characters)" if len(value) > limit else ""
        return repr(value[:limit]) + more
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    text = _digits(value) if isinstance(value, int) else clean(repr(value))
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _digits(number: int) -> str:
    try:
        return str(number)
    except ValueError:      # more digits than Python converts
        return f"a number of about {number.bit_length() * 30103 // 100000:,} digits"


def given(value: Any) -> str:
    """What a value is, for "got ...": a mapping and a list by size, a scalar as ``shown``."""
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key{'s' if len(value) != 1 else ''}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    return shown(value)


class Strict(BaseModel):
    """Forbid unknown keys, and say which known key was probably meant."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        known |= {f.alias for f in cls.model_fields.values() if f.alias}
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else \
                    "known keys: " + ", ".join(sorted(known))
                raise PydanticCustomError("unknown_key", "unknown key {shown} ({hint})",
                                          {"key": key, "shown": shown(key), "hint": hint})
        return data


# --- how a validation error reads ---------------------------------------------------------------

_FIXES = {
    "missing": "add it (see `mlserve schema` for the field's form)",
    "unknown_key": "remove it or correct its spelling",
    "union_tag_invalid": "use one of the providers listed",
    "union_tag_not_found": "add `provider:` to the target (e.g. `provider: local`)",
    "string_pattern_mismatch": "change the value",
    "input_default": "make the default fit the field's type, choices and ge/le, or remove it "
                     "(the field is then required)",
    "input_choice": "write every choice as the field's type",
    "input_bounds": "use finite bounds with ge <= le",
    "manifest_version": "write `version: 1` (or leave it out); a later version needs a later mlserve",
}
# Our own errors already show the value they are about; pydantic's own do not.
_OWN_KINDS = {"unknown_key", "union_tag_invalid", "union_tag_not_found", "string_pattern_mismatch",
              "missing", "value_error", "assertion_error", "entrypoint", "memory", "requirements",
              "scaling", "inputs", "secrets", "input_default", "input_choice", "input_bounds"}

_PATTERN_WORDS = {
    NAME_RE: "be 1-40 lowercase letters, digits and dashes, starting with a letter and not ending "
             "with a dash (it becomes a DNS name)",
    ENV_NAME_RE: "be letters, digits and underscores, not starting with a digit",
    SECRET_RE: "be an upper-case environment variable name (API_TOKEN)",
    PYTHON_RE: "be a Python version from 3.9 on, quoted (\"3.11\")",
    IMAGE_REPOSITORY_RE: "be an image repository without tag: [REGISTRY[:PORT]/]PATH, with "
                         "lower-case path components (registry.example.com/team/hello)",
    DOCKER_HOST_RE: "be a Docker engine address: unix:///PATH, tcp://HOST:PORT or ssh://USER@HOST",
}


def _strip_tags(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's union-tag segments (e.g. the 'local' in targets.x.local.port)."""
    out: list = []
    node = data
    for seg in loc:
        if isinstance(node, dict) and seg in node:
            out.append(seg)
            node = node[seg]
        elif isinstance(node, list) and isinstance(seg, int) and seg < len(node):
            out.append(seg)
            node = node[seg]
        elif seg in ("str", "list[str]", "[key]") or (isinstance(node, dict)
                                                      and node.get("provider") == seg):
            continue
        else:
            out.append(seg)
            node = None
    return tuple(out)


def dotted(path: tuple) -> str:
    """A field path as ``a.b.0.c``, each key escaped and long ones shortened."""
    segments = [clean(str(p)) if len(str(p)) <= SHOWN_LIMIT else shown(str(p)) for p in path]
    return ".".join(segments) or "(top level)"


def problem_text(err: dict, located: Any) -> str:
    """One pydantic error as ``file:line:col: field.path: what. Fix: how`` (escaped)."""
    loc = _strip_tags(tuple(err["loc"]), located.data)
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "unknown_key":
        loc = (*loc, err["ctx"]["key"])
        where = located.where(loc, key=True)
    else:
        where = located.where(loc, key=kind == "missing" or "[key]" in err["loc"])
    if kind == "union_tag_invalid":
        msg = (f"unknown provider {shown(err['ctx']['tag'])}; expected one of "
               f"{err['ctx']['expected_tags']}")
    elif kind == "union_tag_not_found":
        msg = "the target has no `provider:`"
    elif kind == "string_pattern_mismatch":
        rule = _PATTERN_WORDS.get(err["ctx"]["pattern"], f"match {err['ctx']['pattern']}")
        msg = f"{shown(err['input'])} is not allowed: it must {rule}"
    elif kind not in _OWN_KINDS and "input" in err:
        msg = f"{msg} (got {given(err['input'])})"
    fix = _FIXES.get(kind, "see `mlserve schema` for what this field accepts")
    return clean(f"{where}: {dotted(loc)}: {msg}. Fix: {fix}")
