"""The image a docker deploy runs: ``ensure_image(ctx, client, release) -> (ref, image id)``.

- ``deploy --image REF`` (the service puts REF in ``release.snapshot["image"]``): REF as it is,
  pulled when the engine does not have it; nothing is built.
- otherwise ``IMAGE:RELEASE`` (the target's ``image`` repository, the release id as the tag):
  used as it is when the engine has it (a redeploy or rollback builds nothing), else built from
  the rendered docker context (``mlserve build --format docker``) with ``MLSERVE_RELEASE`` set.

The image id (``sha256:...``, the digest of its config) is what the journal records.
Builds go through ``mlserve.artifacts.image.build_image`` (per-step progress). A deploy does not
push: the engine that builds runs the image (``mlserve build --push`` pushes for other engines).
"""

from __future__ import annotations

import re

import docker.errors   # imported by the docker adapter only, after its SDK check

from ..errors import DeployError, InvalidInput, NotFound
from ..strict import IMAGE_REPOSITORY
from .base import Context, ReleaseSpec


#: An image reference as docker parses it: REPOSITORY[:TAG][@sha256:DIGEST].
IMAGE_REF_RE = re.compile(
    rf"{IMAGE_REPOSITORY}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?")


def check_ref(ref: str) -> None:
    """``--image REF`` is an image reference (before any engine is asked), else exit 2."""
    if not isinstance(ref, str) or len(ref) > 4096 or not IMAGE_REF_RE.fullmatch(ref):
        from ..strict import shown
        raise InvalidInput(f"--image {shown(ref)} is not an image reference",
                           fix="give REPOSITORY[:TAG][@sha256:DIGEST], e.g. "
                               "registry.example.com/team/hello:r-0123456789ab")


def image_ref(ctx: Context, release_id: str) -> str:
    return f"{ctx.target.image}:{release_id}"


def release_of_image(client, ref: str) -> str | None:
    """The release id an image mlserve built carries (its ``MLSERVE_RELEASE``), or None."""
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        try:
            image = client.images.pull(ref)
        except docker.errors.APIError as exc:
            raise NotFound(f"image {ref} is neither on the engine nor pullable: "
                           f"{exc.explanation or exc}",
                           fix="build it with `mlserve build TARGET` (or docker build), or "
                               "`docker login` to its registry") from None
    for item in image.attrs.get("Config", {}).get("Env") or []:
        name, _, value = item.partition("=")
        if name == "MLSERVE_RELEASE" and value:
            return value
    return None


def ensure_image(ctx: Context, client, release: ReleaseSpec) -> tuple[str, str]:
    ref = release.snapshot.get("image") or image_ref(ctx, release.release_id)
    try:
        return ref, client.images.get(ref).id
    except docker.errors.ImageNotFound:
        pass
    if release.snapshot.get("image"):
        release_of_image(client, ref)        # pulls it, or says why it cannot
        return ref, client.images.get(ref).id
    if release.bundle is None:
        raise NotFound(f"image {ref} is no longer on the engine",
                       fix="deploy that code again (the image is rebuilt)")
    from ..artifacts.image import build_image
    built = build_image(ctx.project, ctx.target_name, ctx.reporter, docker_host=ctx.target.host)
    if built.ref != ref:       # the project changed under the deploy: never run other code
        raise DeployError(f"built {built.ref}, expected {ref}: the files changed during the deploy",
                          fix="deploy again")
    return ref, built.id
