"""The interpreter a local release runs with: mlserve's own, or a venv per requirement set.

A venv is keyed by the hash of (python version, requirement lines) and reused while they are
unchanged. It is layered on mlserve's environment with a ``.pth`` that calls
``site.addsitedir`` on mlserve's site-packages, *after* the venv's own: the model's requirements
win, and the runtime (uvicorn) comes from mlserve without a second install. pip runs from
mlserve's environment with ``--python`` so the venv needs no pip of its own.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from ..errors import DeployError
from ..reqsets import requirement_lines, venv_key
from .base import Context
from .procs import log_tail


def python_for(ctx: Context, snapshot: dict, app_dir: Path) -> str:
    """The interpreter for a release whose files are in ``app_dir``."""
    model = snapshot["model"]
    wanted = model.get("python", "3.11")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted != running:
        ctx.reporter.warn(f"model.python is {wanted} but the local target runs Python {running} "
                          "(the one mlserve is installed in)")
    requirements = model.get("requirements")
    lines = requirement_lines(app_dir, requirements)
    if not lines:
        return sys.executable
    key = venv_key(lines)
    venv = ctx.state.dir / "venvs" / key
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return str(python)
    build = venv.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    log = ctx.state.dir / "venvs" / f"{key}.log"
    with ctx.reporter.progress(f"building a venv for {len(lines)} requirement(s)"):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(build)], check=True)
        purelib = subprocess.run([str(build / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
        Path(purelib, "_mlserve_parent.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in parents) + "\n")
        with open(log, "wb") as fh:
            result = subprocess.run([sys.executable, "-m", "pip", "--python", str(build / "bin" / "python"),
                                     "install", "--disable-pip-version-check",
                                     *(["-r", str(app_dir / requirements)]
                                       if isinstance(requirements, str) else lines)],
                                    stdout=fh, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        raise DeployError("installing the model's requirements failed",
                          fix="check model.requirements (names, versions) and that the package "
                              "index is reachable",
                          details=f"last lines of {log}:\n{log_tail(log)}")
    (build / ".complete").write_text("\n".join(lines))
    try:
        build.rename(venv)
    except OSError:                      # another deploy finished the same venv first
        shutil.rmtree(build, ignore_errors=True)
    return str(venv / "bin" / "python")
