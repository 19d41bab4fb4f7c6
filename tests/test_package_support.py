"""Shared pieces of the packaging tests (no tests here): a project with hostile manifest values,
builds through ``mlserve.packaging``, the tools' own venvs, and small HTTP helpers.

Tool venvs (Cog, Truss) live under ``MLSERVE_TEST_CACHE`` (default /var/cache/mlserve-tests, the
cache .ci/build-base-image.sh keeps the base image rootfs in), one
per tool and pinned requirement, created once (under a lock) and reused by later runs; a venv
that cannot be created skips the test locally and fails it under CI (tests.infra.policy).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from mlserve.packaging import BuildResult, build
from tests.infra.policy import require

CACHE = Path(os.environ.get("MLSERVE_TEST_CACHE", "/var/cache/mlserve-tests"))

#: Values that break naive quoting in every language mlserve renders.
HOSTILE = {
    "QUOTES": """it's "double" and 'single'""",
    "SUBSTITUTION": "$(touch /tmp/mlserve-pwned) `touch /tmp/mlserve-pwned` ${HOME} $HOME %PATH%",
    "BACKSLASHES": "a\\b\\\\c\\n\\t\\$x\\",
    "UNICODE": "héllo ✓ 🚀 中文 \u2028 \u0085 \u00a0 \ufeff end",
    "YAMLISH": "key: value # not a comment - [x] {y} &a *a !tag | > @ `",
    "JINJA": "{{ 7 * 7 }} {% raw %} {# c #}",
    "SPACES": "  leading and trailing  ",
    "EMPTY": "",
}
NEWLINES = {"NEWLINES": "line one\nline two\r\n\ttabbed\n"}
SECRET_NAME = "API_TOKEN"
SECRET_VALUE = "s3cr3t-VALUE-never-written"

MODEL_PY = '''"""Test model: doubles x (factor from FACTOR), or echoes the environment variables asked for."""

import os


class Model:
    def load(self):
        self.factor = int(os.environ.get("FACTOR", "2"))

    def predict(self, payload):
        if "env" in payload:
            return {"env": {name: os.environ.get(name) for name in payload["env"]}}
        return {"y": [v * self.factor for v in payload["x"]]}
'''
SMOKE = [{"input": {"x": [1, 2, 3]}, "expect": {"y": [2, 4, 6]}},
         {"input": {"x": [-1.5, 0]}, "expect": {"y": [-3.0, 0]}}]


def make_project(root: Path, *, env: dict | None = None, secrets: list | None = None,
                 targets: dict | None = None, files: dict | None = None,
                 requirements: list | None = None, gpu: dict | None = None) -> Path:
    """A project directory with the test model; returns the manifest path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(MODEL_PY)
    for rel, data in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data if isinstance(data, bytes) else data.encode())
    manifest = {
        "name": "hostile",
        "model": {"entrypoint": "model.py:Model", "python": "3.11",
                  "requirements": requirements or []},
        "resources": {"cpu": 1, "memory": "512Mi", **({"gpu": gpu} if gpu else {})},
        "scaling": {"concurrency": 2},
        "env": {"FACTOR": "2", **(env or {})},
        "secrets": secrets or [],
        "smoke": SMOKE,
        "targets": targets or {"local": {"provider": "local", "port": 8480}},
    }
    path = root / "mlserve.yaml"
    path.write_text(yaml.safe_dump(manifest, allow_unicode=True, sort_keys=False))
    return path


def build_to(manifest: Path, fmt: str, out: Path, target: str | None = None) -> BuildResult:
    return build(manifest, target, fmt, out)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- tool venvs -----------------------------------------------------------------------------

def tool_venv(name: str, *requirements: str, timeout: float = 540) -> Path:
    """A venv with ``requirements`` installed, cached across runs; returns its directory."""
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:10]
    venv = CACHE / f"{name}-venv-{key}"
    done = venv / ".mlserve-complete"
    if done.exists():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [[base, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                  "--disable-pip-version-check", *requirements]]
        for argv in steps:
            run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            if run.returncode:
                shutil.rmtree(venv, ignore_errors=True)
                require(name, f"could not create its venv ({' '.join(argv[-3:])}):\n"
                              f"{run.stdout[-1500:]}{run.stderr[-1500:]}")
        done.write_text("\n".join(requirements) + "\n")
    return venv


# --- HTTP -----------------------------------------------------------------------------------

def http_json(method: str, url: str, body=None, timeout: float = 30, headers: dict | None = None):
    """``(status, decoded JSON or text)``; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_http(url: str, timeout: float = 60, ok=lambda status, body: status == 200, alive=None):
    """Poll ``url`` until ``ok(status, body)``; returns the last answer or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server died while waiting for {url} (last answer {last})")
        try:
            last = http_json("GET", url, timeout=2)
            if ok(*last):
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s (last answer {last})")
