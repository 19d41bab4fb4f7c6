"""A deployment's instances: its environment's image run on the real Docker engine the way Azure
ML runs a custom container on a managed online endpoint ("Use a custom container to deploy a
model to an online endpoint"; "Troubleshooting online endpoints deployment"):

- the image's own ENTRYPOINT and CMD (no arguments added), the deployment's
  ``environmentVariables`` plus what Azure sets (``AZUREML_MODEL_DIR``, ``AML_APP_ROOT``...);
- the environment's ``inferenceConfig`` names the liveness, readiness and scoring routes (path
  and port); an instance takes traffic once its liveness route and then its readiness route
  answer 200, within the deployment's probe settings;
- ``getLogs`` reads the container's output (``containerType: InferenceServer``).

Containers run with ``--network none`` (a network namespace each, only loopback): the emulator
reaches a route's port by joining the namespace (``tests.emulators.netns``, as the SageMaker
emulator does); a server that listens on 127.0.0.1 only fails the probes with that reason,
as it would on Azure, which probes the container's own address.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import remove_labelled
from ..netns import NetnsHTTPConnection, listeners, split_reference

#: What Azure ML sets in every inference container (documented in "Online endpoints: custom
#: containers"); the model directory is empty here (no model asset is mounted).
AZURE_ENV = {"AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models", "AML_APP_ROOT":
             "/var/azureml-app", "AZUREML_ENTRY_SCRIPT": "", "WORKER_COUNT": "1"}


@dataclass
class Route:
    path: str
    port: int


@dataclass
class Instance:
    id: str
    container: Any
    pid: int

    def request(self, method: str, route: Route, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 60.0) -> tuple[int, dict, bytes]:
        conn = NetnsHTTPConnection(self.pid, route.port, timeout=timeout)
        try:
            conn.request(method, route.path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()

    def logs(self, tail: int) -> str:
        try:
            return self.container.logs(tail=tail or "all").decode(errors="replace")
        except Exception:  # removed meanwhile
            return ""


class Docker:
    def __init__(self, docker_host: str, label: str) -> None:
        import docker

        self.client = docker.DockerClient(base_url=docker_host, timeout=120)
        self.label = label

    def start(self, endpoint: str, deployment: str, image: str,
              environment: dict[str, str]) -> Instance:
        """Pull ``image`` from its registry (Azure pulls from the container registry: a local
        copy is not enough), then run it."""
        repository, tag = split_reference(image)
        self.client.images.pull(repository, tag=tag)
        instance_id = secrets.token_hex(6)
        container = self.client.containers.run(
            image, detach=True, network_mode="none", environment={**AZURE_ENV, **environment},
            name=f"{self.label}-{endpoint[:30]}-{deployment[:20]}-{instance_id}",
            labels={self.label: "1"})
        container.reload()
        return Instance(instance_id, container, container.attrs["State"]["Pid"])

    def wait_ready(self, instance: Instance, liveness: Route, readiness: Route, timeout: float,
                   cancelled: Callable[[], bool] = lambda: False) -> str | None:
        """None once the liveness then the readiness route answer 200, else why not."""
        deadline = time.monotonic() + timeout
        last = f"no answer on port {liveness.port}"
        while time.monotonic() < deadline and not cancelled():
            instance.container.reload()
            state = instance.container.attrs["State"]
            if state["Status"] != "running":
                return (f"User container has crashed or terminated: exit code "
                        f"{state.get('ExitCode')}")
            bound = listeners(instance.pid, readiness.port)
            if bound and not bound - {"127.0.0.1", "::1"}:
                last = (f"the server listens on 127.0.0.1 only (Azure probes the container's "
                        f"own address on port {readiness.port})")
            elif bound:
                try:
                    live = instance.request("GET", liveness, timeout=2)[0]
                    ready = instance.request("GET", readiness, timeout=2)[0] if live == 200 else 0
                    if ready == 200:
                        return None
                    last = (f"Liveness probe failed: {liveness.path} answered {live}" if live != 200
                            else f"Readiness probe failed: {readiness.path} answered {ready}")
                except OSError as exc:
                    last = f"probe failed: {exc}"
            time.sleep(0.1)
        return last

    def stop(self, instance: Instance) -> None:
        try:
            instance.container.remove(force=True)
        except Exception:  # already gone
            pass

    def remove_all(self) -> None:
        remove_labelled(self.client, self.label)
