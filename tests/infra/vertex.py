"""Google Cloud for the vertex provider's tests: the Vertex AI emulator
(tests/emulators/vertex), which runs deployed models' images on the session's private dockerd
and pulls them from the private registry standing in for Artifact Registry.

Fixtures:

- ``vertex_emulator`` (session, root: it runs containers): ``VertexEmulator``; ``url``,
  ``faults(**spec)``, ``reset()``, ``calls()``, ``log()``.
- ``vertex_env`` (per test): the emulator reset, Application Default Credentials pointed at it
  (GOOGLE_APPLICATION_CREDENTIALS: a service account key file whose ``token_uri`` is the
  emulator's ``/token``; NO_GCE_CHECK; an empty gcloud config) and
  DOCKER_HOST at the private engine; yields ``VertexEnv`` (``env`` for child processes,
  ``target`` options pointing a vertex target at the emulator, ``registry``, ``emulator``).

Outside pytest (benchmarks): ``running_gcp_stack(tmp)`` starts the same components.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.containers import DockerEngine, Registry
from tests.infra.policy import require_module, require_root
from tests.infra.procs import new_workdir, start_process, stop_process, tail

REPO = Path(__file__).resolve().parents[2]
PROJECT = "mlsv-test-project"
REGION = "us-central1"


def _http(url: str, data: Any = None, timeout: float = 120) -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


@dataclass
class VertexEmulator:
    url: str
    pid: int
    log_path: Path
    label: str

    def faults(self, **spec: Any) -> dict:
        """Set faults (errors, quotas, health_seconds, operation_seconds: see
        tests/emulators/vertex/faults.py)."""
        return _http(f"{self.url}/_emulator/faults", spec)

    def reset(self) -> None:
        _http(f"{self.url}/_emulator/reset", {})

    def calls(self) -> list[dict]:
        """Every method received since the last reset: ``{"method", "name", "code"}``."""
        return _http(f"{self.url}/_emulator/calls")

    def log(self) -> str:
        return tail(self.log_path, 200)


@dataclass
class VertexEnv:
    emulator: VertexEmulator
    registry: Registry
    dockerd: DockerEngine
    env: dict[str, str]
    project: str = PROJECT
    region: str = REGION

    @property
    def target(self) -> dict:
        """Options that point a vertex target at the emulator."""
        return {"project": self.project, "region": self.region,
                "api_endpoint": self.emulator.url, "logging_endpoint": self.emulator.url}

    def faults(self, **spec: Any) -> dict:
        return self.emulator.faults(**spec)

    def calls(self) -> list[dict]:
        return self.emulator.calls()


@pytest.fixture(scope="session")
def vertex_emulator(dockerd: DockerEngine) -> Iterator[VertexEmulator]:
    """The Vertex AI emulator in a child process, running replicas on ``dockerd`` (root: it
    joins containers' network namespaces)."""
    require_root("vertex_emulator")
    require_module("vertex_emulator", "docker", "docker")
    require_module("vertex_emulator", "google.cloud.aiplatform_v1", "google-cloud-aiplatform")
    workdir = new_workdir("vertex")
    port_file = workdir / "port"
    label = f"mlsv-vx-{os.getpid()}"
    argv = [sys.executable, "-m", "tests.emulators.vertex", "--port", "0", "--port-file",
            str(port_file), "--docker-host", dockerd.host, "--project", PROJECT,
            "--label", label]
    proc = None
    try:
        proc = start_process(argv, workdir / "emulator.log", port_file.exists,
                             "Vertex AI emulator", timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        deadline = time.monotonic() + 10
        while not _ok(f"{url}/_emulator/health") and time.monotonic() < deadline:
            time.sleep(0.05)
        yield VertexEmulator(url, proc.pid, workdir / "emulator.log", label)
    finally:
        if proc is not None:
            stop_process(proc, timeout=60)    # it removes its containers on the way out
        shutil.rmtree(workdir, ignore_errors=True)


def gcp_environment(emulator: VertexEmulator, dockerd: DockerEngine, home: Path) -> dict[str, str]:
    """Application Default Credentials for the emulator: a service account key file (what
    GOOGLE_APPLICATION_CREDENTIALS names in production) with a fresh RSA key and the
    emulator's ``/token`` as its ``token_uri``, so google-auth signs a JWT and exchanges it
    there (an ``authorized_user`` file would not do: google-auth always sends those to
    oauth2.googleapis.com); no metadata server probe; a gcloud config directory of its own."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    home.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    adc = home / "adc.json"
    adc.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "mlsv-test-key",
        "private_key": pem, "client_email": f"mlserve@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1000000001", "token_uri": f"{emulator.url}/token"}))
    (home / "gcloud").mkdir(exist_ok=True)
    return {"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "True",
            "CLOUDSDK_CONFIG": str(home / "gcloud"), **dockerd.env()}


@pytest.fixture
def vertex_env(vertex_emulator: VertexEmulator, registry: Registry, dockerd: DockerEngine,
               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[VertexEnv]:
    """A fresh emulator for one test, with the environment set through ``monkeypatch``."""
    vertex_emulator.reset()
    env = gcp_environment(vertex_emulator, dockerd, tmp_path / "gcp")
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yield VertexEnv(vertex_emulator, registry, dockerd, env)
    finally:
        vertex_emulator.reset()


@dataclass
class GcpStack:
    """What ``running_gcp_stack`` started (for benchmarks outside pytest)."""

    dockerd: DockerEngine
    registry: Registry
    base_image: Any
    emulator: VertexEmulator
    env: dict[str, str]

    @property
    def target(self) -> dict:
        return VertexEnv(self.emulator, self.registry, self.dockerd, self.env).target


@contextlib.contextmanager
def running_gcp_stack(tmp: Path) -> Iterator[GcpStack]:
    """The session fixtures behind ``vertex_env`` as one context manager, with
    ``os.environ`` pointed at them until it exits. Root, like the fixtures."""
    from tests.infra import containers

    def started(fixture, *args):
        return contextlib.contextmanager(fixture.__wrapped__)(*args)

    saved = dict(os.environ)
    with started(containers.dockerd) as engine, started(containers.registry) as registry, \
            started(vertex_emulator, engine) as emulator:
        base = containers.base_image.__wrapped__(engine)
        env = gcp_environment(emulator, engine, tmp)
        os.environ.update(env)
        try:
            yield GcpStack(engine, registry, base, emulator, env)
        finally:
            os.environ.clear()
            os.environ.update(saved)
