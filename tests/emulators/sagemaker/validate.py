"""Request validation from botocore's own SageMaker service model, the way SageMaker's front
end checks a request before any handler runs: required members, enum values, string lengths,
number ranges and list sizes. Messages follow AWS's wording ("1 validation error detected:
Value 'x' at 'productionVariants.1.member.instanceType' failed to satisfy constraint: ...").

botocore's client-side validator checks types, required members and minimums only, so without
this an unknown instance type would reach the handlers unnoticed.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=None)
def service_model(name: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(name)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _check(shape, value: Any, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a structure")
            return
        for member in shape.required_members:
            if value.get(member) is None:
                where = f"{path}.{_lower_first(member)}" if path else _lower_first(member)
                errors.append(f"Value null at '{where}' failed to satisfy constraint: "
                              "Member must not be null")
        for key, item in value.items():
            if key in shape.members and item is not None:
                where = f"{path}.{_lower_first(key)}" if path else _lower_first(key)
                _check(shape.members[key], item, where, errors)
        return
    if kind == "list":
        if not isinstance(value, list):
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a list")
            return
        _bounds(len(value), meta, f"Value '{value}' at '{path}'", "length", errors)
        for index, item in enumerate(value, 1):
            _check(shape.member, item, f"{path}.{index}.member", errors)
        return
    if kind == "map":
        if not isinstance(value, dict):
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a map")
            return
        _bounds(len(value), meta, f"Value at '{path}'", "length", errors)
        for key, item in value.items():
            _check(shape.key, key, f"{path}.key", errors)
            _check(shape.value, item, f"{path}.value", errors)
        return
    if kind == "string":
        if not isinstance(value, str):
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a string")
            return
        if shape.enum and value not in shape.enum:
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must "
                          f"satisfy enum value set: [{', '.join(shape.enum)}]")
        _bounds(len(value), meta, f"Value '{value}' at '{path}'", "length", errors)
        pattern = meta.get("pattern")
        if pattern and not _matches(pattern, value):
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must "
                          f"satisfy regular expression pattern: {pattern}")
        return
    if kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a number")
            return
        _bounds(value, meta, f"Value '{value}' at '{path}'", "value", errors)
    if kind == "boolean" and not isinstance(value, bool):
        errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a boolean")


def _bounds(size, meta: dict, what: str, word: str, errors: list[str]) -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and size < low:
        errors.append(f"{what} failed to satisfy constraint: Member must have {word} "
                      f"greater than or equal to {low}")
    if high is not None and size > high:
        errors.append(f"{what} failed to satisfy constraint: Member must have {word} "
                      f"less than or equal to {high}")


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str):
    import re

    try:
        return re.compile(pattern)
    except re.error:            # a Java-only construct: do not check what cannot be read
        return None


def _matches(pattern: str, value: str) -> bool:
    compiled = _compiled(pattern)
    return compiled is None or compiled.fullmatch(value) is not None


def problems(service: str, operation: str, params: Any) -> str | None:
    """AWS's ValidationException message for ``params`` of ``operation``, or None if valid."""
    shape = service_model(service).operation_model(operation).input_shape
    errors: list[str] = []
    if shape is not None:
        _check(shape, params if params is not None else {}, "", errors)
    if not errors:
        return None
    count = len(errors)
    head = f"{count} validation error{'s' if count > 1 else ''} detected: "
    return head + "; ".join(errors)
