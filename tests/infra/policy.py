"""When a real component is missing: skip on a developer's machine, fail under CI.

A test that needs sshd, a Docker engine or root should say so with one call. Locally a
missing piece skips the test with the reason and the fix; with ``CI=true`` (set by
``.ci/run``) the same call fails, so a CI machine that lost a package cannot go green by
skipping everything.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to a true value (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(component: str, reason: str) -> NoReturn:
    """Skip (locally) or fail (under CI) the current test because ``component`` is unavailable.

    Works in tests, fixtures and at module level (there, under CI, as a collection error)."""
    message = f"{component} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing component is a failure)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_root(component: str) -> None:
    """Stop here unless running as root (network namespaces, dockerd, debootstrap need it)."""
    if os.geteuid() != 0:
        require(component, "needs root (run the tests as root, as .ci/run does)")


def require_tool(component: str, program: str, apt_package: str) -> str:
    """Return the absolute path of ``program`` or stop, naming the Debian package to install."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        require(component, f"`{program}` not found: apt-get install -y {apt_package}")
    return path


def require_module(component: str, module: str, pip_package: str) -> None:
    """Stop unless the Python ``module`` imports (e.g. the docker SDK for image imports)."""
    try:
        __import__(module)
    except ImportError:
        require(component, f"Python module {module!r} missing: pip install {pip_package}")
