"""The replicas of a deployed model: the model's image run on the real Docker engine under
Vertex AI's custom-container contract ("Custom container requirements for inference"):

- the image's ENTRYPOINT/CMD, or the container spec's ``command``/``args``; the spec's ``env``
  plus Vertex's ``AIP_*`` variables: ``AIP_HTTP_PORT`` (the spec's first port, 8080 by
  default), ``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE`` (the spec's routes, else
  ``/v1/endpoints/ENDPOINT/deployedModels/ID`` and the same with ``:predict``), ``AIP_MODE``,
  ``AIP_DEPLOYED_MODEL_ID``, ``AIP_ENDPOINT_ID``, ``AIP_MACHINE_TYPE``, ``AIP_PROJECT_NUMBER``;
- Vertex sends ``GET`` to the health route until it answers 200 before the deployed model is
  ready, and each predict request to the predict route of one replica;
- the container's output goes to Cloud Logging (here: kept per endpoint for ``entries:list``).

Containers run with ``--network none`` and are reached inside their own network namespace
(``tests.emulators.sagemaker.fleet``'s ``setns`` connection; root, as dockerd is): a server bound
to 127.0.0.1 only would not answer Vertex, and fails the health check saying so.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from tests.emulators import remove_labelled
from tests.emulators.netns import NetnsHTTPConnection, listeners, split_reference

DEFAULT_PORT = 8080


@dataclass
class Replica:
    id: str
    container: Any                 # docker SDK Container
    pid: int
    port: int
    health_route: str
    predict_route: str

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
        conn = NetnsHTTPConnection(self.pid, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()


def routes(spec: dict, endpoint_id: str, deployed_id: str) -> tuple[int, str, str]:
    """(port, health route, predict route) Vertex gives a container with spec ``spec``."""
    ports = spec.get("ports") or []
    port = int(ports[0].get("containerPort") or DEFAULT_PORT) if ports else DEFAULT_PORT
    base = f"/v1/endpoints/{endpoint_id}/deployedModels/{deployed_id}"
    return port, spec.get("healthRoute") or base, spec.get("predictRoute") or f"{base}:predict"


class Engine:
    """The Docker engine replicas run on, and the output they wrote (per endpoint)."""

    def __init__(self, docker_host: str, label: str) -> None:
        import docker

        self.client = docker.DockerClient(base_url=docker_host, timeout=120)
        self.label = label
        self.lock = threading.Lock()
        self.logs: dict[str, list[tuple[float, str]]] = {}   # endpoint id -> (time, line)

    def pull(self, image: str) -> None:
        repository, tag = split_reference(image)
        self.client.images.pull(repository, tag=tag)

    def start(self, image: str, spec: dict, env: dict[str, str], endpoint_id: str,
              deployed_id: str) -> Replica:
        port, health, predict = routes(spec, endpoint_id, deployed_id)
        environment = {e["name"]: e.get("value", "") for e in spec.get("env") or []}
        environment.update(env, AIP_HTTP_PORT=str(port), AIP_HEALTH_ROUTE=health,
                           AIP_PREDICT_ROUTE=predict, AIP_MODE="PREDICTION",
                           AIP_MODE_VERSION="1.0.0", AIP_DEPLOYED_MODEL_ID=deployed_id,
                           AIP_ENDPOINT_ID=endpoint_id)
        kwargs: dict[str, Any] = {}
        if spec.get("command"):
            kwargs["entrypoint"] = spec["command"]
        replica_id = "r" + secrets.token_hex(6)
        container = self.client.containers.run(
            image, spec.get("args") or None, detach=True, network_mode="none",
            environment=environment, name=f"{self.label}-{endpoint_id[:30]}-{replica_id}",
            labels={self.label: "1", f"{self.label}.endpoint": endpoint_id}, **kwargs)
        container.reload()
        return Replica(replica_id, container, container.attrs["State"]["Pid"], port, health,
                       predict)

    def wait_healthy(self, replica: Replica, timeout: float,
                     cancelled: Callable[[], bool] = lambda: False) -> str | None:
        """None once the health route answers 200 on a non-loopback listener, else why not."""
        deadline = time.monotonic() + timeout
        last = f"no answer on port {replica.port}"
        while time.monotonic() < deadline and not cancelled():
            replica.container.reload()
            state = replica.container.attrs["State"]
            if state["Status"] != "running":
                return f"the container exited with code {state.get('ExitCode')}"
            bound = listeners(replica.pid, replica.port)
            if bound and not bound - {"127.0.0.1", "::1"}:
                last = f"the server listens on 127.0.0.1 only (Vertex connects to the " \
                       f"container's own address on port {replica.port})"
            elif bound:
                try:
                    status, _ = replica.request("GET", replica.health_route, timeout=2)
                    if status == 200:
                        return None
                    last = f"{replica.health_route} answered {status}"
                except OSError as exc:
                    last = f"{replica.health_route} failed: {exc}"
            time.sleep(0.1)
        return last

    def stop(self, replica: Replica, endpoint_id: str) -> None:
        """Keep the replica's output for Cloud Logging, then remove its container."""
        try:
            raw = replica.container.logs(timestamps=True)
            self._keep(endpoint_id, raw)
        except Exception:  # already gone
            pass
        try:
            replica.container.remove(force=True)
        except Exception:
            pass

    def _keep(self, endpoint_id: str, raw: bytes) -> None:
        with self.lock:
            kept = self.logs.setdefault(endpoint_id, [])
            kept.extend(_lines(raw))

    def entries(self, endpoint_id: str, live: list[Replica]) -> list[tuple[float, str]]:
        """Every line the endpoint's replicas wrote, oldest first (live ones read now)."""
        with self.lock:
            found = list(self.logs.get(endpoint_id, []))
        for replica in live:
            try:
                found.extend(_lines(replica.container.logs(timestamps=True)))
            except Exception:
                pass
        return sorted(found)

    def remove_all(self) -> None:
        with self.lock:
            self.logs.clear()
        remove_labelled(self.client, self.label)


def _lines(raw: bytes) -> list[tuple[float, str]]:
    from datetime import datetime
    out = []
    for line in raw.decode(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        if not text.strip():
            continue
        try:
            when = datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
        except ValueError:
            when = time.time()
        out.append((when, text))
    return out
