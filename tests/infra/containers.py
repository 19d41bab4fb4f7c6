"""A private Docker engine, a private registry and a local Python base image.

Fixtures: ``dockerd`` (root), ``registry``, ``base_image`` (root). Nothing can be pulled from
a hub on these machines, so ``base_image`` imports a debootstrapped Debian with python3
(built and cached by ``.ci/build-base-image.sh``) into the private engine.

The engine runs with ``--bridge=none``: containers have no bridge network and ``-p`` does
nothing. Run containers (and builds) with ``network_mode="host"`` / ``--network host``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.policy import require_module, require_root, require_tool
from tests.infra.procs import (
    ComponentError, new_workdir, start_on_free_port, start_process, stop_process, unmount_under,
)

REPO = Path(__file__).resolve().parents[2]
BUILD_BASE_IMAGE = REPO / ".ci" / "build-base-image.sh"
BASE_IMAGE_REPOSITORY = "mlserve-test/python"
BASE_IMAGE_TAG = "3.11-bookworm"  # bookworm's python3 is 3.11; checked when the image is imported


@dataclass
class DockerEngine:
    """A running private dockerd. Use ``host`` as DOCKER_HOST (``env()``), or ``client()``."""

    host: str  # unix:///tmp/mlsv-dockerd-<pid>-XXXX/docker.sock
    socket_path: Path
    data_root: Path
    exec_root: Path
    pid: int
    network_mode: str = "host"  # no bridge: run containers and builds with network host
    notes: str = ("dockerd runs with --bridge=none --iptables=false: there is no bridge network "
                  "and -p publishes nothing; use network_mode='host' (--network host) for "
                  "containers and builds; no image can be pulled, start FROM base_image")
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """Environment entries that point the docker CLI/SDK at this engine."""
        return {"DOCKER_HOST": self.host}

    def client(self, timeout: int = 120):
        """A docker SDK client for this engine (``pip install docker``)."""
        import docker  # lazy: only container tests need the SDK

        return docker.DockerClient(base_url=self.host, timeout=timeout)


@dataclass
class Registry:
    """A running private registry (plain HTTP on loopback, so no TLS setup is needed)."""

    address: str  # "127.0.0.1:PORT": prefix image names with it to push
    url: str  # "http://127.0.0.1:PORT"
    root: Path  # storage directory
    pid: int

    def __str__(self) -> str:
        return self.address


@dataclass
class BaseImage:
    """The local Python base image inside ``dockerd`` (use ``ref`` in ``FROM``)."""

    ref: str  # mlserve-test/python:3.11-bookworm
    tarball: Path  # cached rootfs the image was imported from
    python_version: str  # as printed by python3 inside a container, e.g. "3.11.2"


def docker_ping(socket_path: Path) -> bool:
    """True when the engine answers ``GET /_ping`` with OK on its unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        sock.connect(str(socket_path))
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        reply = sock.recv(4096)
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerEngine]:
    """A private dockerd (own socket, data-root, exec-root, pidfile; no bridge, no iptables).
    Needs root: skips locally, fails under CI."""
    require_root("dockerd")
    binary = require_tool("dockerd", "dockerd", "docker.io")
    workdir = new_workdir("dockerd")
    sock = workdir / "docker.sock"
    (workdir / "daemon.json").write_text("{}\n")  # ignore /etc/docker/daemon.json
    argv = [
        binary, "--host", f"unix://{sock}", "--data-root", str(workdir / "data"),
        "--exec-root", str(workdir / "exec"), "--pidfile", str(workdir / "docker.pid"),
        "--config-file", str(workdir / "daemon.json"), "--bridge=none", "--iptables=false",
        "--ip6tables=false", "--ip-masq=false", "--log-level=warn",
    ]
    proc = None
    try:
        proc = start_process(argv, workdir / "dockerd.log", lambda: docker_ping(sock),
                             "dockerd", timeout=60)
        yield DockerEngine(f"unix://{sock}", sock, workdir / "data", workdir / "exec",
                           proc.pid, proc=proc)
    finally:
        if proc is not None:
            stop_process(proc, timeout=30)
        unmount_under(workdir)  # EXEC/netns/default, overlay mounts of killed containers
        shutil.rmtree(workdir, ignore_errors=True)


def registry_ready(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v2/", timeout=1) as reply:
        return reply.status == 200


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A private Docker registry (Debian ``docker-registry``) on 127.0.0.1:<free port>."""
    binary = require_tool("registry", "docker-registry", "docker-registry")
    workdir = new_workdir("registry")
    proc = None
    try:
        def start(port: int):
            config = workdir / "config.yml"
            config.write_text(
                "version: 0.1\nlog:\n  level: warn\n"
                f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
                "  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{port}\n"
            )
            return start_process([binary, "serve", str(config)], workdir / "registry.log",
                                 lambda: registry_ready(f"http://127.0.0.1:{port}"),
                                 "docker-registry")
        proc, port = start_on_free_port(start)
        address = f"127.0.0.1:{port}"
        yield Registry(address, f"http://{address}", workdir / "data", proc.pid)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def rootfs_tarball(component: str, flavour: str = "python") -> Path:
    """A cached rootfs tarball of ``flavour``, built by .ci/build-base-image.sh when missing
    (~1 min); ``component`` names the fixture that needs it in a missing-tool message."""
    require_tool(component, "debootstrap", "debootstrap")
    done = subprocess.run(["bash", str(BUILD_BASE_IMAGE), "--flavour", flavour],
                          capture_output=True, text=True)
    if done.returncode:
        raise ComponentError(f"{BUILD_BASE_IMAGE} --flavour {flavour} failed:\n"
                             f"{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def base_image(dockerd: DockerEngine) -> BaseImage:
    """``mlserve-test/python:3.11-bookworm`` imported into ``dockerd``; python3 is checked by
    running it in a container (network host)."""
    require_root("base_image")
    require_module("base_image", "docker", "docker")
    tarball = rootfs_tarball("base_image")
    client = dockerd.client()
    key = tarball.stem.rsplit("-", 1)[-1]
    client.api.import_image_from_file(
        str(tarball), repository=BASE_IMAGE_REPOSITORY, tag=BASE_IMAGE_TAG,
        changes=[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"LABEL org.mlserve.test.base-image-key={key}",
            'CMD ["python3"]',
        ],
    )
    ref = f"{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}"
    out = client.containers.run(
        ref, ["python3", "-c", "import platform, venv, ensurepip; print(platform.python_version())"],
        network_mode="host", remove=True,
    )
    version = out.decode().strip()
    if not version.startswith("3.11"):
        raise ComponentError(f"{ref} runs python {version}, its tag says 3.11")
    return BaseImage(ref, tarball, version)

