"""Cog's typed ``run()`` parameters, from the manifest's ``model.inputs``.

``run_parameters(spec, warnings)`` gives templates/cog/predict.py.j2 one parameter per field:
its name, its Python type and the ``Input(...)`` options, in manifest order. The wrapper
rebuilds the payload dict from them; the model's code does not change. Without
``model.inputs`` it returns ``[]`` and the wrapper keeps one opaque ``input`` parameter.

Two readers see the rendered signature, and both must read what the manifest says: Cog's Python
inspector (``cog serve``, the predictions it runs) and ``cog build``'s static schema generator,
which reads string literals by stripping their quotes and derives the OpenAPI schema that
validates every request in the image. So what Cog 0.23 accepts is checked here:

- types: ``str``, ``int``, ``float``, ``bool``, ``list[X]`` (arrays; ``list[Any]`` without
  ``items``, whose elements Cog's schema types as JSON objects) and ``dict`` (objects);
- ``choices`` only on string and integer fields, at least two, and never with ``ge``/``le``;
- default and choices strings written without escape sequences (``render.verbatim_str``).

That defaults and choices fit their field (type, choices, ge/le, finite numbers) is the
manifest's own rule (``manifest.InputSpec``), so ``mlserve validate`` reports it for every
target. What only Cog would refuse, or what would make its schema reject valid requests, is an
``InvalidInput`` at the field's line in mlserve.yaml. What Cog cannot express (a constraint it
has no place for, a description that needs escapes) is left out with a build warning.
"""

from __future__ import annotations

import keyword
from typing import Any

from ..errors import InvalidInput
from ..manifest import InputSpec
from ..render import trusted, verbatim_str
from .context import Spec

#: Why a string has no escape-free literal (``render.verbatim_str``).
NEEDS_ESCAPES = ("only escape sequences can write it in predict.py (a carriage return, a control "
                 "or format character, or a backslash with a line break or with both quote kinds)")
SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
#: Field types Cog takes ``choices`` for.
CHOICE_TYPES = ("string", "integer")


def run_parameters(spec: Spec, warnings: list[str]) -> list[dict]:
    """``[{name, annotation, options: [(keyword, value)], fresh}]``; ``fresh`` marks a mutable
    default the wrapper copies for each request (Cog hands the same object to every call)."""
    inputs = spec.manifest.model.inputs or {}
    return [_parameter(spec, name, field, warnings) for name, field in inputs.items()]


def _parameter(spec: Spec, name: str, field: InputSpec, warnings: list[str]) -> dict:
    path = f"model.inputs.{name}"

    def refuse(problem: str, key: str | None, fix: str) -> InvalidInput:
        keys = ("model", "inputs", name) + ((key,) if key else ())
        return InvalidInput(f"{path}{'.' + key if key else ''}: {problem}",
                            where=spec.project.located.where(keys, key=key is None), fix=fix)

    if keyword.iskeyword(name) or name == "self":
        raise refuse(f"Cog names run()'s parameters after the fields, and {name!r} cannot name a "
                     "Python parameter", None, "rename the field (and the key the model reads), or "
                     "remove model.inputs to keep Cog's single opaque input")
    choices, ge, le = _expressible_constraints(field, path, warnings)
    _check_values(field, choices, refuse)
    if field.type == "array" and field.items is None:
        warnings.append(f"{path}: an array without items: Cog's schema types its elements as "
                        "JSON objects (set items to string, integer, number or boolean)")
    options = [("default", field.default)] if field.default is not None else []
    if field.description is not None:
        options.append(("description", field.description))
        if verbatim_str(field.description) is None:
            warnings.append(f"{path}.description: {NEEDS_ESCAPES}; `cog build`'s schema shows "
                            "the escapes as typed")
    options += [(key, _number(value)) for key, value in (("ge", ge), ("le", le)) if value is not None]
    if choices is not None:
        options.append(("choices", choices))
    return {"name": name, "annotation": trusted(_annotation(field)), "options": options,
            "fresh": isinstance(field.default, (list, dict))}


def _expressible_constraints(field: InputSpec, path: str, warnings: list[str]) -> tuple:
    """``(choices, ge, le)`` less what Cog has no place for, each left out with a warning."""
    choices, ge, le = field.choices, field.ge, field.le
    if choices is not None and field.type not in CHOICE_TYPES:
        warnings.append(f"{path}.choices: Cog takes choices only for string and integer inputs; "
                        "Cog's schema does not list them and the model gets any value")
        choices = None
    if choices is not None and len(choices) < 2:
        warnings.append(f"{path}.choices: Cog needs at least two choices; left out")
        choices = None
    if choices is not None and (ge is not None or le is not None):
        warnings.append(f"{path}: Cog takes choices or ge/le, not both; ge/le left out")
        ge = le = None
    return choices, ge, le


def _check_values(field: InputSpec, choices: list | None, refuse) -> None:
    """Default and choices writable for both readers. (That they fit the field's type, its
    choices and ge/le is the manifest's own rule: ``manifest.InputSpec``.)"""
    for choice in choices or []:
        _check_writable(choice, refuse, "choices")
    if field.default is not None:
        _check_writable(field.default, refuse, "default")


def _check_writable(value: Any, refuse, key: str) -> None:
    """Every string in ``value`` has an escape-free literal."""
    if isinstance(value, str) and verbatim_str(value) is None:
        raise refuse(f"{value!r}: {NEEDS_ESCAPES}, and `cog build`'s schema would keep the "
                     "escapes as typed, then refuse the real value", key,
                     "remove those characters from the value")
    if isinstance(value, list):
        for item in value:
            _check_writable(item, refuse, key)
    if isinstance(value, dict):
        for k, item in value.items():
            _check_writable(k, refuse, key)
            _check_writable(item, refuse, key)


def _annotation(field: InputSpec) -> str:
    if field.type == "array":
        return f"list[{SCALARS[field.items]}]" if field.items else "list[Any]"
    if field.type == "object":
        return "dict"
    return SCALARS[field.type]


def _number(value: float) -> int | float:
    """A bound as the manifest most likely wrote it: ``0`` rather than ``0.0``."""
    return int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
