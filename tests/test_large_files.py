"""Large model files: builds stream them, so memory stays far below the file's size.

A 300 MB sparse file (``truncate``: no disk used) in a project; ``mlserve build`` runs in a
child process whose peak resident memory (``RUSAGE_CHILDREN`` of a wrapper that runs only that
child) must stay under a third of the file's size. Before the tarball was streamed, the
cloud-init build held the file two to three times over (4.2 GB peak for a 2 GB file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.helpers import MLSERVE, run_cli
from tests.test_package_support import make_project

SIZE = 300 << 20
BOUND = SIZE // 3


def _peak_rss_of(*args: str) -> tuple[int, str]:
    """Run ``mlserve ARGS`` as the only child of a wrapper; its exit code plus stderr, and its
    peak RSS in bytes (Linux reports ru_maxrss in KiB)."""
    wrapper = ("import json, resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
               "print(json.dumps([done.returncode, done.stderr, peak]))\n")
    out = subprocess.run([sys.executable, "-c", wrapper, *MLSERVE, *args], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    code, err, peak = json.loads(out)
    assert code == 0, err
    return peak, err


@pytest.fixture(scope="module")
def big_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    manifest = make_project(root, targets={
        "vm": {"provider": "vm", "bundle_url": "https://example.com/bundle.tar.gz"},
        "local": {"provider": "local", "port": 8480}})
    with open(root / "weights.bin", "wb") as fh:
        fh.truncate(SIZE)
    return manifest


def test_cloud_init_streams_the_bundle(big_project, tmp_path):
    out = tmp_path / "ci"
    peak, _ = _peak_rss_of("build", "vm", "-f", str(big_project), "--format", "cloud-init",
                           "-o", str(out))
    assert peak < BOUND, f"peak RSS {peak >> 20} MiB for a {SIZE >> 20} MiB file"
    with tarfile.open(out / "bundle.tar.gz") as tar:
        member = tar.getmember("app/weights.bin")
        assert member.size == SIZE and member.mode == 0o644


def test_docker_context_copies_the_file_in_chunks(big_project, tmp_path):
    out = tmp_path / "docker"
    peak, _ = _peak_rss_of("build", "local", "-f", str(big_project), "--format", "docker",
                           "-o", str(out))
    assert peak < BOUND, f"peak RSS {peak >> 20} MiB for a {SIZE >> 20} MiB file"
    large = list((out / "large").iterdir())
    assert [p.stat().st_size for p in large] == [SIZE]


def test_a_bundle_too_large_to_embed_is_refused_with_the_fix(tmp_path, capsys):
    """Embedded user-data is one string in memory: beyond 16 MiB of tarball, fetch it instead."""
    manifest = make_project(tmp_path / "p", targets={"vm": {"provider": "vm"}})
    (tmp_path / "p" / "noise.bin").write_bytes(os.urandom((16 << 20) + 4096))
    done = run_cli(capsys, "build", "vm", "-f", str(manifest), "-o", str(tmp_path / "o"))
    assert done.code == 2, done.err
    first = done.err.splitlines()[0]
    assert "targets.vm.bundle_url" in first and "too large to embed" in first
    assert "set targets.vm.bundle_url" in done.err and "Traceback" not in done.err
    assert not (tmp_path / "o").exists()
    doc = yaml.safe_load(manifest.read_text())
    doc["targets"]["vm"]["bundle_url"] = "https://example.com/b.tar.gz"
    manifest.write_text(yaml.safe_dump(doc))
    done = run_cli(capsys, "build", "vm", "-f", str(manifest), "-o", str(tmp_path / "o"))
    assert done.code == 0, done.err
    assert (tmp_path / "o" / "bundle.tar.gz").stat().st_size > 16 << 20
