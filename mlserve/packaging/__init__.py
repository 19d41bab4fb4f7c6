"""``mlserve build``: render a self-contained build context for one target, reproducibly.

``build(manifest, target, fmt, output)`` (or ``build_project`` with a loaded project) collects the model's files (``mlserve.bundle.collect``,
so ``.mlserveignore`` applies), renders one format into memory, writes it to ``output`` (a new
directory, or one an earlier build wrote) and returns a ``BuildResult``. The release id is the
model version's (``mlserve.release.release_id``: the same for every format and target); what
was built under it is ``context``, the content hash of the written context: the same manifest
and files give the same bytes on any machine with the same mlserve.

Formats and the providers that use them (``DEFAULT_FORMAT``, from the provider registry):
``cog`` (Replicate), ``truss`` (Baseten), ``docker`` (the docker provider, and local/ssh targets
when asked for an image), ``cloud-init`` (vm).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..bundle import collect, ignore_pattern
from ..errors import InvalidInput
from ..manifest import Project, load_project
from ..providers import REGISTRY
from .cloudinit import render_cloud_init
from .context import MARKER, BuildContext, Spec, clear_output
from .formats import render_cog, render_docker, render_truss

RENDERERS: dict[str, Callable[[Spec, BuildContext], None]] = {
    "cog": render_cog,
    "truss": render_truss,
    "docker": render_docker,
    "cloud-init": render_cloud_init,
}
FORMATS = tuple(RENDERERS)
#: provider -> the format ``build`` renders without ``--format`` (each provider's info says it).
DEFAULT_FORMAT = {name: info.default_format for name, info in REGISTRY.items()}


@dataclass
class BuildResult:
    format: str
    target: str
    release: str            # the model version (``mlserve.release``), the same in every format
    context: str            # what was built under it: the written context's content hash
    output: str
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def default_output(project: Project, target_name: str, fmt: str) -> Path:
    return project.root / ".mlserve" / "build" / f"{target_name}-{fmt}"


def _ignores(project: Project, output: Path) -> list[str]:
    """Keep the output directory out of the bundle when it lies inside the project."""
    try:
        rel = output.resolve().relative_to(project.root.resolve())
    except ValueError:
        return []
    return [ignore_pattern(rel.as_posix(), directory=True)] if rel.parts else []


def render_context(project: Project, target_name: str, fmt: str, output: Path) -> BuildContext:
    """The files of the build context, in memory (copied files by reference)."""
    if fmt not in RENDERERS:
        raise InvalidInput(f"unknown format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    name, target = project.target(target_name)
    spec = Spec(project, name, target, collect(project.root, extra_ignores=_ignores(project, output)))
    ctx = BuildContext(warnings=list(spec.bundle.warnings))
    RENDERERS[fmt](spec, ctx)
    ctx.text(MARKER, f"written by `mlserve build --format {fmt}`; rebuilding replaces this "
                     "directory\n")
    return ctx


def build(manifest: str | Path | None = None, target: str | None = None, fmt: str | None = None,
          output: str | Path | None = None) -> BuildResult:
    """``mlserve build``: load the manifest, then ``build_project``."""
    return build_project(load_project(manifest), target, fmt, output)


def build_project(project: Project, target: str | None = None, fmt: str | None = None,
                  output: str | Path | None = None) -> BuildResult:
    """Render ``fmt`` (default: the target provider's) for ``target`` into ``output`` (default:
    ``default_output``); what adapters call from ``package()`` with the project they hold."""
    name, options = project.target(target)
    fmt = fmt or DEFAULT_FORMAT[options.provider]
    dest = Path(output).absolute() if output else default_output(project, name, fmt)
    ctx = render_context(project, name, fmt, dest)
    if dest.resolve() == project.root.resolve() or project.root.resolve().is_relative_to(
            dest.resolve()):
        raise InvalidInput(f"the output directory {dest} holds the project itself",
                           fix="choose a directory for the build context with -o")
    staging = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        ctx.write(staging)
        clear_output(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    from ..release import release_id
    model = collect(project.root, extra_ignores=_ignores(project, dest))
    return BuildResult(format=fmt, target=name, release=release_id(project, model),
                       context="sha256:" + collect(dest).content_hash, output=str(dest),
                       files=sorted(ctx.files), warnings=ctx.warnings)
