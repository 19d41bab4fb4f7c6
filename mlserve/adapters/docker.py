"""The ``docker`` target: the release's image run as a container on a Docker engine.

Engine: the target's ``host``, else ``DOCKER_HOST``, else the local socket (the docker SDK's
``from_env``). Everything mlserve creates carries the labels ``org.mlserve.deployment`` (the
deployment identity, ``name.target``) and ``org.mlserve.release``; ``observe`` and ``delete``
find containers by those labels, never by the journal.

Image: ``IMAGE:RELEASE`` (the target's ``image`` repository, the model release id as the tag),
built from the rendered docker context (``mlserve build --format docker``) when the engine does
not have it yet; ``deploy --image REF`` runs an image built earlier instead.

Zero-downtime switch (one step, like the local target), with host networking (every container of
the deployment shares the engine host's network, so the runtime's SO_REUSEPORT handover works
across containers; both run as uid 10001, which SO_REUSEPORT requires):
prepare starts the new container with ``--check-port 0``: it serves only 127.0.0.1:Q (a port the
kernel picked, which its log names) and holds the public port bound but not listening; health and
smoke are checked on Q.
Activate sends the runtime SIGUSR1 from inside the container (it starts accepting on the
public port, new connections go to it), waits for ``activated on`` in its log, then marks the container active
(a file in its writable layer); finish stops the old container (SIGTERM: it drains) and removes
it. A container the engine restarts (restart policy) finds the mark and serves the public port at
once. A failed load or smoke removes the new container; the old one never stopped serving.
On the local engine the checks reach Q on this machine's loopback; on a remote engine (tcp://,
ssh://) they are sent from inside the new container through the engine's exec API
(``docker_probe``), so no port but the public one has to be reachable. ``status`` and
``predict`` use the public URL, ``http://ENGINE-HOST:PORT``.

Secrets are passed as the container's environment: whoever can ``docker inspect`` it reads
them (as anyone who can read /proc of a local release); they are never in the image.
"""

from __future__ import annotations

import os
import time
from typing import Iterator

from ..checks import (EXITED_WHILE_LOADING, http_json, load_headline, predict_call, run_smoke,
                      wait_healthy)
from ..errors import DeployError, ProviderError
from ..providers import info as provider_info
from ..vocab import DeployState
from .base import Adapter, Call, Context, Observed, ReleaseSpec, Resource
from .docker_probe import check_port_of, engine_is_local, exec_request
from .procs import LOG_TAIL, http_url, url_caller

LABEL_DEPLOYMENT = "org.mlserve.deployment"
LABEL_RELEASE = "org.mlserve.release"
ACTIVE_MARK = "/tmp/.mlserve-active"
#: The container's command: serve on the public port at once when marked active (a restart by
#: the engine), else through the check port and SIGUSR1 (a new release).
_LAUNCH = ('if [ -e {mark} ]; then exec python -m mlserve.runtime serve "$@"; '
           'else exec python -m mlserve.runtime serve --check-port "$MLSERVE_CHECK_PORT" "$@"; fi')
_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
          "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "": 1}


def memory_bytes(size: str) -> int:
    """Bytes of a Kubernetes-style size ("512Mi", "2Gi", "1G") for the container's limit."""
    digits = size.rstrip("KMGTi")
    return int(float(digits) * _UNITS[size[len(digits):]])


def engine(ctx: Context):
    """A pinged docker client for the target's engine (``mlserve.artifacts.image.engine``:
    MissingDependency without the extra, ProviderError naming the fix when it does not answer)."""
    from ..artifacts.image import engine as artifacts_engine
    return artifacts_engine(ctx.target.host)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _engine_base(ctx: Context) -> str:
    return ctx.target.host or os.environ.get("DOCKER_HOST") or "unix://"


def _public_url(ctx: Context) -> str:
    base = _engine_base(ctx)
    if engine_is_local(base):
        return http_url("127.0.0.1", ctx.target.port)
    host = base.split("://", 1)[1].rsplit("@", 1)[-1].split(":")[0].split("/")[0]
    return http_url(host, ctx.target.port)


def _containers(client, ctx: Context) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}={ctx.identity}"})


def _live_release(ctx: Context, url: str, found: list) -> str | None:
    """The release the public port's /health names: asked directly on the local engine, from
    inside a running container of the deployment on a remote one (its port may be closed to
    this machine)."""
    request, where = None, url
    if not engine_is_local(_engine_base(ctx)):
        running = [c for c in found if c.status == "running"]
        if not running:
            return None
        request, where = exec_request(running[0]), http_url("127.0.0.1", ctx.target.port)
    try:
        code, body = (request or http_json)("GET", where + "/health", timeout=2)
    except OSError:
        return None
    return body.get("release") if code == 200 and isinstance(body, dict) else None


def _tail(container, lines: int = LOG_TAIL) -> str:
    try:
        return container.logs(tail=lines).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - a container already gone has no log to show
        return "(the container's log is gone)"


class DockerAdapter(Adapter):
    name = "docker"

    def check(self, ctx: Context) -> None:
        engine(ctx).close()

    @staticmethod
    def check_image(ref: str) -> None:
        """``--image REF`` is an image reference, else InvalidInput (no engine asked)."""
        from .docker_image import check_ref
        check_ref(ref)

    def image_release(self, ctx: Context, ref: str) -> str | None:
        """The release id image ``ref`` carries (``deploy --image``), pulled if need be."""
        from .docker_image import release_of_image
        self.check_image(ref)
        client = engine(ctx)
        try:
            return release_of_image(client, ref)
        finally:
            client.close()

    def observe(self, ctx: Context) -> Observed:
        """This deployment's containers (by label) and which one serves: running, and of the
        release the public port's /health names. Read-only."""
        info, url = provider_info("docker"), _public_url(ctx)
        try:
            client = engine(ctx)
        except ProviderError as exc:
            return Observed(DeployState.UNREACHABLE, None, url, [], exc.message)
        try:
            found = _containers(client, ctx)
            live = _live_release(ctx, url, found)
        finally:
            client.close()
        resources = []
        for c in found:
            rel, state = c.labels.get(LABEL_RELEASE), info.state(c.status)
            serving = state is DeployState.READY and rel == live
            resources.append(Resource("container", c.id[:12], rel,
                                      state if serving or state is not DeployState.READY
                                      else DeployState.PENDING, serving,
                                      f"{c.name} {c.status}"))
        serving = next((r for r in resources if r.serving), None)
        if serving is not None:
            return Observed(DeployState.READY, serving.release, url, resources, "/health 200",
                            extra={"container": serving.id})
        if not resources:
            return Observed(DeployState.NOT_DEPLOYED, None, url, [], "no container")
        newest = resources[0]           # the engine lists the newest container first
        return Observed(newest.state, None, url, resources,
                        "no container answers on the public port", extra={"container": newest.id})

    def steps(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> list["DockerStep"]:
        return [DockerStep(ctx, release, observed)]

    def outcome(self, ctx: Context, steps: list, results: list) -> dict:
        step = steps[0]
        return {"image": step.image, "digest": step.digest} if step.image else {}

    def caller(self, ctx: Context, observed: Observed) -> Call:
        return url_caller(observed.url or _public_url(ctx), ctx.target_name)

    def logs(self, ctx: Context, observed: Observed, *, follow: bool, lines: int) -> Iterator[str]:
        """The log of the container that serves (else the newest one): ``docker logs``."""
        wanted = observed.extra.get("container")
        if not wanted:
            return
        client = engine(ctx)
        try:
            stream = client.containers.get(wanted).logs(stream=True, follow=follow, tail=lines)
            for line in _lines(stream):
                yield line.decode("utf-8", "replace")
        finally:
            client.close()

    def delete(self, ctx: Context, observed: Observed) -> None:
        """Stop (drain) and remove every container of this deployment, found again by label.
        Images stay unless ``delete --purge`` (``purge``): another target may run them."""
        client = engine(ctx)
        try:
            for c in _containers(client, ctx):
                ctx.reporter.step(f"removing container {c.name}")
                _remove(c)
        finally:
            client.close()


    def purge(self, ctx: Context) -> None:
        """``delete --purge``: remove the target's images (``IMAGE:*``) from the engine."""
        import docker.errors
        client = engine(ctx)
        try:
            for image in client.images.list(name=ctx.target.image):
                ctx.reporter.step(f"removing image {', '.join(image.tags) or image.id}")
                try:
                    client.images.remove(image.id, force=True)
                except docker.errors.APIError as exc:
                    ctx.reporter.warn(f"image {image.id} was not removed: {_short(exc)}")
        finally:
            client.close()


def _lines(stream) -> Iterator[bytes]:
    """Whole lines from a docker log stream (which yields arbitrary chunks)."""
    buf = b""
    for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
    if buf:
        yield buf


def _remove(container, timeout: int = 35) -> None:
    """Stop (SIGTERM, the runtime drains; SIGKILL after ``timeout``) and remove."""
    import docker.errors
    try:
        container.stop(timeout=timeout)
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


class DockerStep:
    """The one step of a docker deploy or rollback (see the module docstring)."""

    label = "docker"

    def __init__(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> None:
        self.ctx, self.release, self.observed = ctx, release, observed
        self.previous = observed.release
        self.client = None
        self.new = None
        self.image: str | None = None
        self.digest: str | None = None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def prepare(self) -> bool:
        ctx, rid = self.ctx, self.release.release_id
        self.client = engine(ctx)
        self._remove_strays()
        if self.previous == rid:
            ctx.reporter.step(f"{rid} is already serving at {self.observed.url}: nothing to do")
            return False
        self.image, self.digest = self._image()
        self._run()
        try:
            reason = self._check()
        except BaseException:       # Ctrl-C or --timeout while it loads: not left running
            self.abort()
            raise
        if reason is not None:
            tail = _tail(self.new)
            self.abort()
            headline = load_headline(reason, tail)
            raise DeployError(f"release {rid} failed to load: {headline}" if headline else
                              f"release {rid} failed: {reason}",
                              fix="fix the model or manifest and deploy again; the previous "
                                  "release is still serving" if self.previous else
                                  "fix the model and deploy again",
                              details=f"last lines of the container's log:\n{tail}")
        return True

    def _remove_strays(self) -> None:
        """Containers an interrupted command left (not serving): removed before starting."""
        serving = {r.id for r in self.observed.resources if r.serving}
        for c in _containers(self.client, self.ctx):
            if c.id[:12] not in serving:
                self.ctx.reporter.step(f"removing {c.name}, left by an interrupted command")
                _remove(c, timeout=5)

    def _image(self) -> tuple[str, str]:
        """The image to run and its id (digest): ``--image`` (given to the service as
        ``snapshot['image']``), else ``IMAGE:RELEASE`` built here unless the engine has it."""
        from .docker_image import ensure_image
        return ensure_image(self.ctx, self.client, self.release)

    def _run(self) -> None:
        ctx, rid, snap = self.ctx, self.release.release_id, self.release.snapshot
        res = snap.get("resources") or {}
        kwargs = {}
        if res.get("gpu"):
            import docker.types
            kwargs["device_requests"] = [docker.types.DeviceRequest(
                count=int(res["gpu"].get("count", 1)), capabilities=[["gpu"]])]
        env = {**(snap.get("env") or {}), **ctx.secrets, "MLSERVE_CHECK_PORT": "0",
               "MLSERVE_RELEASE": rid}
        name = f"mlserve-{ctx.identity}-{rid}-{int(time.time())}".replace("/", "-")
        ctx.reporter.step(f"starting {self.image} beside the current release")
        try:
            self.new = self.client.containers.run(
                self.image, entrypoint=["sh", "-c", _LAUNCH.format(mark=ACTIVE_MARK), "mlserve"],
                command=["--host", "0.0.0.0", "--port", str(ctx.target.port), "--release", rid],
                name=name, detach=True, network_mode="host", environment=env,
                labels={LABEL_DEPLOYMENT: ctx.identity, LABEL_RELEASE: rid},
                restart_policy={"Name": ctx.target.restart},
                mem_limit=memory_bytes(res.get("memory", "1Gi")),
                nano_cpus=int(float(res.get("cpu", 1)) * 1e9), **kwargs)
        except Exception as exc:  # noqa: BLE001 - SDK errors become the deploy's reason
            raise DeployError(f"the engine did not start {self.image}: {_short(exc)}",
                              fix="check the image and the target's resources") from None
        ctx.record("container", self.new.id[:12], container=self.new.id[:12], image=self.image,
                   digest=self.digest)
        self.request = http_json if engine_is_local(_engine_base(ctx)) else exec_request(self.new)

    def _alive(self) -> bool:
        try:
            self.new.reload()
        except Exception:  # noqa: BLE001 - removed under us
            return False
        return self.new.status == "running" and not self.new.attrs["RestartCount"]

    def _check(self) -> str | None:
        ctx, rid, snap = self.ctx, self.release.release_id, self.release.snapshot
        started = time.monotonic()
        with ctx.reporter.progress(f"waiting for {rid} to load") as step:
            port = check_port_of(self.new, started + ctx.target.health_timeout)
            if port is None:
                reason = EXITED_WHILE_LOADING if not self._alive() else \
                    f"its check port was not open after {ctx.target.health_timeout:g}s"
            else:
                check_url = http_url("127.0.0.1", port)
                left = max(1.0, ctx.target.health_timeout - (time.monotonic() - started))
                reason = wait_healthy(check_url, left, alive=self._alive, max_delay=0.2,
                                      request=self.request)
            if reason is not None:
                step.failed()
        if reason is None and snap.get("smoke"):
            ctx.reporter.step(f"running {len(snap['smoke'])} smoke case(s)")
            from ..manifest import SmokeCase
            reason = run_smoke(predict_call(check_url, request=self.request),
                               [SmokeCase.model_validate(c) for c in snap["smoke"]])
        return reason

    def activate(self) -> None:
        since = int(time.time()) - 1
        # From inside (the runtime is PID 1: sh execs it), not `docker kill -s USR1`: the engine
        # marks a container it signalled as stopped by hand, and then never restarts it.
        self.new.exec_run(["sh", "-c", "kill -USR1 1"])
        deadline = time.monotonic() + min(self.ctx.target.health_timeout, 30)
        while time.monotonic() < deadline:
            if b"activated on" in self.new.logs(since=since):
                self.new.exec_run(["touch", ACTIVE_MARK])
                return
            if not self._alive():
                break
            time.sleep(0.05)
        tail = _tail(self.new)
        self.abort()
        raise DeployError(f"release {self.release.release_id} did not take over port "
                          f"{self.ctx.target.port}", fix="see the container's log below",
                          details=f"last lines of the container's log:\n{tail}")

    def finish(self) -> None:
        """Stop the containers that served before (SIGTERM: they drain), then remove them."""
        for c in _containers(self.client, self.ctx):
            if c.id != self.new.id:
                self.ctx.reporter.step(f"draining the previous release "
                                       f"{c.labels.get(LABEL_RELEASE)} ({c.name})")
                _remove(c)

    def abort(self) -> None:
        if self.new is not None:
            _remove(self.new, timeout=5)
