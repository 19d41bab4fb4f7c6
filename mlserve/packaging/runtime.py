"""What a build context carries of mlserve itself: the runtime package and its dependencies.

Every format that runs the runtime (Docker, cloud-init) or reuses its loader (Cog, Truss)
ships ``mlserve/__init__.py`` and ``mlserve/runtime/*.py`` copied verbatim from this
installation, so building the context needs no mlserve release on a package index.

The runtime's own dependencies (uvicorn, h11, click, and the uvloop/httptools accelerators when
installed here), pinned to the versions mlserve runs with here (``runtime_pins``), reach a
container image as *wheels for the image's own Python and platform* (``runtime_wheels``):
``pip download --only-binary=:all: --platform manylinux... --python-version X.Y`` into a cache on
the building machine (``~/.cache/mlserve/wheels/<python>-<platform>/``, or
``$MLSERVE_WHEEL_CACHE``), fetched once per Python and platform. The image installs them with
``pip install --no-index`` (no network at ``docker build`` time), and pip refuses a wheel that
does not fit the image's interpreter instead of the runtime silently falling back to asyncio.
Wheels on an index never change once published, so the same pins give the same wheel bytes
(and so the same context and image tag) on any machine. A cache miss that pip cannot fill is a
MissingDependency (exit 3) naming the pip command. VMs install the same pins from the index.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ..errors import InvalidInput, MissingDependency

#: Docker platforms the wheels can be fetched for, and their wheel machine names.
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
#: manylinux2014 = glibc 2.17: every Debian/Ubuntu/RHEL base image of the last decade runs it.
_MANYLINUX = ("manylinux2014_{arch}", "manylinux_2_17_{arch}")
#: Distributions the runtime needs, then the optional accelerators uvicorn picks up when present.
REQUIRED = ("uvicorn", "h11", "click")
ACCELERATORS = ("uvloop", "httptools")


def runtime_sources() -> list[tuple[str, Path]]:
    """``(relative path, source)`` of ``mlserve/__init__.py`` and the runtime package."""
    spec = importlib.util.find_spec("mlserve.runtime")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mlserve.runtime is missing from this installation")
    runtime_dir = Path(next(iter(spec.submodule_search_locations)))
    files = [("mlserve/__init__.py", runtime_dir.parent / "__init__.py")]
    files += [(f"mlserve/runtime/{p.name}", p) for p in sorted(runtime_dir.glob("*.py"))]
    return files


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


def runtime_pins(python: str) -> list[str]:
    """``name==version`` of the same distributions, for hosts that install from an index."""
    return [f"{d.metadata['Name']}=={d.version}" for d in _distributions(python)]


def wheel_cache(python: str, platform: str) -> Path:
    """Where the wheels for ``python`` on ``platform`` are kept on this machine."""
    root = os.environ.get("MLSERVE_WHEEL_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlserve" / "wheels"
    return base / f"cp{python.replace('.', '')}-{platform.replace('/', '-')}"


def _wheel_prefix(pin: str) -> str:
    """``uvicorn==0.30.6`` -> ``uvicorn-0.30.6-``: how the pin's wheel file name starts (PEP 427)."""
    name, version = pin.split("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def _fits(name: str, python: str, platform: str) -> bool:
    """Whether the wheel file ``name`` installs on CPython ``python`` on ``platform``, read from
    its tags (PEP 427: name-version[-build]-python-abi-platform.whl)."""
    parts = name[:-len(".whl")].split("-")
    if not name.endswith(".whl") or len(parts) not in (5, 6):
        return False
    pys, abis, plats = (set(part.lower().split(".")) for part in parts[-3:])
    cp = "cp" + python.replace(".", "")
    if plats == {"any"}:
        return abis == {"none"} and bool(pys & {"py3", "py" + cp[2:], cp})
    machine = "_" + PLATFORMS[platform]
    if not all(p.startswith("manylinux") and p.endswith(machine) for p in plats):
        return False
    minor = int(python.split(".")[1])
    stable = "abi3" in abis and any(re.fullmatch(r"cp3\d+", p) and int(p[3:]) <= minor for p in pys)
    return (cp in abis and cp in pys) or stable


def _intact(wheel: Path) -> bool:
    """A zip with a WHEEL file: a cache filled or copied by hand may hold a truncated one (its
    central directory, at the end, is then missing). Member CRCs are not read: on every build
    that would cost ~0.15 s of decompression, and pip checks them when the image installs."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return any(n.endswith(".dist-info/WHEEL") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _cached(cache: Path, pin: str, python: str, platform: str) -> Path | None:
    """The cached wheel of ``pin`` that fits and is whole; anything else there is ignored."""
    prefix = _wheel_prefix(pin)
    found = sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix)
                   and _fits(p.name, python, platform) and p.is_file())
    return next((p for p in found if _intact(p)), None)


def download_command(python: str, platform: str, pins: list[str], dest: Path) -> list[str]:
    """The ``pip download`` that fetches ``pins`` as wheels for ``python`` on ``platform``."""
    arch = PLATFORMS[platform]
    tag = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python, "--abi", tag, "--abi", "abi3", "--abi", "none"]
    for form in _MANYLINUX:
        cmd += ["--platform", form.format(arch=arch)]
    return cmd + ["-d", str(dest), *pins]


def runtime_wheels(python: str, platform: str = "linux/amd64") -> list[Path]:
    """The cached wheel of every runtime pin for ``python`` on ``platform``; missing ones are
    fetched with pip first. Raises MissingDependency (exit 3) when pip cannot fetch them."""
    if platform not in PLATFORMS:
        raise InvalidInput(f"platform {platform!r} is not one mlserve builds images for",
                           fix=f"use one of {', '.join(PLATFORMS)}")
    cache = wheel_cache(python, platform)
    pins = runtime_pins(python)
    missing = [pin for pin in pins if _cached(cache, pin, python, platform) is None]
    if missing:
        _download(python, platform, missing, cache)
    wheels = [_cached(cache, pin, python, platform) for pin in pins]
    if None in wheels:    # pip fetched something, but not a whole wheel that fits
        raise MissingDependency(f"the wheels fetched into {cache} for Python {python} on {platform} "
                                "do not fit it", fix=f"remove {cache} and build again")
    return wheels  # type: ignore[return-value]


def _download(python: str, platform: str, pins: list[str], cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".partial-{os.getpid()}"
    cmd = download_command(python, platform, pins, partial)
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    fetched = sorted(partial.glob("*.whl")) if partial.is_dir() else []
    # Moved in only when pip fetched them all: a half-fetched set never looks like a cache hit.
    if done.returncode == 0:
        for wheel in fetched:
            os.replace(wheel, cache / wheel.name)
        shutil.rmtree(partial, ignore_errors=True)
        return
    shutil.rmtree(partial, ignore_errors=True)
    said = [line for line in (done.stderr or done.stdout).strip().splitlines()
            if not line.startswith("WARNING:")]   # pip's notes on unused index locations
    tail = "\n".join(said[-6:])
    raise MissingDependency(
        f"cannot fetch the runtime's wheels for Python {python} on {platform} "
        f"({', '.join(pins)}) into {cache}",
        fix="make the package index reachable (pip's configured index, or a proxy) and build again, "
            f"or fill the cache by hand: {shlex.join(cmd[:-len(pins) - 2] + ['-d', str(cache), *pins])}",
        details=tail or None)
