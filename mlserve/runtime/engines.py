"""Which event loop and HTTP parser the runtime runs, and why it does not run the fast ones.

uvloop (event loop) and httptools (HTTP parser) are optional accelerators: without them the
runtime serves on asyncio and h11, correctly but slower. ``detect()`` imports each once and
reports the choice, which the first log line and ``GET /health`` state. An accelerator that is
installed but fails to import (a compiled file built for another Python or machine) is a
problem the deployer should hear about, so its reason is kept for a warning; one that is not
installed at all is a plain choice and only reported as such.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Engines:
    loop: str                   # "uvloop" or "asyncio"
    http: str                   # "httptools" or "h11"
    problems: tuple[str, ...]   # why an installed accelerator could not be used

    def describe(self) -> str:
        return (f"Python {platform.python_version()}, event loop {self.loop}, "
                f"HTTP parser {self.http}")


def _import_problem(module: str) -> str | None:
    """None when ``module`` imports; otherwise why not ("" when it is simply not installed)."""
    try:
        if importlib.util.find_spec(module) is None:
            return ""
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import is reported, not raised
        return f"{module} is installed but does not import ({type(exc).__name__}: {exc})"
    return None


@functools.cache
def detect() -> Engines:
    loop_problem = _import_problem("uvloop")
    http_problem = _import_problem("httptools")
    problems = tuple(p for p in (loop_problem, http_problem) if p)
    return Engines(loop="uvloop" if loop_problem is None else "asyncio",
                   http="httptools" if http_problem is None else "h11", problems=problems)
