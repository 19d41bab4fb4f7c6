"""Container images: build the rendered docker context on a Docker engine, and push it.

The stable API (the ``docker`` provider and ``mlserve build --push`` call it):

``engine(docker_host=None)``
    A docker SDK client for ``docker_host`` (``unix://``, ``tcp://``, ``ssh://user@host``), else
    ``DOCKER_HOST`` and the docker SDK's environment, else the local socket; checked with a ping.
    Unreachable: ``ProviderError`` (exit 1: the engine is a service that failed an operation, like
    a provider's API; retrying works once it is up) naming the host and the fix.
``image_for(project, target_name) -> str``
    ``REPOSITORY:RELEASE`` (the target's ``image`` and the model release id), without building.
``build_image(project, target_name, reporter, *, docker_host=None, base_image=None) -> ImageRef``
    Renders the docker context (``mlserve.packaging.build_project``, fmt ``docker``), builds it
    (network host: engines without a bridge can build; build args ``MLSERVE_RELEASE`` and, when
    given, ``BASE_IMAGE``) with one progress event per Dockerfile step, tags ``REPOSITORY:RELEASE``.
    A failed step is ``ProviderError`` (exit 1) with the step's output.
``find_image(ref, *, docker_host=None) -> ImageRef | None``
    The image the engine holds under ``ref``, or None (deploy skips a build it has).
``push_image(ref, reporter, *, docker_host=None) -> PushResult``
    Pushes with one progress event per layer; layers the registry has are not sent (it says
    "Layer already exists"). Credentials from ``mlserve.artifacts.registry``; missing or refused:
    ``MissingCredentials`` (exit 3) with the fix. Never shows a password or token.

The docker SDK (the ``docker`` extra) is imported here only, when one of these runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import InvalidInput, MissingCredentials, NotFound, ProviderError, missing_extra
from ..report import Reporter
from . import registry as registries

if TYPE_CHECKING:
    from ..manifest import Project

#: What the registry says about a layer it already has (docker's distribution client).
LAYER_EXISTS = "Layer already exists"
_AUTH_WORDS = ("unauthorized", "authentication required", "no basic auth credentials",
               "denied", "401")


@dataclass
class ImageRef:
    """An image on an engine: ``ref`` = ``repository:release``; ``id`` its content id on the
    engine; ``digest`` the registry digest once pushed (``repository@sha256:...``)."""

    ref: str
    repository: str
    release: str
    id: str
    digest: str | None = None
    context: str | None = None      # the build context's content hash (what was built)
    seconds: float = 0.0            # build wall time

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PushResult:
    ref: str
    digest: str                     # sha256:... of the manifest the registry stored
    layers_pushed: int
    layers_existing: int
    # The engine's upload progress of the layers it sent: uncompressed tar bytes (the registry
    # stores them gzip-compressed, typically 2-3x smaller).
    bytes_pushed: int
    seconds: float = 0.0
    layers: dict[str, str] = field(default_factory=dict)    # layer id -> final status

    def to_dict(self) -> dict:
        return asdict(self)


def _sdk():
    try:
        import docker
    except ImportError:
        raise missing_extra("docker", "docker") from None
    return docker


def engine(docker_host: str | None = None):
    """A pinged docker SDK client (see the module docstring)."""
    docker = _sdk()
    host = docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
    try:
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, timeout=600)
        else:
            client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as exc:    # requests, paramiko and docker errors alike: one message
        trust = _ssh_trust_error(host, exc)
        if trust is not None:
            raise trust from None
        raise ProviderError(
            f"cannot reach the Docker engine at {host}",
            fix="start the engine (e.g. `systemctl start docker`) or point DOCKER_HOST (or the "
                "target's host) at a running one: unix:///var/run/docker.sock, tcp://HOST:2376, "
                "ssh://USER@HOST", details=_first_line(exc)) from None


def _ssh_trust_error(host: str, exc: BaseException) -> MissingCredentials | None:
    """An ``ssh://`` engine whose host key is unknown or changed, or that refused our key:
    exit 3 with the fix (the docker SDK checks host keys strictly against ~/.ssh/known_hosts
    and takes the identity from ~/.ssh/config or ~/.ssh/id_*)."""
    text, kind = str(exc), type(exc).__name__
    address = host.split("://", 1)[-1].rsplit("@", 1)[-1]
    name, _, port = address.partition(":")
    if "not found in known_hosts" in text or kind == "BadHostKeyException":
        changed = kind == "BadHostKeyException"
        return MissingCredentials(
            f"the Docker engine host {address} offers a host key that "
            f"{'differs from the one' if changed else 'is not'} in ~/.ssh/known_hosts",
            fix=f"check the host key's fingerprint with the host's owner, then record it: "
                f"ssh-keyscan{' -p ' + port if port else ''} {name} >> ~/.ssh/known_hosts "
                "(or connect once with ssh and accept it)")
    if kind in ("AuthenticationException", "PasswordRequiredException"):
        return MissingCredentials(
            f"the Docker engine host {address} refused the SSH login ({_first_line(exc)})",
            fix="name the key in ~/.ssh/config (Host ... IdentityFile ...) or load it into "
                "ssh-agent, and check the user in the engine's ssh:// URL")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _repository(project: "Project", target_name: str) -> tuple[str, Any]:
    name, target = project.target(target_name)
    # docker targets name it `image`, cloud targets `repository` (ECR, Artifact Registry...); a
    # target whose repository derives from more (azureml: registry + repository or the
    # project's name) says it through ``image_repository(project_name)``
    from ..providers import info
    from ..vocab import ArtifactKind
    own = getattr(target, "image_repository", None)
    repository = own(project.manifest.name) if callable(own) else \
        getattr(target, "image", None) or getattr(target, "repository", None)
    if info(target.provider).artifact is not ArtifactKind.IMAGE or not repository:
        raise InvalidInput(f"target {name!r} builds no image (provider {target.provider})",
                           fix="build a target with provider: docker and an image repository")
    return repository, target


def image_for(project: "Project", target_name: str | None) -> str:
    """``REPOSITORY:RELEASE`` for the target, without building anything."""
    from ..bundle import collect
    from ..release import release_id
    repository, _ = _repository(project, target_name)
    return f"{repository}:{release_id(project, collect(project.root))}"


def find_image(ref: str, *, docker_host: str | None = None) -> ImageRef | None:
    """The image ``ref`` on the engine, or None."""
    docker = _sdk()
    client = engine(docker_host)
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    repository, _, release = ref.rpartition(":")
    digests = image.attrs.get("RepoDigests") or []
    return ImageRef(ref, repository, release, image.id, digests[0] if digests else None)


def tag_image(source: str, ref: str, *, docker_host: str | None = None) -> None:
    """Tag the engine's image ``source`` as ``ref`` (``REPOSITORY:TAG``)."""
    docker = _sdk()
    client = engine(docker_host)
    repository, _, tag = ref.rpartition(":")
    try:
        client.images.get(source).tag(repository, tag)
    except docker.errors.ImageNotFound:
        raise NotFound(f"image {source} is not on the engine",
                       fix="build it with `mlserve build TARGET --image`, or pull it") from None


def build_image(project: "Project", target_name: str | None, reporter: Reporter | None = None, *,
                docker_host: str | None = None, base_image: str | None = None) -> ImageRef:
    """Render and build the target's image, tagged ``REPOSITORY:RELEASE``."""
    from ..packaging import build_project
    reporter = reporter or Reporter()
    repository, target = _repository(project, target_name)
    client = engine(docker_host)
    started = time.monotonic()
    built = build_project(project, target_name, "docker")
    ref = f"{repository}:{built.release}"
    args = {"MLSERVE_RELEASE": built.release}
    if base_image:
        args["BASE_IMAGE"] = base_image
    steps = _count_steps(Path(built.output) / "Dockerfile")
    # A spinner whose text is the running step ("Step 7/22 : RUN ..."): a bar's byte columns
    # would misread step counts.
    with reporter.progress(f"building {ref} ({steps} steps)") as progress:
        stream = client.api.build(path=built.output, tag=ref, buildargs=args, rm=True,
                                  forcerm=True, network_mode="host", decode=True,
                                  platform=getattr(target, "platform", None))
        image_id = _follow_build(stream, progress, ref)
    return ImageRef(ref, repository, built.release, image_id, context=built.context,
                    seconds=time.monotonic() - started)


def _count_steps(dockerfile: Path) -> int:
    """Instructions in the Dockerfile (the classic builder's "Step N/M"), for the bar's total."""
    count, continued = 0, False
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not continued and stripped and not stripped.startswith("#"):
            count += 1
        continued = stripped.endswith("\\")
    return count


def _follow_build(stream: Iterator[dict], progress, ref: str) -> str:
    """Reads the engine's build stream: a progress event per step; returns the image id."""
    image_id, tail = None, []
    for event in stream:
        if "error" in event:
            detail = "\n".join(tail[-20:] + [str(event.get("error", "")).strip()])
            raise ProviderError(f"the image build of {ref} failed",
                                fix="fix the step shown below (the model's requirements or "
                                    "system_packages, or the base image) and build again",
                                details=detail)
        text = str(event.get("stream") or "")
        for line in text.splitlines():
            if not line.strip():
                continue
            tail = (tail + [line])[-40:]
            if line.startswith("Step "):
                progress.advance(1)
                progress.log(line[:200])
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = aux["ID"]
    if image_id is None:
        raise ProviderError(f"the engine ended the build of {ref} without an image",
                            details="\n".join(tail[-20:]) or None)
    return image_id


def push_image(ref: str, reporter: Reporter | None = None, *, docker_host: str | None = None,
               credentials: registries.Credentials | None = None) -> PushResult:
    """Push ``ref`` (``REPOSITORY:TAG``) with per-layer progress (see the module docstring);
    ``credentials`` (default: ``registry.credentials_for`` the ref's registry) are sent."""
    reporter = reporter or Reporter()
    repository, _, tag = ref.rpartition(":")
    if not repository or "/" in tag:
        raise InvalidInput(f"{ref!r} is not REPOSITORY:TAG", fix="name the image with its tag")
    registry = registries.registry_of(repository)
    credentials = credentials or registries.credentials_for(registry)
    client = engine(docker_host)
    started = time.monotonic()
    with reporter.progress(f"pushing {ref} to {registry}") as progress:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True,
                                 auth_config=credentials.auth_config() if credentials else None)
        result = _follow_push(stream, progress, ref, registry, credentials)
    result.seconds = time.monotonic() - started
    return result


def _follow_push(stream: Iterator[dict], progress, ref: str, registry: str,
                 credentials) -> PushResult:
    layers: dict[str, str] = {}
    sent: dict[str, int] = {}
    digest = None
    for event in stream:
        if "error" in event:
            said = str(event.get("error") or "")
            if any(word in said.lower() for word in _AUTH_WORDS):
                raise registries.refused(registry, credentials, said)
            raise ProviderError(f"the push of {ref} to {registry} failed",
                                fix="check that the registry is reachable and accepts pushes",
                                details=registries.without_secret(said, credentials))
        layer, status = event.get("id"), str(event.get("status") or "")
        if status == "Pushing" and layer:
            current = (event.get("progressDetail") or {}).get("current") or 0
            progress.advance(max(0, current - sent.get(layer, 0)))
            sent[layer] = max(sent.get(layer, 0), current)
        elif layer and (status in ("Pushed", LAYER_EXISTS) or status.startswith("Mounted from")):
            layers[layer] = "Pushed" if status == "Pushed" else LAYER_EXISTS
            size = f" ({sent[layer]} bytes)" if status == "Pushed" and layer in sent else ""
            progress.log(f"layer {layer}: {status.lower()}{size}")
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
    if digest is None:
        raise ProviderError(f"the registry {registry} did not confirm the push of {ref}")
    pushed = [layer for layer, status in layers.items() if status == "Pushed"]
    return PushResult(ref, digest, len(pushed), len(layers) - len(pushed),
                      sum(sent.get(layer, 0) for layer in pushed), layers=layers)


def build_and_push(manifest: str | Path | None, target: str | None, reporter: Reporter | None =
                   None, *, push: bool | None = None,
                   docker_host: str | None = None) -> tuple[ImageRef, PushResult | None]:
    """``mlserve build --image [--push]``: build the target's image, then push it when ``push``
    (default: the target's ``push`` option). The pushed digest is put on the ImageRef."""
    from ..manifest import load_project
    project = load_project(manifest)
    repository, options = _repository(project, target)
    push = getattr(options, "push", True) if push is None else push
    # Credentials first: a build of minutes is not wasted on a push that cannot happen.
    credentials = registries.credentials_for(registries.registry_of(repository)) if push else None
    image = build_image(project, target, reporter, docker_host=docker_host)
    if not push:
        return image, None
    pushed = push_image(image.ref, reporter, docker_host=docker_host, credentials=credentials)
    image.digest = f"{image.repository}@{pushed.digest}"
    return image, pushed
