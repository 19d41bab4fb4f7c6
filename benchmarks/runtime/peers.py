"""The servers the runtime benchmark compares: how to install, start, probe and stop each one.

Each serves examples/hello's ``Model`` (or a thin wrapper around it, for Cog and Truss) on
127.0.0.1, pinned to core 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYTHON = getattr(sys, "_base_executable", sys.executable)  # venvs for peers start from the base interpreter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, any_status: bool = False) -> None:
    """Poll ``url`` until it answers 200 (or anything at all with ``any_status``)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if any_status:
                return
            last = exc
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s (last: {last})")


def venv(cache: Path, name: str, *requirements: str) -> Path:
    """A venv under the cache with ``requirements`` installed once; returns its bin dir."""
    path = cache / name
    marker = path / ".installed"
    if not marker.exists():
        subprocess.run([PYTHON, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", *requirements], check=True)
        marker.write_text("\n".join(requirements))
    return path / "bin"


class Server:
    name = "?"
    start_timeout = 30.0
    health_any_status = False

    def __init__(self, cache: Path, app_dir: Path) -> None:
        self.cache = cache
        self.app_dir = app_dir
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = cache / f"{self.name}.log"

    health_path = "/health"
    predict_path = "/predict"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.health_path}"

    @property
    def predict_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.predict_path}"

    def body(self, payload: str) -> str:
        return payload

    def version(self) -> str:
        return ""

    def command(self) -> tuple[list[str], dict, Path | None]:
        raise NotImplementedError

    def start(self, port: int) -> None:
        self.port = port
        cmd, env, cwd = self.command()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["taskset", "-c", "0", *cmd], env={**os.environ, **env}, cwd=cwd,
                                         stdout=subprocess.DEVNULL if self.quiet_stdout else log, stderr=log,
                                         start_new_session=True)

    quiet_stdout = False

    def cpu_seconds(self) -> float:
        """User+system CPU of every live process in the server's session (its own process group)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # field 5 (pgrp) after the ")" split
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group is this server's own session
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _pip_version(bin_dir: Path, package: str) -> str:
    out = subprocess.run([str(bin_dir / "python"), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip()  # empty when the venv does not exist


class Runtime(Server):
    """mlserve's runtime with its defaults: access log ON (written to stdout, kept in the log file)."""

    name = "runtime"

    def command(self):
        return ([sys.executable, "-m", "mlserve.runtime", "--app-dir", str(self.app_dir), "--host", "127.0.0.1",
                 "--port", str(self.port), "--release", "bench"], {"PYTHONPATH": str(ROOT)}, None)

    def version(self) -> str:
        return "uvicorn " + _pip_version(Path(sys.executable).parent, "uvicorn")


class RawAsgi(Server):
    name = "raw"

    health_any_status = True  # no routes: any answer (a 500 to the GET) means it is up
    health_path = "/predict"

    def command(self):
        return ([sys.executable, str(HERE / "raw_asgi.py"), str(self.app_dir), str(self.port)], {}, None)

    def version(self) -> str:
        return "uvicorn " + _pip_version(Path(sys.executable).parent, "uvicorn")


# Both wrappers load the user's model file the same way (its module name would clash with theirs).
USER_MODEL = """\
import importlib.util

_spec = importlib.util.spec_from_file_location("mlserve_user_model", {model_file!r})
_user = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_user)
"""

COG_PREDICTOR = USER_MODEL + """\
from typing import Any

from cog import BaseRunner


class Runner(BaseRunner):
    def setup(self) -> None:
        self.model = _user.Model()
        self.model.load()

    def run(self, x: list[int]) -> Any:
        return self.model.predict({{"x": x}})
"""


class Cog(Server):
    """Cog's own server (coglet, Rust HTTP + a Python worker) on a thin predictor around Model.

    Cog passes the "input" object's keys as keyword arguments, so the wrapper rebuilds the
    payload. The predictor is synchronous like the user's model; Cog then runs one prediction at
    a time and answers 409 to the rest (counted as non-2xx).
    """

    name = "cog"

    health_path = "/health-check"
    predict_path = "/predictions"

    def command(self):
        bin_dir = venv(self.cache, "cog-venv", "cog")
        app = self.cache / "cog-app"
        app.mkdir(exist_ok=True)
        (app / "predict.py").write_text(COG_PREDICTOR.format(model_file=str(self.app_dir / "model.py")))
        (app / "cog.yaml").write_text('build:\n  python_version: "3.11"\nrun: "predict.py:Runner"\n')
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "COG_PREDICT_TYPE_STUB": "predict.py:Runner", "PORT": str(self.port)}
        return [str(bin_dir / "python"), "-m", "cog.server.http", "--host", "127.0.0.1"], env, app

    def version(self) -> str:
        return "cog " + _pip_version(self.cache / "cog-venv" / "bin", "cog")


TRUSS_MODEL = USER_MODEL + """\

class Model:
    def __init__(self, **kwargs):
        self._model = _user.Model()

    def load(self):
        self._model.load()

    def predict(self, model_input):
        return {{"output": self._model.predict(model_input["input"])}}
"""

# Truss's server hard-codes host 0.0.0.0; this launcher keeps it on loopback and changes nothing else.
TRUSS_LAUNCHER = """\
import runpy, sys, uvicorn
_init = uvicorn.Config.__init__
def _loopback(self, *a, **kw):
    kw["host"] = "127.0.0.1"
    _init(self, *a, **kw)
uvicorn.Config.__init__ = _loopback
sys.path.insert(0, ".")
runpy.run_path("main.py", run_name="__main__")
"""


class Truss(Server):
    """Truss's own server (FastAPI on uvicorn) run from its Docker build context, without Docker.

    The truss is a thin ``model/model.py`` around Model; ``predict_concurrency`` is 4, the
    runtime's default. Its server requirements go into a venv of their own.
    """

    name = "truss"
    start_timeout = 60.0
    quiet_stdout = True  # one JSON log line per request otherwise fills the disk, not the benchmark

    health_path = "/v1/models/model"
    predict_path = "/v1/models/model:predict"

    def command(self):
        tool = venv(self.cache, "truss-venv", "truss")
        truss_dir = self.cache / "truss-app"
        (truss_dir / "model").mkdir(parents=True, exist_ok=True)
        (truss_dir / "model" / "model.py").write_text(TRUSS_MODEL.format(model_file=str(self.app_dir / "model.py")))
        (truss_dir / "config.yaml").write_text("model_name: hello\npython_version: py311\nruntime:\n  predict_concurrency: 4\n")
        build = self.cache / "truss-build"
        shutil.rmtree(build, ignore_errors=True)
        prepare = "import sys, truss; from pathlib import Path; truss.load(sys.argv[1]).docker_build_setup(Path(sys.argv[2]))"
        subprocess.run([str(tool / "python"), "-c", prepare, str(truss_dir), str(build)], check=True)
        # Lay the files out as the Dockerfile does in /app: server/*, model/, config.yaml.
        serve = self.cache / "truss-serve"
        shutil.rmtree(serve, ignore_errors=True)
        shutil.copytree(build / "server", serve)
        shutil.copytree(build / "model", serve / "model")
        shutil.copy(build / "config.yaml", serve / "config.yaml")
        (serve / "launch.py").write_text(TRUSS_LAUNCHER)
        server_bin = venv(self.cache, "truss-server-venv", "-r", str(build / "requirements.txt"), "-c", str(build / "constraints.txt"))
        return [str(server_bin / "python"), "launch.py"], {"INFERENCE_SERVER_PORT": str(self.port)}, serve

    def version(self) -> str:
        return "truss " + _pip_version(self.cache / "truss-venv" / "bin", "truss")


PEERS = {"runtime": Runtime, "raw": RawAsgi, "cog": Cog, "truss": Truss}
