"""What the adapters of cloud targets that run the release's image from a registry share
(``sagemaker``, ``vertex``): ``deploy --image REF`` (``ImageDeploys``), the push of
``REPOSITORY:RELEASE`` a deploy makes (``push_release``), and reading ``resources.memory``
(``memory_gib``) to pick an instance from a provider's table. The docker SDK is imported only
when an image is built, pushed or read."""

from __future__ import annotations

from ..errors import DeployError, missing_extra
from .base import Context, ReleaseSpec

_GI = {"Ki": 2 ** -20, "Mi": 2 ** -10, "Gi": 1, "Ti": 2 ** 10, "K": 1e3 / 2 ** 30,
       "M": 1e6 / 2 ** 30, "G": 1e9 / 2 ** 30, "T": 1e12 / 2 ** 30, "": 1 / 2 ** 30}


def memory_gib(size: str) -> float:
    """GiB of a Kubernetes-style size (``512Mi``, ``2G``, ``1Gi``)."""
    digits = size.rstrip("KMGTi")
    return float(digits) * _GI[size[len(digits):]]


class ImageDeploys:
    """``deploy --image REF`` for an adapter whose target pulls ``REPOSITORY:RELEASE``."""

    @staticmethod
    def check_image(ref: str) -> None:
        """``--image REF`` is an image reference, else InvalidInput (no engine asked)."""
        try:
            from .docker_image import check_ref
        except ImportError:
            raise missing_extra("docker", "docker") from None
        check_ref(ref)

    def image_release(self, ctx: Context, ref: str) -> str | None:
        """The release id image ``ref`` carries (``deploy --image``), read on the local engine
        (pulled if need be). The deploy tags it ``REPOSITORY:RELEASE`` and pushes that."""
        from ..artifacts.image import engine
        from .docker_image import release_of_image
        self.check_image(ref)
        client = engine()
        try:
            return release_of_image(client, ref)
        finally:
            client.close()


def push_release(ctx: Context, release: ReleaseSpec, image: str) -> str | None:
    """Build (when the engine lacks it) and push ``image`` (``REPOSITORY:RELEASE``); its digest.
    A ``--image`` deploy tags the image it names as ``image`` (the provider pulls only from the
    target's registry, so an image built for another target is copied there); a rollback
    (``release.bundle`` None) pushes nothing: its image is in the registry already."""
    if release.bundle is None:
        return None
    from ..artifacts.image import build_image, find_image, push_image, tag_image
    source = release.snapshot.get("image")
    if source:
        tag_image(source, image)
    elif find_image(image) is None:
        have = build_image(ctx.project, ctx.target_name, ctx.reporter,
                           base_image=ctx.target.base_image)
        if have.ref != image:
            raise DeployError(f"built {have.ref}, expected {image}: the files changed during "
                              "the deploy", fix="deploy again")
    return push_image(image, ctx.reporter).digest
