"""Scripted API errors, shared by the emulators' fault injection (each emulator's ``faults``
module adds its own knobs: quotas, slow transitions...)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Fault:
    """The next ``count`` calls of ``operation`` (``*``: any) fail with ``code`` (``count``
    None: until reset); ``message`` overrides the code's default message."""
    operation: str
    code: str
    count: int | None
    message: str | None = None


def parse_errors(items: list[dict], known: dict) -> list[Fault]:
    """The ``errors`` of a ``POST /_emulator/faults`` body (``ValueError`` naming an unknown
    code)."""
    errors = []
    for item in items:
        if item.get("code") not in known:
            raise ValueError(f"unknown error code {item.get('code')!r}; known: {sorted(known)}")
        errors.append(Fault(str(item.get("operation", "*")), item["code"], item.get("count", 1),
                            item.get("message")))
    return errors


def take(errors: list[Fault], operation: str) -> Fault | None:
    """The fault this call of ``operation`` meets, one count consumed (call under a lock)."""
    for fault in errors:
        if fault.operation not in ("*", operation) or fault.count == 0:
            continue
        if fault.count is not None:
            fault.count -= 1
        return fault
    return None
