"""The instances behind a production variant: the model's image run on the real Docker engine
the way SageMaker runs it (the "Use your own inference code with hosting services" contract):

- ``docker run IMAGE serve``: the image's ENTRYPOINT with the argument ``serve``, the model's
  ``Environment``, no published port; the container answers on port 8080 of its own address;
- ``GET /ping`` must answer 200 within the startup health check timeout before the instance
  takes traffic; ``POST /invocations`` gets each InvokeEndpoint's body and content type;
- the container's stdout and stderr go to CloudWatch Logs, group
  ``/aws/sagemaker/Endpoints/NAME``, stream ``VARIANT/INSTANCE-ID``.

Containers run with ``--network none``: each has a network namespace of its own with only a
loopback interface, so any number of them can listen on 8080 and nothing is published on the
host. The emulator reaches a container by opening its socket from a thread that has joined the
container's network namespace (``setns``; needs root, as dockerd does). A server bound to
127.0.0.1 only would not answer SageMaker, which reaches the container on its own address, so
such a listener fails the ping check with that reason.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import remove_labelled
from ..netns import NetnsHTTPConnection, listeners, split_reference


@dataclass
class Instance:
    """One "ML instance": a container of the variant's model."""

    id: str
    variant: str
    container: Any             # docker SDK Container
    pid: int
    log_stream: str
    shipper: threading.Thread | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    inflight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 60.0) -> tuple[int, dict, bytes]:
        conn = NetnsHTTPConnection(self.pid, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()

    def lease(self, taken: bool) -> None:
        """Count a routed request in (``taken``) or out: an instance is removed only once the
        requests routed to it have been answered."""
        with self._lock:
            self.inflight += 1 if taken else -1


class Docker:
    """The engine the instances run on (``docker_host`` is DOCKER_HOST) and their log shipping
    to CloudWatch Logs (``logs`` is a boto3 ``logs`` client, e.g. against moto)."""

    def __init__(self, docker_host: str, logs_client: Any, label: str) -> None:
        import docker

        self.client = docker.DockerClient(base_url=docker_host, timeout=120)
        self.logs = logs_client
        self.label = label          # every container carries it: reset removes by it
        self._groups: set[str] = set()
        self._lock = threading.Lock()

    def pull(self, image: str) -> None:
        """Pull ``image`` from its registry, as SageMaker pulls from ECR (a local copy is not
        enough: the image must have been pushed)."""
        repository, tag = split_reference(image)
        self.client.images.pull(repository, tag=tag)

    def start(self, endpoint: str, variant: str, image: str, environment: dict[str, str],
              memory_mb: int | None = None) -> Instance:
        instance_id = "i-" + secrets.token_hex(8)
        kwargs: dict[str, Any] = {}
        if memory_mb:
            kwargs["mem_limit"] = f"{memory_mb}m"
        container = self.client.containers.run(
            image, ["serve"], detach=True, network_mode="none", environment=environment,
            name=f"{self.label}-{endpoint[:40]}-{instance_id}",
            labels={self.label: "1", f"{self.label}.endpoint": endpoint,
                    f"{self.label}.variant": variant}, **kwargs)
        container.reload()
        instance = Instance(instance_id, variant, container, container.attrs["State"]["Pid"],
                            f"{variant}/{instance_id}")
        instance.shipper = threading.Thread(target=self._ship_logs, args=(endpoint, instance),
                                            daemon=True)
        instance.shipper.start()
        return instance

    def wait_healthy(self, instance: Instance, timeout: float,
                     cancelled: Callable[[], bool] = lambda: False) -> str | None:
        """None once ``GET /ping`` answers 200 (on a non-loopback address), else the reason."""
        deadline = time.monotonic() + timeout
        last = "no answer on port 8080"
        while time.monotonic() < deadline and not cancelled():
            instance.container.reload()
            state = instance.container.attrs["State"]
            if state["Status"] != "running":
                return f"the container exited with code {state.get('ExitCode')}"
            bound = listeners(instance.pid)
            if bound and not bound - {"127.0.0.1", "::1"}:
                last = "the server listens on 127.0.0.1 only (SageMaker connects to the " \
                       "container's own address on port 8080)"
            elif bound:
                try:
                    status, _, _ = instance.request("GET", "/ping", timeout=2)
                    if status == 200:
                        return None
                    last = f"/ping answered {status}"
                except OSError as exc:
                    last = f"/ping failed: {exc}"
            time.sleep(0.1)
        return last

    def stop(self, instance: Instance, drain_seconds: float = 0.0) -> None:
        """Remove the instance's container, after its requests in flight have been answered
        (up to ``drain_seconds``: traffic has already moved elsewhere)."""
        deadline = time.monotonic() + drain_seconds
        while instance.inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        instance.stopped.set()
        try:
            instance.container.reload()
            if instance.container.status != "running" and instance.shipper:
                instance.shipper.join(5)        # an exited container's last words are read
            instance.container.remove(force=True)
        except Exception:  # already gone
            pass
        if instance.shipper:
            instance.shipper.join(5)            # ...and sent to CloudWatch Logs

    def remove_all(self) -> None:
        remove_labelled(self.client, self.label)

    # -- CloudWatch Logs -------------------------------------------------------------------

    def _ensure_stream(self, group: str, stream: str) -> None:
        with self._lock:
            if group not in self._groups:
                try:
                    self.logs.create_log_group(logGroupName=group)
                except self.logs.exceptions.ResourceAlreadyExistsException:
                    pass
                self._groups.add(group)
        try:
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass

    def forget_groups(self) -> None:
        with self._lock:
            self._groups.clear()

    def _ship_logs(self, endpoint: str, instance: Instance) -> None:
        """Follow the container's output and send it line by line (batched every 0.2 s)."""
        group = f"/aws/sagemaker/Endpoints/{endpoint}"
        try:
            self._ensure_stream(group, instance.log_stream)
        except Exception:
            return
        pending: list[dict] = []
        flushed = time.monotonic()
        buffer = b""
        lock = threading.Lock()

        def flush() -> None:
            nonlocal pending, flushed
            with lock:
                batch, pending = pending, []
                flushed = time.monotonic()
            if batch:
                try:
                    self.logs.put_log_events(logGroupName=group, logStreamName=instance.log_stream,
                                             logEvents=batch)
                except Exception:
                    pass

        done = threading.Event()

        def ticker() -> None:
            while not done.wait(0.2):
                flush()
            flush()

        tick = threading.Thread(target=ticker, daemon=True)
        tick.start()
        try:
            for chunk in instance.container.logs(stream=True, follow=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                now = int(time.time() * 1000)
                with lock:
                    pending.extend({"timestamp": now, "message": line.decode(errors="replace")}
                                   for line in lines if line.strip())
        except Exception:
            pass
        if buffer.strip():
            with lock:
                pending.append({"timestamp": int(time.time() * 1000),
                                "message": buffer.decode(errors="replace")})
        done.set()
        tick.join(5)
