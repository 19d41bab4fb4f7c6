"""What the adapters of providers that pull the release's image from a registry share (sagemaker
from ECR, vertex from Artifact Registry, azureml from Azure Container Registry): ``deploy --image REF`` support
(``PushedImageAdapter.check_image`` / ``image_release``), ``push_release`` (build when the
engine lacks the image, push ``REPOSITORY:RELEASE``), and ``instance_type`` from the target or
the provider's table that ``resources`` map to.
"""

from __future__ import annotations

import json
from typing import Callable

from ..errors import DeployError, InvalidInput, missing_extra
from .base import Adapter, Context, ReleaseSpec

_GI = {"Ki": 2 ** -20, "Mi": 2 ** -10, "Gi": 1, "Ti": 2 ** 10, "K": 1e3 / 2 ** 30,
       "M": 1e6 / 2 ** 30, "G": 1e9 / 2 ** 30, "T": 1e12 / 2 ** 30, "": 1 / 2 ** 30}


def memory_gib(size: str) -> float:
    """``resources.memory`` ("512Mi", "2Gi", "1G") in GiB."""
    digits = size.rstrip("KMGTi")
    return float(digits) * _GI[size[len(digits):]]


def instance_type(ctx: Context, snapshot: dict, pick: Callable[..., str | None], what: str,
                  example: str) -> str:
    """The target's ``instance_type``, else the one ``resources`` map to through the provider's
    table (``pick(cpu, memory_gib, gpu_type, gpu_count)``); none fits: InvalidInput naming
    ``what`` the provider calls it and an ``example``."""
    if ctx.target.instance_type:
        return ctx.target.instance_type
    res = snapshot.get("resources") or {}
    gpu = res.get("gpu") or None
    chosen = pick(float(res.get("cpu", 1)), memory_gib(res.get("memory", "1Gi")),
                  gpu.get("type") if gpu else None, int(gpu.get("count", 1)) if gpu else 1)
    if chosen is None:
        raise InvalidInput(f"no {what} is known for resources {json.dumps(res)}",
                           where=f"targets.{ctx.target_name}.instance_type",
                           fix=f"set the target's instance_type (e.g. {example})")
    return chosen


class PushedImageAdapter(Adapter):
    """``deploy --image REF`` for a provider that pulls from its own registry: the deploy tags
    REF as ``REPOSITORY:RELEASE`` and pushes that."""

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
        (pulled if need be)."""
        from ..artifacts.image import engine
        from .docker_image import release_of_image
        self.check_image(ref)
        client = engine()
        try:
            return release_of_image(client, ref)
        finally:
            client.close()


def push_release(ctx: Context, release: ReleaseSpec, image: str) -> str | None:
    """Build (when the engine lacks it) and push ``image`` (``REPOSITORY:RELEASE``); its registry
    digest. A ``--image`` deploy tags the image it names as ``image`` and pushes that (the
    provider pulls only from its registry, so an image built for another target is copied into
    the target's repository); a rollback pushes nothing (its image is in the registry already)."""
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
            raise DeployError(f"built {have.ref}, expected {image}: the files changed during the "
                              "deploy", fix="deploy again")
    return push_image(image, ctx.reporter).digest
