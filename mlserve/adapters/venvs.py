"""The interpreter a local release runs with: mlserve's own, or a venv per requirement set.

A venv is keyed by the hash of (python version, requirement lines) and reused while they are
unchanged. It is layered on mlserve's environment with a ``.pth`` that calls
``site.addsitedir`` on mlserve's site-packages, *after* the venv's own: the model's requirements
win, and the runtime (uvicorn) comes from mlserve without a second install. pip runs from
mlserve's environment with ``--python`` so the venv needs no pip of its own.

Disk stays bounded:
- a venv is built in ``<key>.tmp-<pid>-<start>`` and renamed into place when complete; pip dies
  with the deployer (``PR_SET_PDEATHSIG``), and a build directory whose builder is gone is
  removed by the next command (``collect_venvs``), never reused;
- each release directory names its venv in a ``venv`` file; ``collect_venvs`` removes venvs (and
  their build logs) that no release directory of any local target names.
``venvs/.lock`` is held shared from choosing a venv until the release names it, and exclusively
(without waiting) to collect, so a venv another target is about to use is never removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import site
import sys
from pathlib import Path

from ..errors import DeployError
from ..reqsets import requirement_lines, venv_key
from .base import Context
from .procs import ProcessRef, build_venv, die_with_parent, log_tail, private_dir

MARKER = "venv"          # in a release directory: the key of the venv it runs with ("" = none)


def python_for(ctx: Context, snapshot: dict, release_dir: Path) -> str:
    """The interpreter for the release in ``release_dir`` (its files in ``app/``); records the
    venv it uses there."""
    model = snapshot["model"]
    wanted = model.get("python", "3.11")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted != running:
        ctx.reporter.warn(f"model.python is {wanted} but the local target runs Python {running} "
                          "(the one mlserve is installed in)")
    requirements = model.get("requirements")
    app_dir = release_dir / "app"
    lines = requirement_lines(app_dir, requirements)
    venvs = private_dir(ctx.state_dir / "venvs")
    with _lock(venvs, exclusive=False):
        if not lines:
            (release_dir / MARKER).write_text("")
            return sys.executable
        key = venv_key(lines)
        venv = venvs / key
        if not (venv / ".complete").exists():
            _build(ctx, venv, lines, app_dir, requirements)
        (release_dir / MARKER).write_text(key)
    return str(venv / "bin" / "python")


def _build(ctx: Context, venv: Path, lines: list[str], app_dir: Path, requirements) -> None:
    me = ProcessRef.of(os.getpid())
    build = venv.with_name(f"{venv.name}.tmp-{me.pid}-{me.start}")
    shutil.rmtree(build, ignore_errors=True)
    log = venv.with_name(f"{venv.name}.log")
    try:
        with ctx.reporter.progress(f"building a venv for {len(lines)} requirement(s)"):
            parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
            with open(log, "wb") as fh:
                failed = build_venv(build, requirements, lines, app_dir, fh, layer_on=parents,
                                    preexec=die_with_parent)
            if failed:                      # inside the step: a failed install never says "done"
                raise DeployError("installing the model's requirements failed" if failed == "pip"
                                  else f"{sys.executable} cannot create a venv",
                                  fix="check model.requirements (names, versions) and that the "
                                      "package index is reachable",
                                  details=f"last lines of {log}:\n{log_tail(log)}")
        (build / ".complete").write_text("\n".join(lines))
        try:
            build.rename(venv)
        except OSError:                      # another deploy finished the same venv first
            pass
    finally:
        shutil.rmtree(build, ignore_errors=True)


@contextlib.contextmanager
def _lock(venvs: Path, exclusive: bool):
    """Hold ``venvs/.lock``; exclusive never waits (yields False when busy)."""
    fd = os.open(venvs / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _builder_gone(name: str) -> bool:
    """A build directory ``<key>.tmp-<pid>[-<start>]`` whose building process has ended."""
    pid, _, start = name.rpartition(".tmp-")[2].partition("-")
    if not pid.isdigit():
        return True
    ref = ProcessRef.of(int(pid))
    return not ref.alive() or (bool(start) and ref.start != start)


def collect_venvs(state_dir: Path, only_stale: bool = False) -> list[str]:
    """Remove abandoned venv builds, and (unless ``only_stale``) venvs no local release names.
    Returns the names removed."""
    venvs = state_dir / "venvs"
    if not venvs.is_dir():
        return []
    removed = []
    for path in venvs.iterdir():
        if ".tmp-" in path.name and _builder_gone(path.name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    if only_stale:
        return removed
    with _lock(venvs, exclusive=True) as held:
        if not held:
            return removed                    # a deploy is choosing or building: next time
        used = {p.read_text().strip() for p in state_dir.glob(f"local/*/releases/*/{MARKER}")}
        for path in venvs.iterdir():
            key = path.name.removesuffix(".log")
            if path.name.startswith(".") or ".tmp-" in path.name or key in used:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
