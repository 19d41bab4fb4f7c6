"""AWS for the sagemaker provider's tests: moto's server (IAM, ECR's API, S3, CloudWatch Logs,
CloudWatch, Application Auto Scaling) and the SageMaker emulator (tests/emulators/sagemaker),
which runs endpoint images on the session's private dockerd and pulls them from the private
registry standing in for ECR.

Fixtures:

- ``moto_server`` (session): ``MotoServer`` on 127.0.0.1:<free port>; ``url``, ``reset()``.
- ``sagemaker_emulator`` (session, root: it runs containers): ``SageMakerEmulator``; ``url``,
  ``faults(**spec)``, ``reset()``, ``calls()``, ``log_path``.
- ``sagemaker_env`` (per test): both reset, an execution role (``ROLE_ARN``, trusting
  sagemaker.amazonaws.com) created in moto, the process environment pointed at them through
  boto3's documented overrides (``AWS_ENDPOINT_URL`` for moto, ``AWS_ENDPOINT_URL_SAGEMAKER``
  and ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` for the emulator, test credentials, region
  us-east-1, no shared config files) and DOCKER_HOST at the private engine; yields
  ``SageMakerEnv`` (``env`` mapping for child processes, ``client(service)``, ``registry``,
  ``emulator``, ``moto``, ``faults(...)``, ``calls()``).

Outside pytest (benchmarks): ``running_aws_stack(tmp)`` starts the same components.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.infra.containers import DockerEngine, Registry
from tests.infra.policy import require_module, require_root
from tests.infra.procs import new_workdir, start_on_free_port, start_process, stop_process, tail

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"                 # moto's default account; the emulator uses it too
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/mlsv-sagemaker-execution"


def _http(url: str, data: Any = None, method: str | None = None, timeout: float = 30) -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method=method or ("POST" if body else "GET"),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        raw = reply.read()
    return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as reply:
        return reply.status == 200


@dataclass
class MotoServer:
    url: str
    pid: int
    log_path: Path

    def reset(self) -> None:
        _http(f"{self.url}/moto-api/reset", method="POST")


@dataclass
class SageMakerEmulator:
    url: str
    pid: int
    log_path: Path
    label: str               # every container it starts carries this label

    def faults(self, **spec: Any) -> dict:
        """Set faults (keys: errors, quotas, ping_fail, transition_seconds; see
        tests/emulators/sagemaker/faults.py)."""
        return _http(f"{self.url}/_emulator/faults", spec)

    def reset(self) -> None:
        _http(f"{self.url}/_emulator/reset", {}, timeout=120)

    def calls(self) -> list[dict]:
        """Every operation received since the last reset: ``{"operation", "name", "code"}``."""
        return _http(f"{self.url}/_emulator/calls")

    def log(self) -> str:
        return tail(self.log_path, 200)


@dataclass
class SageMakerEnv:
    emulator: SageMakerEmulator
    moto: MotoServer
    registry: Registry
    dockerd: DockerEngine
    env: dict[str, str]                   # also set in os.environ for the test's duration
    role_arn: str = ROLE_ARN
    region: str = REGION
    _clients: dict = field(default_factory=dict, repr=False)

    def client(self, service: str):
        """A boto3 client resolved exactly as mlserve's would be (from the environment)."""
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.session.Session().client(service)
        return self._clients[service]

    def faults(self, **spec: Any) -> dict:
        return self.emulator.faults(**spec)

    def calls(self) -> list[dict]:
        return self.emulator.calls()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto in server mode, in a child process (its own GIL: the emulator's log shipping and the
    command under test do not slow it down)."""
    require_module("moto_server", "moto.server", "moto[server]")
    workdir = new_workdir("moto")
    proc = None
    try:
        def start(port: int):
            # the workdir in argv lets tests.infra.cleanup find the server of a killed run
            argv = [sys.executable, "-c", "import sys; from moto.server import main; "
                    "main(sys.argv[2:])", str(workdir), "-H", "127.0.0.1", "-p", str(port)]
            return start_process(argv, workdir / "moto.log",
                                 lambda: _ok(f"http://127.0.0.1:{port}/moto-api/data.json"),
                                 "moto server", timeout=60,
                                 env={**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "false"})
        proc, port = start_on_free_port(start)
        yield MotoServer(f"http://127.0.0.1:{port}", proc.pid, workdir / "moto.log")
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def sagemaker_emulator(dockerd: DockerEngine, registry: Registry,
                       moto_server: MotoServer) -> Iterator[SageMakerEmulator]:
    """The SageMaker emulator in a child process, running instances on ``dockerd`` (root: it
    joins containers' network namespaces) and mapping ECR image URLs to ``registry``."""
    require_root("sagemaker_emulator")
    require_module("sagemaker_emulator", "docker", "docker")
    workdir = new_workdir("sagemaker")
    port_file = workdir / "port"
    label = f"mlsv-sm-{os.getpid()}"
    argv = [sys.executable, "-m", "tests.emulators.sagemaker", "--port", "0",
            "--port-file", str(port_file), "--docker-host", dockerd.host,
            "--aws-endpoint", moto_server.url, "--region", REGION,
            "--ecr-registry", registry.address, "--label", label]
    proc = None
    try:
        proc = start_process(argv, workdir / "emulator.log", port_file.exists,
                             "SageMaker emulator", timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        deadline = time.monotonic() + 10
        while not _ok(f"{url}/_emulator/health") and time.monotonic() < deadline:
            time.sleep(0.05)
        yield SageMakerEmulator(url, proc.pid, workdir / "emulator.log", label)
    finally:
        if proc is not None:
            stop_process(proc, timeout=60)    # it removes its containers on the way out
        shutil.rmtree(workdir, ignore_errors=True)


#: The trust policy SageMaker needs on an execution role (the emulator's CreateModel checks it).
SAGEMAKER_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


def create_execution_role(moto: MotoServer, name: str = ROLE_ARN.rsplit("/", 1)[-1]) -> str:
    """An IAM role in moto that SageMaker may assume; its ARN."""
    import boto3

    iam = boto3.client("iam", endpoint_url=moto.url, region_name=REGION,
                       aws_access_key_id="mlsvtestkey", aws_secret_access_key="mlsvtestsecret")
    return iam.create_role(RoleName=name,
                           AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST))["Role"]["Arn"]


def aws_environment(emulator: SageMakerEmulator, moto: MotoServer, dockerd: DockerEngine,
                    home: Path) -> dict[str, str]:
    """What points boto3 (and the docker SDK) at the local stand-ins: botocore's documented
    per-service endpoint variables (service id "SageMaker" -> AWS_ENDPOINT_URL_SAGEMAKER,
    "SageMaker Runtime" -> AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME), the global AWS_ENDPOINT_URL for
    the rest (moto), test credentials and no shared config or credentials files."""
    return {
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_ENDPOINT_URL_SAGEMAKER": emulator.url,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator.url,
        "AWS_ACCESS_KEY_ID": "mlsvtestkey",
        "AWS_SECRET_ACCESS_KEY": "mlsvtestsecret",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "aws-config-absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-absent"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **dockerd.env(),
    }


@pytest.fixture
def sagemaker_env(sagemaker_emulator: SageMakerEmulator, moto_server: MotoServer,
                  registry: Registry, dockerd: DockerEngine, monkeypatch: pytest.MonkeyPatch,
                  tmp_path: Path) -> Iterator[SageMakerEnv]:
    """Fresh AWS for one test (see the module docstring): emulator and moto reset before and
    after, the environment set through ``monkeypatch`` (and in ``.env`` for subprocesses)."""
    sagemaker_emulator.reset()
    moto_server.reset()
    create_execution_role(moto_server)
    env = aws_environment(sagemaker_emulator, moto_server, dockerd, tmp_path)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yield SageMakerEnv(sagemaker_emulator, moto_server, registry, dockerd, env)
    finally:
        sagemaker_emulator.reset()


@dataclass
class AwsStack:
    """What ``running_aws_stack`` started (for benchmarks and scripts outside pytest)."""

    dockerd: DockerEngine
    registry: Registry
    base_image: Any                 # tests.infra.containers.BaseImage
    moto: MotoServer
    emulator: SageMakerEmulator
    env: dict[str, str]


@contextlib.contextmanager
def running_aws_stack(tmp: Path) -> Iterator[AwsStack]:
    """The session fixtures behind ``sagemaker_env`` as one context manager (private dockerd,
    registry, base image, moto with the execution role, the emulator), with ``os.environ``
    pointed at them until it exits. Root, like the fixtures."""
    from tests.infra import containers

    def started(fixture, *args):
        return contextlib.contextmanager(fixture.__wrapped__)(*args)

    saved = dict(os.environ)
    with started(containers.dockerd) as engine, started(containers.registry) as registry, \
            started(moto_server) as moto, \
            started(sagemaker_emulator, engine, registry, moto) as emulator:
        base = containers.base_image.__wrapped__(engine)
        create_execution_role(moto)
        env = aws_environment(emulator, moto, engine, tmp)
        os.environ.update(env)
        try:
            yield AwsStack(engine, registry, base, moto, emulator, env)
        finally:
            os.environ.clear()
            os.environ.update(saved)
