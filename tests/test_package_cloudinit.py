"""The cloud-init format, proven by `cloud-init schema` and by running what the VM would run.

The user-data's ``write_files`` are written under a temporary root (their absolute paths
re-rooted), its ``runcmd`` (the install script) runs there for real with ``systemctl`` replaced
by a recorder, and the unit's ``ExecStart`` then serves the smoke cases over HTTP, with the
manifest's hostile env values (newlines included) reaching the model exactly.
"""

from __future__ import annotations

import base64
import configparser
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.net import free_port
from tests.infra.procs import start_process, stop_process
from tests.test_package_support import (
    HOSTILE, NEWLINES, SECRET_NAME, SECRET_VALUE, SMOKE, build_to, http_json, make_project,
)


def _project(root: Path, port: int, **target) -> Path:
    return make_project(root, env={**HOSTILE, **NEWLINES}, secrets=[SECRET_NAME],
                        targets={"vm": {"provider": "vm", "port": port, **target}},
                        files={"helpers/data.txt": "x\n"})


@pytest.mark.parametrize("mode", ["embedded", "bundle_url", "s3"])
def test_cloud_init_schema_accepts_the_user_data(cloud_init_schema, tmp_path, mode):
    target = {"embedded": {}, "bundle_url": {"bundle_url": "https://example.com/b 'x'.tar.gz"},
              "s3": {"bundle_url": "s3://bucket/hostile.tar.gz"}}[mode]
    result = build_to(_project(tmp_path / "p", 8080, **target), "cloud-init", tmp_path / "o")
    user_data = tmp_path / "o" / "user-data"
    assert user_data.read_text().startswith("#cloud-config\n")
    done = cloud_init_schema.validate(user_data)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = yaml.safe_load(user_data.read_text())
    assert doc["users"][1]["name"] == "mlserve" and doc["users"][1]["system"] is True
    assert doc["packages"][:2] == ["python3", "python3-venv"]
    assert ("bundle.tar.gz" in result.files) == (mode != "embedded")
    install = next(f["content"] for f in doc["write_files"] if f["path"].endswith("/install"))
    subprocess.run(["bash", "-n"], input=install, text=True, check=True)
    if mode != "embedded":
        assert _url_in(install) == target["bundle_url"]


def _url_in(script: str) -> str:
    """The URL the install script fetches, as bash reads its ``url=`` line."""
    line = next(l for l in script.splitlines() if l.startswith("url="))
    return subprocess.run(["bash", "-c", line + '\nprintf %s "$url"'], capture_output=True,
                          text=True, check=True).stdout


def _write_files(doc: dict, root: Path) -> None:
    for item in doc["write_files"]:
        path = root / item["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        content = item["content"]
        path.write_bytes(base64.b64decode(content) if item.get("encoding") == "b64"
                         else content.encode())
        path.chmod(int(item.get("permissions", "0644"), 8))


@pytest.mark.slow
def test_runcmd_installs_and_the_unit_serves_the_model(tmp_path):
    port = free_port()
    build_to(_project(tmp_path / "p", port), "cloud-init", tmp_path / "o")
    doc = yaml.safe_load((tmp_path / "o" / "user-data").read_text())
    vm = tmp_path / "vm"
    _write_files(doc, vm)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.calls\n')
    (stubs / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    for command in doc["runcmd"]:
        argv = [str(vm / command[0].lstrip("/")), *command[1:]]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "systemctl.calls").read_text().splitlines() == [
        "daemon-reload", "enable --now mlserve-hostile.service"]

    unit = configparser.ConfigParser(interpolation=None)
    unit.read(vm / "etc/systemd/system/mlserve-hostile.service")
    assert unit["Service"]["User"] == "mlserve"
    exec_start = vm / unit["Service"]["ExecStart"].lstrip("/")
    log = tmp_path / "runtime.log"
    proc = start_process([str(exec_start)], log, lambda: http_json(
        "GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] == 200, "the unit's ExecStart",
        timeout=60, env={"PATH": os.environ["PATH"], SECRET_NAME: SECRET_VALUE})
    try:
        base = f"http://127.0.0.1:{port}"
        for case in SMOKE:
            assert http_json("POST", base + "/predict", {"input": case["input"]}) == \
                (200, {"output": case["expect"]})
        names = [*HOSTILE, *NEWLINES, SECRET_NAME]
        status, body = http_json("POST", base + "/predict", {"input": {"env": names}})
        assert status == 200
        assert body["output"]["env"] == {**HOSTILE, **NEWLINES, SECRET_NAME: SECRET_VALUE}
    finally:
        stop_process(proc)
    assert SECRET_VALUE not in log.read_text(errors="replace")
    assert not os.path.exists("/tmp/mlserve-pwned")
