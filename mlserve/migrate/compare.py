"""Comparing two model outputs for ``mlserve migrate`` (pure: no I/O, no mlserve imports).

``first_difference(a, b, rtol, atol)`` walks two decoded JSON values in the same order and
returns the first place they differ, or None when they agree:

- numbers (ints and floats alike) agree when ``|a - b| <= max(rtol * max(|a|, |b|), atol)``
  (``math.isclose``'s rule), computed exactly with fractions so that huge integers neither
  overflow nor lose digits; NaN agrees only with NaN, an infinity only with itself;
- a bool is never a number (``true`` differs from ``1``), and everything else (strings, null,
  bools) must be equal;
- objects agree when they have the same keys and every value agrees; the keys of ``a`` are
  visited in their order, then the keys only ``b`` has; arrays element by element, then their
  lengths.

The path is JSONPath-like: ``$`` is the whole output, ``.name`` a key that is an identifier,
``["a key"]`` any other key (JSON-quoted, so the path is unambiguous), ``[2]`` an array index.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Missing:
    """A key or array element that one side does not have."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


@dataclass(frozen=True)
class Difference:
    path: str          # "$.y[2]"
    a: Any             # the value on the source (MISSING when absent)
    b: Any             # the value on the destination (MISSING when absent)
    reason: str        # "numbers differ beyond rtol=1e-06 atol=0", "present on one side only"

    def describe(self, a_name: str = "A", b_name: str = "B") -> str:
        return (f"{self.path}: {a_name} gave {shown(self.a)}, {b_name} gave {shown(self.b)} "
                f"({self.reason})")


def shown(value: Any, limit: int = 200) -> str:
    """A value as JSON for a message, cut to ``limit`` characters."""
    if value is MISSING:
        return "nothing"
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numbers_agree(a: int | float, b: int | float, rtol: float, atol: float) -> bool:
    if a == b:                              # also inf == inf and 1 == 1.0
        return True
    if isinstance(a, float) and math.isnan(a) or isinstance(b, float) and math.isnan(b):
        return (isinstance(a, float) and math.isnan(a)) and (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float) and math.isinf(a) or isinstance(b, float) and math.isinf(b):
        return False                        # unequal, and no tolerance spans an infinity
    fa, fb = Fraction(a), Fraction(b)
    return abs(fa - fb) <= max(Fraction(rtol) * max(abs(fa), abs(fb)), Fraction(atol))


def key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def first_difference(a: Any, b: Any, rtol: float = 1e-6, atol: float = 0.0,
                     path: str = "$") -> Difference | None:
    """The first place where ``a`` and ``b`` differ (see the module docstring), or None."""
    # An explicit stack rather than recursion: outputs may nest deeper than Python's stack.
    stack: list[tuple[str, Any, Any]] = [(path, a, b)]
    while stack:
        where, x, y = stack.pop()
        found = _here(where, x, y, rtol, atol)
        if found is not None:
            return found
        if isinstance(x, dict):
            keys = list(x) + [k for k in y if k not in x]
            stack.extend((key_path(where, k), x.get(k, MISSING), y.get(k, MISSING))
                         for k in reversed(keys))
        elif isinstance(x, list):
            pairs = [(f"{where}[{i}]", x[i] if i < len(x) else MISSING,
                      y[i] if i < len(y) else MISSING) for i in range(max(len(x), len(y)))]
            stack.extend(reversed(pairs))
    return None


def _here(path: str, x: Any, y: Any, rtol: float, atol: float) -> Difference | None:
    """The difference at this node alone (containers: only their kind), or None."""
    if x is MISSING or y is MISSING:
        return Difference(path, x, y, "present on one side only")
    if is_number(x) and is_number(y):
        if numbers_agree(x, y, rtol, atol):
            return None
        return Difference(path, x, y, f"numbers differ beyond rtol={rtol:g} atol={atol:g}")
    if type(x) is not type(y):            # numbers of both kinds were compared above
        return Difference(path, x, y, f"{_kind(x)} vs {_kind(y)}")
    if isinstance(x, (dict, list)):       # their contents are compared by the caller
        return None
    return None if x == y else Difference(path, x, y, "not equal")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if is_number(value):
        return "a number"
    return {dict: "an object", list: "an array", str: "a string",
            type(None): "null"}.get(type(value), type(value).__name__)
