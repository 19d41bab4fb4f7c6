"""Azure for the azureml provider's tests: the Azure ML emulator (tests/emulators/azureml) over
HTTPS with a self-signed certificate, running deployments' images on the session's private
dockerd and pulling them from the private registry standing in for Azure Container Registry.

Fixtures:

- ``azureml_emulator`` (session, root: it runs containers): ``AzureMLEmulator``; ``url``,
  ``ca_bundle``, ``identity_header``, ``faults(**spec)``, ``reset()``, ``calls()``, ``log()``.
- ``azureml_env`` (module): the emulator reset, the process environment pointed at it through
  documented variables only (``azure_environment``), DOCKER_HOST at the private engine; yields
  ``AzureEnv`` (``env`` for child processes, ``registry``, ``emulator``, ``faults``, ``calls``,
  ``score(endpoint, payload, deployment=None)``). Module-scoped so one module's tests share
  one deployed endpoint; tests that need a clean slate call ``reset()``.

Outside pytest (benchmarks): ``running_azure_stack(tmp)`` starts the same components.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import ssl
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
from tests.infra.procs import new_workdir, start_process, stop_process, tail

REPO = Path(__file__).resolve().parents[2]
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000a1"
RESOURCE_GROUP = "mlsv-rg"
WORKSPACE = "mlsv-ws"


@dataclass
class AzureMLEmulator:
    url: str
    pid: int
    log_path: Path
    ca_bundle: Path
    identity_header: str
    label: str

    def _http(self, path: str, data: Any = None, timeout: float = 60) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=body,
                                         method="POST" if body is not None else "GET",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            return json.loads(reply.read() or b"null")

    def faults(self, **spec: Any) -> dict:
        """Set faults (errors, quotas, startup_seconds, transition_seconds; see
        tests/emulators/azureml/faults.py)."""
        return self._http("/_emulator/faults", spec)

    def reset(self) -> None:
        self._http("/_emulator/reset", {}, timeout=120)

    def calls(self) -> list[dict]:
        """Every call received since the last reset: ``{"operation", "name", "code"}``."""
        return self._http("/_emulator/calls")

    def log(self) -> str:
        return tail(self.log_path, 200)


def azure_environment(emulator: AzureMLEmulator, dockerd: DockerEngine) -> dict[str, str]:
    """What points azure-ai-ml and azure-identity at the emulator, through their documented
    variables: ``ARM_CLOUD_METADATA_URL`` (the cloud's resource manager URL, as for Azure Stack
    or sovereign clouds), ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER`` (an App Service managed
    identity: the default credential chain's ManagedIdentityCredential) and the emulator's
    certificate as the CA bundle of requests."""
    return {
        "ARM_CLOUD_METADATA_URL": f"{emulator.url}/metadata/endpoints?api-version=2019-05-01",
        "IDENTITY_ENDPOINT": f"{emulator.url}/msi/token",
        "IDENTITY_HEADER": emulator.identity_header,
        "REQUESTS_CA_BUNDLE": str(emulator.ca_bundle),
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
        **dockerd.env(),
    }


#: Variables that would send the default chain elsewhere (a developer's own Azure login).
FOREIGN = ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_USERNAME",
           "AZURE_PASSWORD", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
           "MSI_ENDPOINT", "MSI_SECRET", "AZUREML_CURRENT_CLOUD", "AZURE_TOKEN_CREDENTIALS",
           "AZUREML_DEV_URL_MFE")


@pytest.fixture(scope="session")
def azureml_emulator(dockerd: DockerEngine, registry: Registry) -> Iterator[AzureMLEmulator]:
    """The Azure ML emulator in a child process, running deployments on ``dockerd`` (root: it
    joins containers' network namespaces)."""
    require_root("azureml_emulator")
    require_module("azureml_emulator", "docker", "docker")
    require_module("azureml_emulator", "cryptography", "cryptography")
    workdir = new_workdir("azureml")
    port_file = workdir / "port"
    label = f"mlsv-aml-{os.getpid()}"
    header = secrets.token_hex(16)
    argv = [sys.executable, "-m", "tests.emulators.azureml", "--port", "0",
            "--port-file", str(port_file), "--cert-dir", str(workdir),
            "--identity-header", header, "--docker-host", dockerd.host, "--label", label]
    proc = None
    try:
        proc = start_process(argv, workdir / "emulator.log", port_file.exists,
                             "Azure ML emulator", timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        emulator = AzureMLEmulator(f"https://127.0.0.1:{port_file.read_text().strip()}",
                                   proc.pid, workdir / "emulator.log", workdir / "cert.pem",
                                   header, label)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                emulator._http("/_emulator/health", timeout=2)
                break
            time.sleep(0.05)
        yield emulator
    finally:
        if proc is not None:
            stop_process(proc, timeout=60)    # it removes its containers on the way out
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class AzureEnv:
    emulator: AzureMLEmulator
    registry: Registry
    dockerd: DockerEngine
    env: dict[str, str]
    subscription: str = SUBSCRIPTION
    resource_group: str = RESOURCE_GROUP
    workspace: str = WORKSPACE
    _scoring: dict = field(default_factory=dict, repr=False)

    def faults(self, **spec: Any) -> dict:
        return self.emulator.faults(**spec)

    def calls(self) -> list[dict]:
        return self.emulator.calls()

    def reset(self) -> None:
        self.emulator.reset()
        self._scoring.clear()

    def score(self, endpoint: str, payload: Any, deployment: str | None = None) -> Any:
        """POST the endpoint's scoring URI with its key, as a client of the endpoint would (the
        key and URI read through ARM once per endpoint: Get and List Keys)."""
        if endpoint not in self._scoring:
            found = self.arm("GET", f"onlineEndpoints/{endpoint}")
            key = self.arm("POST", f"onlineEndpoints/{endpoint}/listKeys", {})["primaryKey"]
            self._scoring[endpoint] = (found["properties"]["scoringUri"], key)
        uri, key = self._scoring[endpoint]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if deployment:
            headers["azureml-model-deployment"] = deployment
        request = urllib.request.Request(uri, json.dumps({"input": payload}).encode(), headers)
        context = ssl.create_default_context(cafile=str(self.emulator.ca_bundle))
        with urllib.request.urlopen(request, timeout=60, context=context) as reply:
            return json.loads(reply.read())["output"]

    def _arm(self, method: str, path: str, data: Any = None) -> Any:
        """ARM with a token from the managed identity endpoint (the emulator's one token)."""
        context = ssl.create_default_context(cafile=str(self.emulator.ca_bundle))
        token_request = urllib.request.Request(
            f"{self.emulator.url}/msi/token?resource=x&api-version=2019-08-01",
            headers={"X-IDENTITY-HEADER": self.emulator.identity_header})
        with urllib.request.urlopen(token_request, timeout=10, context=context) as reply:
            token = json.loads(reply.read())["access_token"]
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(f"{self.emulator.url}{path}?api-version=2024-04-01",
                                         body, {"Authorization": f"Bearer {token}",
                                                "Content-Type": "application/json"},
                                         method=method)
        with urllib.request.urlopen(request, timeout=30, context=context) as reply:
            return json.loads(reply.read() or b"null")

    def arm(self, method: str, path: str, data: Any = None) -> Any:
        """ARM under the workspace: ``arm("GET", "onlineEndpoints")``."""
        scope = (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/"
                 f"providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}")
        return self._arm(method, f"{scope}/{path}", data)


def _set_environment(env: dict[str, str], setenv, delenv) -> None:
    for name in FOREIGN:
        delenv(name)
    for name, value in env.items():
        setenv(name, value)


@pytest.fixture(scope="module")
def azureml_env(azureml_emulator: AzureMLEmulator, registry: Registry,
                dockerd: DockerEngine) -> Iterator[AzureEnv]:
    """The emulator, reset, and the environment pointed at it for one test module."""
    azureml_emulator.reset()
    env = azure_environment(azureml_emulator, dockerd)
    cloud = os.environ.get("AZUREML_CURRENT_CLOUD")
    with pytest.MonkeyPatch.context() as patch:
        _set_environment(env, patch.setenv, lambda n: patch.delenv(n, raising=False))
        try:
            yield AzureEnv(azureml_emulator, registry, dockerd, env)
        finally:
            azureml_emulator.reset()
    # azure-ai-ml records the cloud it resolved in os.environ (AZUREML_CURRENT_CLOUD): later
    # tests' processes must not inherit the emulator's cloud
    if cloud is None:
        os.environ.pop("AZUREML_CURRENT_CLOUD", None)
    else:
        os.environ["AZUREML_CURRENT_CLOUD"] = cloud


@dataclass
class AzureStack:
    dockerd: DockerEngine
    registry: Registry
    base_image: Any
    emulator: AzureMLEmulator
    env: dict[str, str]
    azure: AzureEnv


@contextlib.contextmanager
def running_azure_stack(tmp: Path) -> Iterator[AzureStack]:
    """The fixtures behind ``azureml_env`` as one context manager (private dockerd, registry,
    base image, the emulator), with ``os.environ`` pointed at them until it exits. Root."""
    from tests.infra import containers

    def started(fixture, *args):
        return contextlib.contextmanager(fixture.__wrapped__)(*args)

    saved = dict(os.environ)
    with started(containers.dockerd) as engine, started(containers.registry) as registry, \
            started(azureml_emulator, engine, registry) as emulator:
        base = containers.base_image.__wrapped__(engine)
        env = azure_environment(emulator, engine)
        _set_environment(env, os.environ.__setitem__, lambda n: os.environ.pop(n, None))
        try:
            yield AzureStack(engine, registry, base, emulator, env,
                             AzureEnv(emulator, registry, engine, env))
        finally:
            os.environ.clear()
            os.environ.update(saved)
