"""Projects for the SSH adapter tests: the ``echo`` model plus an ``ssh`` target (see ``make``)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def undeploy_afterwards(tmp_path):
    """Delete what a test deployed even when it failed half-way, so no model keeps running.
    (Autouse in every module that imports it.)"""
    yield
    manifest, state = tmp_path / "proj" / "mlserve.yaml", tmp_path / "state"
    if manifest.exists() and state.exists():
        from mlserve import service
        from mlserve.errors import MlserveError
        try:
            service.delete(manifest, "box", state)
        except MlserveError:
            pass


def make(root: Path, target: dict, *, smoke: bool = True, env: dict | None = None,
         name: str = "echo", model: str = "echo") -> Path:
    """Write ``root/proj`` (a model from this directory) with one target called ``box``;
    return the manifest. ``withreqs`` also gets its requirement's wheel in ``wheels/``."""
    project = root / "proj"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(HERE / model, project)
    spec = {"entrypoint": "model.py:Model", "python": "3.11"}
    if (project / "requirements.txt").exists():
        spec["requirements"] = "requirements.txt"
        tiny_wheel(project / "wheels")
    manifest = {
        "name": name,
        "model": spec,
        "scaling": {"concurrency": 4},
        "env": {"FACTOR": "2", **(env or {})},
        "smoke": [{"input": {"x": [1, 2]}, "expect": None}] if smoke else [],
        "targets": {"box": {"provider": "ssh", **target}},
    }
    path = project / "mlserve.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def tiny_wheel(dest: Path, answer: int = 42) -> Path:
    """Write ``mlsvtiny-1.0-py3-none-any.whl`` (one module, ``ANSWER``) by hand: no build tools."""
    import base64
    import hashlib
    import zipfile
    files = {"mlsvtiny/__init__.py": f"ANSWER = {answer}\n".encode(),
             "mlsvtiny-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: mlsvtiny\nVersion: 1.0\n",
             "mlsvtiny-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: mlserve-tests\n"
                                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
                     for name, data in files.items())
    files["mlsvtiny-1.0.dist-info/RECORD"] = (record + "mlsvtiny-1.0.dist-info/RECORD,,\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / "mlsvtiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            archive.writestr(info, data)
    return wheel


def set_version(manifest: Path, version: str) -> None:
    model = manifest.parent / "model.py"
    text = model.read_text()
    start = text.index('VERSION = "') + len('VERSION = "')
    model.write_text(text[:start] + version + text[text.index('"', start):])


def edit(manifest: Path, **changes) -> None:
    data = yaml.safe_load(manifest.read_text())
    for key, value in changes.items():
        data[key] = value
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_target(manifest: Path, **changes) -> None:
    data = yaml.safe_load(manifest.read_text())
    data["targets"]["box"].update(changes)
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))


def predict(url: str, x=(1, 2), timeout: float = 5) -> dict:
    req = urllib.request.Request(url + "/predict", data=json.dumps({"input": {"x": list(x)}}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())["output"]


def health(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=timeout) as resp:
        return json.loads(resp.read())


def answers(url: str) -> dict | None:
    """The model's output, or None while nothing answers."""
    try:
        return predict(url, timeout=2)
    except OSError:
        return None


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; return that."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def deploy_failing_load(manifest: Path, state: Path, url: str):
    """Redeploy ``manifest`` as v2 with a model whose ``load`` raises, polling ``url`` (v1)
    throughout; check the deploy failed with exit 1 and the log's tail while v1 answered every
    request; return the ``DeployError``."""
    from mlserve import service
    from mlserve.errors import DeployError
    with VersionPoller(url) as poller:
        edit(manifest, env={"FACTOR": "2", "FAIL_LOAD": "boom"})
        set_version(manifest, "v2")
        with pytest.raises(DeployError) as failed:
            service.deploy(manifest, "box", state)
    assert failed.value.exit_code == 1
    # The headline names the exception the remote model raised, not only that it exited.
    assert "failed to load: RuntimeError: load failed on purpose: boom" in failed.value.message
    assert "load failed on purpose: boom" in failed.value.details   # the remote log's tail
    assert poller.failures == [] and poller.versions == ["v1"]
    return failed.value


def target_for(host, base_dir, port: int, **more) -> dict:
    """An ``ssh`` target for one of the tests.infra sshd hosts."""
    return {"hosts": [f"{host.user}@{host.host}:{host.port}"], "identity_file": str(host.key_path),
            "known_hosts": str(host.known_hosts), "base_dir": str(base_dir), "port": port,
            "bind": "127.0.0.1", "health_timeout": 60, **more}


class VersionPoller:
    """Predicts every few ms in a thread; records the versions that answered and every failure."""

    def __init__(self, url: str) -> None:
        import threading
        self.url, self.versions, self.failures, self.ok = url, [], [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import time
        while not self._stop.is_set():
            try:
                version = predict(self.url, timeout=10)["version"]
                self.ok += 1
                if not self.versions or self.versions[-1] != version:
                    self.versions.append(version)
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(exc))
            time.sleep(0.005)

    def __enter__(self) -> "VersionPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)
