"""``mlserve build``: render the build context of one target (Cog, Truss, Dockerfile, cloud-init)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..providers import REGISTRY, formats
from .app import JsonOpt, ManifestOpt, TargetArg, app
from .output import console, emit_json, plain, say, warning

FORMATS = formats()         # from the provider registry (a test checks packaging renders each)
COLLAPSE_AFTER = 12


def _format(value: Optional[str]) -> Optional[str]:
    if value is not None and value not in FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of: {', '.join(FORMATS)}")
    return value


@app.command()
def build(
    target: TargetArg = None,
    file: ManifestOpt = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", callback=_format, metavar=f"[{'|'.join(FORMATS)}]",
        help="Packaging to render. Default: the target provider's ("
             + ", ".join(f"{n}: {i.default_format}" for n, i in REGISTRY.items()) + ").")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Directory to write (replaced if an earlier build wrote it). "
                               "Default: .mlserve/build/TARGET-FORMAT beside the manifest.")] = None,
    image: Annotated[bool, typer.Option(
        "--image", help="docker targets: also build the image on the Docker engine (DOCKER_HOST), "
                        "tagged REPOSITORY:RELEASE, and push it when the target says push.")] = False,
    push: Annotated[Optional[bool], typer.Option(
        "--push/--no-push", show_default=False,
        help="With --image: push, or do not, overriding the target's push option; --push "
             "implies --image.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Render a self-contained, reproducible build context for TARGET; the model's code is
    copied unchanged. The release id is the model version's. With --image (docker targets), build
    the image and push it."""
    if image or push:
        _build_image(file, target, push, as_json)
        return
    from .. import service
    result = service.build(file, target, fmt, output)
    for text in result.warnings:
        warning(text)
    if as_json:
        emit_json(result.to_dict())
        return
    _show_tree(result)


def _build_image(file, target, push, as_json) -> None:
    from ..artifacts.image import build_and_push
    from .output import RichReporter, result_line
    with RichReporter() as reporter:
        built, pushed = build_and_push(file, target, reporter, push=push)
    if as_json:
        emit_json({"image": built.to_dict(), "push": pushed.to_dict() if pushed else None})
        return
    result_line(f"built [bold]{plain(built.ref)}[/bold] ({plain(built.id[:19])}, "
                f"{built.seconds:.1f} s)")
    if pushed:
        result_line(f"pushed [bold]{plain(built.digest)}[/bold]: {pushed.layers_pushed} layer(s) "
                    f"sent ({pushed.bytes_pushed} bytes), {pushed.layers_existing} already there "
                    f"({pushed.seconds:.1f} s)")


def _show_tree(result) -> None:
    """The written tree; below the top level, a directory of many files (vendored packages)
    shows as one line."""
    from rich.tree import Tree
    counts: dict[str, int] = {}
    for path in result.files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            key = "/".join(parts[:depth])
            counts[key] = counts.get(key, 0) + 1
    tree = Tree(f"[bold]{plain(Path(result.output).name)}/[/bold]")
    nodes: dict[str, Tree] = {"": tree}
    collapsed: set[str] = set()
    for path in result.files:
        parts = path.split("/")
        parent_key = ""
        for depth, part in enumerate(parts[:-1]):
            key = "/".join(parts[:depth + 1])
            if key not in nodes:
                many = depth > 0 and counts[key] > COLLAPSE_AFTER
                label = f"[blue]{plain(part)}/[/blue]" + (f" ({counts[key]} files)" if many else "")
                nodes[key] = nodes[parent_key].add(label)
                if many:
                    collapsed.add(key)
            parent_key = key
            if key in collapsed:
                break
        else:
            nodes[parent_key].add(plain(parts[-1]))
    console().print(tree)
    say(f"wrote {len(result.files)} files to [bold]{plain(result.output)}[/bold] "
        f"({result.format} for target {plain(result.target)}), release "
        f"[green]{result.release}[/green]")
