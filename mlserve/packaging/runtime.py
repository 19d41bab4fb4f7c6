"""What a build context carries of mlserve itself: the runtime package and its dependencies.

Every format that runs the runtime (Docker, cloud-init) or reuses its loader (Cog, Truss)
ships ``mlserve/__init__.py`` and ``mlserve/runtime/*.py`` copied verbatim from this
installation, so building the context needs no mlserve release on a package index.

The runtime's own dependencies (uvicorn, h11, click, and the uvloop/httptools accelerators
when installed here) reach a container image as a *vendored directory* copied from this
installation's distributions: no network at ``docker build`` time, the exact versions mlserve
was tested with, and byte-identical on every build from the same installation. Only what
imports at run time is copied (``.py`` and compiled extensions plus the dist-info metadata);
installer-specific files (RECORD, INSTALLER, direct_url.json) are left out because they differ
between machines. Compiled accelerators are tied to this interpreter's ABI: in an image whose
Python differs they fail to import and the runtime falls back to asyncio and h11 on its own.
VMs install the same versions from the package index (``runtime_pins``).
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import sys
from pathlib import Path, PurePosixPath

#: Distributions the runtime needs, then the optional accelerators uvicorn picks up when present.
REQUIRED = ("uvicorn", "h11", "click")
ACCELERATORS = ("uvloop", "httptools")
_RUNTIME_SUFFIXES = (".py", ".so", ".pyd", ".typed")
_SKIPPED_METADATA = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def runtime_sources() -> list[tuple[str, Path]]:
    """``(relative path, source)`` of ``mlserve/__init__.py`` and the runtime package."""
    spec = importlib.util.find_spec("mlserve.runtime")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mlserve.runtime is missing from this installation")
    runtime_dir = Path(next(iter(spec.submodule_search_locations)))
    files = [("mlserve/__init__.py", runtime_dir.parent / "__init__.py")]
    files += [(f"mlserve/runtime/{p.name}", p) for p in sorted(runtime_dir.glob("*.py"))]
    return files


def _wanted(rel: PurePosixPath, dist_info: str) -> bool:
    if rel.parts[0].startswith(".."):          # console scripts outside site-packages
        return False
    if "__pycache__" in rel.parts:
        return False
    if rel.parts[0] == dist_info:
        return rel.name not in _SKIPPED_METADATA
    return rel.name.endswith(_RUNTIME_SUFFIXES)


def _distributions(python: str) -> list[metadata.Distribution]:
    names = list(REQUIRED)
    if tuple(int(p) for p in python.split(".")) < (3, 11):
        names.append("typing_extensions")       # uvicorn needs it before 3.11
    found = []
    for name in names + list(ACCELERATORS):
        try:
            found.append(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            if name in REQUIRED:
                raise FileNotFoundError(f"{name}, which the runtime needs, is not installed") from None
    return found


def vendored_sources(python: str) -> list[tuple[str, Path]]:
    """``(path relative to the vendor dir, source)`` of the runtime's dependencies."""
    files: list[tuple[str, Path]] = []
    for dist in _distributions(python):
        dist_info = Path(str(dist._path)).name  # type: ignore[attr-defined]
        for entry in dist.files or []:
            rel = PurePosixPath(entry.as_posix())
            if _wanted(rel, dist_info):
                files.append((str(rel), Path(str(dist.locate_file(entry)))))
    return sorted(files)


def runtime_pins(python: str) -> list[str]:
    """``name==version`` of the same distributions, for hosts that install from an index."""
    return [f"{d.metadata['Name']}=={d.version}" for d in _distributions(python)]


def local_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
