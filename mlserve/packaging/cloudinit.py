"""Renderer of VM user-data: a ``#cloud-config`` that installs the model as a systemd service.

The release travels as ``bundle.tar.gz`` (the model's files under ``app/``, the mlserve runtime
under ``mlserve/``, ``requirements.txt``): embedded base64 in ``write_files`` by default, or
fetched from the target's ``bundle_url`` (then the tarball is written beside ``user-data`` for
you to upload there). Either way the install script checks its sha256 before unpacking. The
tarball is reproducible: sorted members, fixed owner, modes and times, gzip without a timestamp.

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

from ..render import render
from .context import BuildContext, Spec
from .runtime import runtime_pins, runtime_sources

#: Largest user-data AWS EC2 accepts (GCP and Azure accept more); beyond it, use bundle_url.
EC2_USER_DATA_LIMIT = 16 * 1024


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o755 if executable else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def bundle_tarball(spec: Spec) -> bytes:
    """The reproducible ``bundle.tar.gz`` of the release."""
    members: dict[str, tuple[bytes, bool]] = {}
    for f in spec.bundle.files:
        members["app/" + f.path] = (f.source.read_bytes(), f.executable)
    for rel, source in runtime_sources():
        members[rel] = (source.read_bytes(), False)
    members["requirements.txt"] = (spec.requirements_text().encode(), False)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            _add(tar, name, *members[name])
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def render_cloud_init(spec: Spec, ctx: BuildContext) -> None:
    m = spec.manifest
    tarball = bundle_tarball(spec)
    url = spec.option("vm", "bundle_url")
    root = f"/opt/mlserve/{m.name}"
    values = {
        "name": m.name, "entrypoint": m.model.entrypoint, "env": dict(m.env),
        "secrets": list(m.secrets), "concurrency": m.scaling.concurrency,
        "port": spec.option("vm", "port", 8080), "user": spec.option("vm", "user", "mlserve"),
        "root": root, "unit_name": f"mlserve-{m.name}.service", "bundle_url": url or "",
        "bundle_sha256": hashlib.sha256(tarball).hexdigest(),
        "runtime_pins": runtime_pins(m.model.python),
        "packages": ["python3", "python3-venv", *m.model.system_packages],
    }
    values["run_script"] = render("cloud-init", "run.sh.j2", **values)
    values["install_script"] = render("cloud-init", "install.sh.j2", **values)
    values["unit"] = render("cloud-init", "unit.service.j2", **values)
    values["bundle_b64"] = "" if url else base64.b64encode(tarball).decode("ascii")
    user_data = render("cloud-init", "user-data.j2", **values)
    ctx.text("user-data", user_data)
    if url:
        ctx.data("bundle.tar.gz", tarball)
        ctx.warnings.append(f"upload bundle.tar.gz to {url} before booting the VM "
                            "(the VM checks its sha256)")
    elif len(user_data.encode()) > EC2_USER_DATA_LIMIT:
        ctx.warnings.append(f"user-data is {len(user_data.encode())} bytes: AWS EC2 accepts "
                            f"{EC2_USER_DATA_LIMIT} at most; set targets.<name>.bundle_url to "
                            "fetch the bundle instead of embedding it")
