"""Start the real runtime (``python -m mlserve.runtime``) as a subprocess and talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 10.0):
    """One request on a fresh connection; returns (status, parsed JSON or raw text, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return response.status, parsed, dict(response.getheaders())
    finally:
        conn.close()


class Runtime:
    """A runtime process; logs go to files (a full pipe would block the server)."""

    def __init__(self, tmp: Path, entrypoint: str = "models.py:Echo", *args: str, env: dict | None = None,
                 port: int | None = None, app_dir: Path = MODELS, pythonpath: Path = ROOT) -> None:
        self.port = port or free_port()
        self.stdout_path = tmp / f"runtime-{self.port}-{time.monotonic_ns()}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        cmd = [sys.executable, "-m", "mlserve.runtime", "--app-dir", str(app_dir), "--entrypoint", entrypoint,
               "--host", "127.0.0.1", *args]
        if "--port" not in args and not (env and {"AIP_HTTP_PORT", "MLSERVE_PORT"} & env.keys()):
            cmd += ["--port", str(self.port)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVE_", "AIP_"))}
        full_env.update({"PYTHONPATH": str(pythonpath), "PYTHONUNBUFFERED": "1", **(env or {})})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=str(tmp))

    # -- observing -----------------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def request(self, method: str, path: str, body=None, **kw):
        return request(kw.pop("port", self.port), method, path, body, **kw)

    def wait_ready(self, timeout: float = 15.0, port: int | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode}:\n{self.stderr}")
            try:
                status, body, _ = self.request("GET", "/health", port=port or self.port, timeout=2)
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"runtime not ready after {timeout}s:\n{self.stderr}")

    def wait_log(self, text: str, timeout: float = 10.0, stream: str = "stderr") -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = getattr(self, stream)
            if text in content:
                return content
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in {stream} after {timeout}s:\n{getattr(self, stream)}")

    # -- stopping ------------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
