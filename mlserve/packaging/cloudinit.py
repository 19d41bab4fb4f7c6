"""Renderer of VM user-data: a ``#cloud-config`` that installs the model as a systemd service.

The release travels as ``bundle.tar.gz`` (the model's files under ``app/``, the mlserve runtime
under ``mlserve/``, ``requirements.txt``): embedded base64 in ``write_files`` by default, or
fetched from the target's ``bundle_url`` (then the tarball is written beside ``user-data`` for
you to upload there). Either way the install script checks its sha256 before unpacking. The
tarball is reproducible: sorted members, fixed owner and times, modes 0644/0755 (the user's
files: their shipped modes, never wider than the source's), gzip without a timestamp. It is
streamed into a scratch file with its sha256 computed on the way, so memory stays small
whatever the size of the model's files. Embedded user-data, though, is one string rendered in
memory, so a tarball over ``MAX_EMBEDDED_BUNDLE`` (16 MiB) is refused with the fix (set
``bundle_url``). Clouds take far less (AWS 16 KiB, Azure 64 KiB, GCP 256 KiB per metadata
value; a build warns beyond 16 KiB); only a NoCloud seed image takes more.

On the VM: the service user is created, python3 (+ venv) and the model's system packages are
installed, ``/opt/mlserve/<name>/install`` unpacks the bundle, builds the venv (the runtime's
dependencies pinned to the versions this mlserve runs with, then the model's requirements) and
enables ``mlserve-<name>.service``, whose ExecStart is ``/opt/mlserve/<name>/run``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import BinaryIO

from ..errors import InvalidInput
from ..render import Sourced, render
from .context import BuildContext, Spec
from .runtime import runtime_pins, runtime_sources

#: Largest user-data AWS EC2 accepts (GCP and Azure accept more); beyond it, use bundle_url.
EC2_USER_DATA_LIMIT = 16 * 1024
#: Largest tarball embedded in user-data (its base64 and the rendered user-data live in memory).
MAX_EMBEDDED_BUNDLE = 16 << 20
#: deflate's best case: no input larger than this many times the limit can compress below it.
_DEFLATE_MAX_RATIO = 1032


class _HashingWriter:
    """A write-only file that passes bytes on, hashing and counting them on the way."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _add(tar: tarfile.TarFile, name: str, size: int, mode: int, fileobj) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, fileobj)


def bundle_tarball(spec: Spec, dest: Path) -> tuple[str, int]:
    """Write the reproducible ``bundle.tar.gz`` of the release to ``dest`` (a new file),
    streaming every member; returns its sha256 and size."""
    members: dict[str, tuple] = {}
    for f in spec.bundle.files:
        members["app/" + f.path] = (f.size, f.mode, f.reader)
    for rel, source in runtime_sources():
        members[rel] = (source.stat().st_size, 0o644, lambda source=source: open(source, "rb"))
    requirements = spec.requirements_text().encode()
    members["requirements.txt"] = (len(requirements), 0o644, lambda: io.BytesIO(requirements))
    with open(dest, "xb") as raw:
        hashed = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashed, mtime=0,
                           compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(members):
                size, mode, opener = members[name]
                with opener() as fh:
                    _add(tar, name, size, mode, fh)
    return hashed.sha256.hexdigest(), hashed.size


def _too_large(spec: Spec, size: int) -> InvalidInput:
    name = spec.target_name
    return InvalidInput(f"the release's bundle.tar.gz is {size} bytes: too large to embed in "
                        f"user-data (at most {MAX_EMBEDDED_BUNDLE} bytes)",
                        where=f"targets.{name}.bundle_url",
                        fix=f"set targets.{name}.bundle_url to a URL the VM can fetch, and "
                            "upload the bundle.tar.gz that `mlserve build` then writes there")


def render_cloud_init(spec: Spec, ctx: BuildContext) -> None:
    m = spec.manifest
    url = spec.option("vm", "bundle_url")
    if not url and spec.bundle.total_size > MAX_EMBEDDED_BUNDLE * _DEFLATE_MAX_RATIO:
        raise _too_large(spec, spec.bundle.total_size)    # before compressing gigabytes
    tarball = ctx.scratch("bundle.tar.gz")
    digest, size = bundle_tarball(spec, tarball)
    if not url and size > MAX_EMBEDDED_BUNDLE:
        raise _too_large(spec, size)
    root = f"/opt/mlserve/{m.name}"
    located = spec.project.located   # labels values, so a quoting filter can name the field
    values = {
        "name": m.name,
        "entrypoint": Sourced.at(located, m.model.entrypoint, "model", "entrypoint"),
        "env": {key: Sourced.at(located, value, "env", key) for key, value in m.env.items()},
        "secrets": list(m.secrets), "concurrency": m.scaling.concurrency,
        "max_batch_size": m.scaling.max_batch_size, "max_batch_wait_ms": m.scaling.max_batch_wait_ms,
        "port": spec.option("vm", "port", 8080), "user": spec.option("vm", "user", "mlserve"),
        "root": root, "unit_name": f"mlserve-{m.name}.service",
        "bundle_url": Sourced.at(located, url or "", "targets", spec.target_name, "bundle_url"),
        "bundle_sha256": digest,
        "runtime_pins": runtime_pins(m.model.python),
        "packages": ["python3", "python3-venv", *m.model.system_packages],
    }
    values["run_script"] = render("cloud-init", "run.sh.j2", **values)
    values["install_script"] = render("cloud-init", "install.sh.j2", **values)
    values["unit"] = render("cloud-init", "unit.service.j2", **values)
    values["bundle_b64"] = "" if url else base64.b64encode(tarball.read_bytes()).decode("ascii")
    user_data = render("cloud-init", "user-data.j2", **values)
    spec.warn_private_files(ctx, f"the service user {values['user']!r} on the VM")
    ctx.text("user-data", user_data)
    if url:
        ctx.put("bundle.tar.gz", tarball)
        ctx.warnings.append(f"upload bundle.tar.gz to {url} before booting the VM "
                            "(the VM checks its sha256)")
    elif len(user_data.encode()) > EC2_USER_DATA_LIMIT:
        ctx.warnings.append(f"user-data is {len(user_data.encode())} bytes: AWS EC2 accepts "
                            f"{EC2_USER_DATA_LIMIT} at most; set targets.{spec.target_name}.bundle_url to "
                            "fetch the bundle instead of embedding it")
