"""``mlserve serve``: the runtime's command line from a manifest (or from explicit options).

The runtime (``python -m mlserve.runtime``) has its own flags and reads the model's environment
from the process environment; this maps a manifest onto them the way the local deployer does:
app dir = the manifest's directory, entrypoint, name, concurrency and batching from the manifest, its ``env``
and secrets (named in the manifest, values from the environment, masked by the runtime through
``MLSERVE_SECRET_NAMES``) put into this process's environment. The port and host come from the
default target when it has them; the host is 127.0.0.1 unless the user or a local target says
otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def runtime_arguments(file: Path | None, *, port: int | None, host: str | None,
                      concurrency: int | None, app_dir: Path | None,
                      entrypoint: str | None) -> list[str]:
    """The runtime's argv; with a manifest, its env and secrets are set in ``os.environ``."""
    if file is None and (app_dir is not None or entrypoint is not None):
        argv = ["--app-dir", str(app_dir or "."), "--entrypoint", entrypoint or "model.py:Model"]
        target_port, target_host = None, None
    else:
        argv, target_port, target_host = _from_manifest(file, app_dir, entrypoint)
    argv += ["--host", host or target_host or DEFAULT_HOST,
             "--port", str(port if port is not None else target_port or DEFAULT_PORT)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    return argv


def _from_manifest(file: Path | None, app_dir: Path | None,
                   entrypoint: str | None) -> tuple[list[str], int | None, str | None]:
    from ..adapters.procs import SCALING_FLAGS, runtime_env
    from ..errors import MlserveError
    from ..manifest import load_project
    from ..service import resolve_secrets
    project = load_project(file)
    m = project.manifest
    try:
        _, target = project.target(None)
    except MlserveError:            # several targets, none called local: no port to take
        target = None
    os.environ.update(runtime_env(dict(m.env), resolve_secrets(m.secrets)))
    argv = ["--app-dir", str(app_dir or project.root), "--entrypoint", entrypoint or m.model.entrypoint,
            "--name", m.name]
    for key, flag in SCALING_FLAGS.items():
        argv += [flag, str(getattr(m.scaling, key))]
    local = getattr(target, "provider", None) == "local"
    return argv, getattr(target, "port", None), getattr(target, "host", None) if local else None
