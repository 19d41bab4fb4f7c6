"""Renderers of the container formats: Cog (Replicate), Truss (Baseten) and a Dockerfile.

Each ``render_*(spec, ctx)`` adds a complete build context to ``ctx``. The model's files are
copied unchanged; everything mlserve generates comes from ``templates/<format>/``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInput
from ..render import Sourced, render
from ..resources import templates_dir
from .cog_inputs import run_parameters
from .context import LARGE_FILE_BYTES, BuildContext, Spec
from .runtime import runtime_pins, runtime_sources, runtime_wheels

SHIM = Path(__file__).with_name("shim.py")
#: The Cog SDK the wrapper is written and tested for (BaseRunner/run, concurrent, Opaque), and
#: the Python versions it builds images for.
COG_SDK_VERSION = "0.23.1"
COG_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
#: The base images used when the target names none (``base_image``).
SLIM_BASE = "python:{python}-slim"
CUDA_BASE = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
CUDA_BASE_PYTHON = "3.12"    # Ubuntu 24.04's python3


def _sourced(spec: Spec, value: str, *keys: str) -> Sourced:
    """``value`` labelled with its field and line, for a quoting filter that has to refuse it."""
    return Sourced.at(spec.project.located, value, *keys)


def _common(spec: Spec) -> dict:
    m = spec.manifest
    for key, value in m.env.items():
        if "\0" in value:    # os.environ, docker and the shell all refuse or drop it
            raise InvalidInput(f"env.{key}: the value contains a NUL character, which no "
                               "environment variable can hold",
                               where=spec.project.located.where(("env", key)),
                               fix="remove the NUL from the value in mlserve.yaml")
    return {
        "name": m.name,
        "entrypoint": _sourced(spec, m.model.entrypoint, "model", "entrypoint"),
        "python": m.model.python,
        "env": {key: _sourced(spec, value, "env", key) for key, value in m.env.items()},
        "secrets": list(m.secrets),
        "system_packages": list(m.model.system_packages),
        "concurrency": m.scaling.concurrency,
        "max_batch_size": m.scaling.max_batch_size,
        "max_batch_wait_ms": m.scaling.max_batch_wait_ms,
        "has_requirements": bool(spec.requirements()),
    }


def _requirements(spec: Spec, ctx: BuildContext) -> None:
    text = spec.requirements_text()
    if text:
        ctx.text("requirements.txt", text)


def _shim_and_runtime(prefix: str, ctx: BuildContext) -> None:
    """The loader the Cog/Truss wrappers share with ``mlserve serve``."""
    ctx.copy(prefix + "mlserve_shim.py", SHIM)
    for rel, source in runtime_sources():
        ctx.copy(prefix + rel, source)


def render_cog(spec: Spec, ctx: BuildContext) -> None:
    """cog.yaml + predict.py (a ``BaseRunner`` with ``run``) around the class in app/; ``run``
    has one typed parameter per field of ``model.inputs`` (see cog_inputs), else one opaque."""
    values = _common(spec)
    model = spec.option("replicate", "model")
    parameters = run_parameters(spec, ctx.warnings)
    values.update(gpu=spec.manifest.resources.gpu is not None, app_dir="app",
                  image=f"r8.im/{model}" if model else "", sdk_version=COG_SDK_VERSION,
                  parameters=parameters, copies_defaults=any(p["fresh"] for p in parameters))
    ctx.text("cog.yaml", render("cog", "cog.yaml.j2", **values))
    ctx.text("predict.py", render("cog", "predict.py.j2", **values))
    _requirements(spec, ctx)
    _shim_and_runtime("", ctx)
    spec.user_files("app/", ctx)
    if spec.python not in COG_PYTHONS:
        ctx.warnings.append(f"Cog builds Python {', '.join(COG_PYTHONS)}; model.python is "
                            f"{spec.python}")
    if spec.manifest.secrets:
        ctx.warnings.append("Replicate has no secret store for a model's environment: secrets "
                            f"({', '.join(spec.manifest.secrets)}) must be set in the "
                            "container's environment by whoever runs it")


def render_truss(spec: Spec, ctx: BuildContext) -> None:
    """config.yaml + model/model.py around the class in model/app/."""
    values = _common(spec)
    res = spec.manifest.resources
    accelerator = ""
    if res.gpu is not None and not res.gpu.type.strip():
        raise InvalidInput("resources.gpu.type is empty: Truss would configure no accelerator",
                           where=spec.project.located.where(("resources", "gpu", "type")),
                           fix="name the accelerator (e.g. A10G, T4, H100)")
    if res.gpu is not None:
        accelerator = res.gpu.type if res.gpu.count == 1 else f"{res.gpu.type}:{res.gpu.count}"
    values.update(model_name=spec.option("baseten", "model_name") or spec.manifest.name, app_dir="app",
                  truss_python="py" + spec.python.replace(".", ""), cpu=f"{res.cpu:g}",
                  memory=res.memory, accelerator=accelerator, use_gpu=bool(accelerator))
    ctx.text("config.yaml", render("truss", "config.yaml.j2", **values))
    ctx.text("model/model.py", render("truss", "model.py.j2", **values))
    _requirements(spec, ctx)
    _shim_and_runtime("model/", ctx)
    spec.user_files("model/app/", ctx)


def base_image(spec: Spec) -> tuple[str, bool]:
    """The base image, and whether python3 must be installed on it (the CUDA default)."""
    chosen = getattr(spec.target, "base_image", None)    # docker and sagemaker targets
    if chosen:
        return _sourced(spec, chosen, "targets", spec.target_name, "base_image"), False
    if spec.manifest.resources.gpu is not None:
        return CUDA_BASE, True
    return SLIM_BASE.format(python=spec.python), False


def render_docker(spec: Spec, ctx: BuildContext) -> None:
    """Dockerfile + runtime/ (mlserve runtime, the wheels of its deps) + large/ + app/."""
    values = _common(spec)
    image, install_python = base_image(spec)
    if install_python and spec.python != CUDA_BASE_PYTHON:
        ctx.warnings.append(f"the default GPU base image ({CUDA_BASE}) runs Python "
                            f"{CUDA_BASE_PYTHON}, model.python is {spec.python}: set "
                            "base_image on a docker target to a CUDA image with that Python")
    apt = list(values["system_packages"])
    if install_python:
        apt = sorted({*apt, "python3", "python3-venv"})
    large: list[tuple[str, str]] = []
    for f in spec.bundle.files:
        if f.size >= LARGE_FILE_BYTES:
            source = f"large/{f.digest}"
            if source not in ctx.files:
                ctx.copy(source, f)
            large.append((source, f"/app/{f.path}"))
        else:
            ctx.copy(f"app/{f.path}", f)
    spec.warn_private_files(ctx, "the image's service user (uid 10001)")
    if not any(p.startswith("app/") for p in ctx.files):
        ctx.text("app/.keep", "")  # COPY app/ needs the directory even when every file is large
    # The wheels are for the Python the image runs: the default CUDA image's own, else model.python.
    python = CUDA_BASE_PYTHON if install_python else spec.python
    platform = spec.option("docker", "platform", "linux/amd64")
    values.update(base_image=image, install_python=install_python, apt_packages=apt,
                  large_files=large, port=spec.option("docker", "port", 8080),
                  runtime_pins=runtime_pins(python))
    ctx.text("Dockerfile", render("docker", "Dockerfile.j2", **values))
    ctx.text("requirements.txt", spec.requirements_text())
    ctx.copy("runtime/healthcheck.py", templates_dir() / "docker" / "healthcheck.py")
    for rel, source in runtime_sources():
        ctx.copy(f"runtime/lib/{rel}", source)
    for wheel in runtime_wheels(python, platform):
        ctx.copy(f"runtime/wheels/{wheel.name}", wheel)
