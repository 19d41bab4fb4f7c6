"""The runtime's lifecycle: settings, loading, failure exit codes, SIGTERM drain, zero-downtime
handover, and the import isolation that lets it be copied into container build contexts."""

from __future__ import annotations

import ast
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlserve.runtime.config import DEFAULT_MAX_BODY_BYTES, parse
from tests.runtime_models.harness import MODELS, ROOT, Runtime, free_port, request

RUNTIME_DIR = ROOT / "mlserve" / "runtime"
ALLOWED_THIRD_PARTY = {"uvicorn", "uvloop", "httptools"}
FORBIDDEN_MODULES = ("typer", "pydantic", "jinja2", "yaml", "rich")


# -- settings ------------------------------------------------------------------------------------


def test_port_precedence():
    assert parse([], {}).port == 8080
    assert parse([], {"MLSERVE_PORT": "9001"}).port == 9001
    assert parse([], {"MLSERVE_PORT": "9001", "AIP_HTTP_PORT": "9002"}).port == 9002
    assert parse(["--port", "9003"], {"MLSERVE_PORT": "9001", "AIP_HTTP_PORT": "9002"}).port == 9003
    assert parse(["serve"], {}).port == 8080  # SageMaker: docker run IMAGE serve


def test_env_fallbacks_and_defaults():
    s = parse([], {})
    assert (s.app_dir, s.entrypoint, s.name, s.host) == (".", "model.py:Model", "model", "0.0.0.0")
    assert (s.concurrency, s.max_body_bytes, s.release, s.access_log) == (4, DEFAULT_MAX_BODY_BYTES, "", True)
    env = {"MLSERVE_APP_DIR": "/app", "MLSERVE_ENTRYPOINT": "src/m.py:M", "MLSERVE_NAME": "n", "MLSERVE_HOST": "::",
           "MLSERVE_CONCURRENCY": "8", "MLSERVE_MAX_BODY_BYTES": "100", "MLSERVE_RELEASE": "r9",
           "MLSERVE_ACCESS_LOG": "0", "MLSERVE_SECRET_NAMES": "A,B,,C", "A": "short", "B": "longer-secret"}
    s = parse([], env)
    assert (s.app_dir, s.entrypoint, s.name, s.host) == ("/app", "src/m.py:M", "n", "::")
    assert (s.concurrency, s.max_body_bytes, s.release, s.access_log) == (8, 100, "r9", False)
    assert s.secrets == ["longer-secret", "short"]
    assert parse(["--concurrency", "2", "--release", "x", "--name", "m"], env).concurrency == 2


# -- loading -------------------------------------------------------------------------------------


def test_health_is_503_while_loading(tmp_path):
    runtime = Runtime(tmp_path, "models.py:SlowLoad", env={"LOAD_SECONDS": "1.0"})
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                status, body, _ = runtime.request("GET", "/health")
                break
            except OSError:
                assert time.monotonic() < deadline, runtime.stderr
                time.sleep(0.01)
        assert (status, body) == (503, {"status": "loading"})
        assert runtime.request("POST", "/predict", {"input": 1})[0] == 503
        assert runtime.request("GET", "/v1/models/model")[:2] == (200, {"name": "model", "ready": False})
        assert runtime.request("GET", "/")[:2] == (200, {"status": "alive"})  # liveness, not readiness
        assert runtime.wait_ready()["status"] == "ready"
        assert runtime.request("POST", "/predict", {"input": 1})[:2] == (200, {"output": 1})
    finally:
        assert runtime.stop() == 0


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("models.py:BrokenLoad", "RuntimeError: weights file missing: /models/w.bin"),
        ("broken_import.py:Model", "ModuleNotFoundError: No module named 'mlserve_package_that_does_not_exist'"),
        ("models.py:NoSuchClass", "defines no class 'NoSuchClass'"),
        ("missing.py:Model", "missing.py does not exist"),
    ],
)
def test_load_failure_exits_1_with_traceback(tmp_path, entrypoint, expected):
    runtime = Runtime(tmp_path, entrypoint)
    assert runtime.wait_exit() == 1
    assert expected in runtime.stderr
    if "Broken" in entrypoint or "broken" in entrypoint:
        assert "Traceback (most recent call last)" in runtime.stderr


# -- stopping ------------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests(tmp_path):
    runtime = Runtime(tmp_path, "models.py:Slow")
    runtime.wait_ready()
    result = {}
    slow = threading.Thread(target=lambda: result.update(r=runtime.request("POST", "/predict", {"input": {"sleep": 1.0}})))
    slow.start()
    time.sleep(0.3)  # the request is inside predict now
    runtime.signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(OSError):  # no new connections while draining
        request(runtime.port, "GET", "/health", timeout=2)
    slow.join(10)
    assert result["r"][0] == 200
    assert runtime.wait_exit() == 0


def test_handover_without_a_failed_request(tmp_path):
    """Old release on P; new release checked on Q, activated on P, old drained: no client sees a failure."""
    port = free_port()
    old = Runtime(tmp_path, "models.py:Echo", "--release", "old", port=port)
    new = None
    seen, failures, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                status, body, _ = request(port, "GET", "/health", timeout=5)
                (seen if status == 200 else failures).append(body.get("release") if status == 200 else (status, body))
            except OSError as exc:
                failures.append(repr(exc))

    try:
        old.wait_ready()
        old.signal(signal.SIGUSR1)  # without --check-port it is already active: ignored, not fatal
        clients = [threading.Thread(target=poll) for _ in range(2)]
        for c in clients:
            c.start()
        check = free_port()
        new = Runtime(tmp_path, "models.py:Echo", "--release", "new", "--check-port", str(check), port=port)
        assert new.wait_ready(port=check)["release"] == "new"
        assert new.request("POST", "/predict", {"input": "smoke"}, port=check)[:2] == (200, {"output": "smoke"})
        assert "new" not in seen  # not public before activation
        new.signal(signal.SIGUSR1)
        new.wait_log(f"activated on 127.0.0.1:{port}")
        time.sleep(0.3)
        old.signal(signal.SIGTERM)
        assert old.wait_exit() == 0
        time.sleep(0.3)
    finally:
        stop.set()
        for c in clients:
            c.join(10)
        old.stop()
        if new is not None:
            assert new.stop() == 0
    assert failures == []
    assert seen[0] == "old" and seen[-1] == "new" and len(seen) > 20
    assert "already active" in old.stderr


# -- isolation -----------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_runtime_imports_only_stdlib_and_uvicorn():
    for path in RUNTIME_DIR.glob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or name == "__future__", f"{path.name}: {name}"


def test_runtime_leaves_uvicorn_cli_unimported_but_whole_for_models():
    """Start-up skips uvicorn's command line (click); a model importing uvicorn gets all of it."""
    probe = (
        "import json, sys\n"
        "import mlserve.runtime.server as server\n"
        "server.Config(lambda scope, receive, send: None, http='h11', ws='none', lifespan='off',\n"
        "              log_config=None).load()  # what serving loads\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] == 'click' or m == 'uvicorn.main')\n"
        "import uvicorn\n"
        "from uvicorn import run\n"
        "print(json.dumps([before, uvicorn.Config is server.Config, uvicorn.Server is server.Server,\n"
        "                  callable(run), bool(uvicorn.__version__)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == [[], True, True, True, True]


def test_runtime_runs_copied_alone(tmp_path):
    """Copied without the rest of mlserve (as into a build context), it serves and loads nothing else."""
    shutil.copytree(RUNTIME_DIR, tmp_path / "ctx" / "mlserve" / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ctx" / "mlserve" / "__init__.py").write_text("")
    probe = (
        "import json, sys, runpy\n"
        "sys.argv = ['x', '--help']\n"
        "try:\n    runpy.run_module('mlserve.runtime', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "import mlserve.runtime.server\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mlserve'))))\n"
        f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_MODULES!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path / "ctx"), "PATH": "/usr/bin:/bin"}, check=True).stdout
    mlserve_modules, forbidden = out.strip().splitlines()[-2:]
    assert set(json.loads(mlserve_modules)) <= {"mlserve", "mlserve.runtime"} | {f"mlserve.runtime.{m.stem}" for m in RUNTIME_DIR.glob("*.py")}
    assert json.loads(forbidden) == []
    runtime = Runtime(tmp_path, "models.py:Echo", app_dir=MODELS, pythonpath=tmp_path / "ctx")
    try:
        runtime.wait_ready()
        assert runtime.request("POST", "/predict", {"input": [1]})[:2] == (200, {"output": [1]})
    finally:
        assert runtime.stop() == 0
