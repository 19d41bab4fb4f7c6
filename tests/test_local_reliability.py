"""The local target under kill -9, crashes and repeated deploys (issue 9: items 5, 8, 13, 14, 18).

Real CLI processes, real runtimes on loopback, real venv builds from a wheel in the project's own
tree (offline). ``mlserve deploy`` is killed with SIGKILL at each point of a switch; afterwards the
next commands must agree with what actually answers, and leave no process of the deployment
behind. Every process a test starts is found by its state directory in /proc and killed by PID
in the finaliser.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from mlserve.adapters.procs import find_runners
from mlserve.checks import load_failure
from tests.helpers import MLSERVE, kill_at_point, run_process
from tests.infra.net import free_port
from tests.ssh_models import make, target_for, tiny_wheel, wait_until

MODEL = """
import os, time


class Model:
    def load(self):
        self.factor = int(os.environ["FACTOR"])
        time.sleep(float(os.environ.get("LOAD_SECONDS", "0")))

    def predict(self, payload):
        return {"y": [v * self.factor for v in payload["x"]]}
"""


def _manifest(port: int, factor: int, *, wheel: str | None = None, keep: int = 5,
              load_seconds: float = 0) -> str:
    reqs = f"[./{wheel}]" if wheel else "[]"
    return (f"name: rel\nmodel:\n  entrypoint: model.py:Model\n  requirements: {reqs}\n"
            f"env:\n  FACTOR: \"{factor}\"\n  LOAD_SECONDS: \"{load_seconds}\"\n"
            f"smoke:\n  - input: {{x: [1]}}\n    expect: {{y: [{factor}]}}\n"
            f"targets:\n  local: {{provider: local, port: {port}, keep_releases: {keep}}}\n")


def _wheel(project: Path, version: str) -> str:
    """A wheel in its own directory of the project: a requirement line (and venv) per version."""
    return str(tiny_wheel(project / f"wheels-{version}").relative_to(project))


class Deployment:
    """A project directory, its state directory and its port; cleans up every process of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.project = tmp_path / "proj"
        self.project.mkdir()
        self.state = tmp_path / "state"
        self.port = free_port()
        self.args = ["-f", str(self.project), "--state", str(self.state)]
        (self.project / "model.py").write_text(MODEL)

    def write(self, factor: int, **kw) -> None:
        (self.project / "mlserve.yaml").write_text(_manifest(self.port, factor, **kw))

    def cli(self, *args: str, env: dict | None = None):
        return run_process(*args, *self.args, env=env)

    def deploy(self, env: dict | None = None) -> str:
        done = self.cli("deploy", "--json", env=env)
        assert done.code == 0, done.err
        return json.loads(done.out)["release"]

    def health(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("release")
        except OSError:
            return None

    @property
    def releases(self) -> Path:
        return self.state / "local" / "local" / "releases"

    def processes(self) -> dict[int, str]:
        """pid -> argv of every process whose argv names the state directory (ours only)."""
        found = {}
        for entry in os.listdir("/proc"):
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if entry.isdigit() and str(self.state) + "/" in argv and int(entry) != os.getpid():
                found[int(entry)] = argv.replace("\0", " ")
        return found

    def kill_all(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def dep(tmp_path):
    deployment = Deployment(tmp_path)
    yield deployment
    deployment.kill_all()


def _new_release_dir(dep: Deployment, old: str) -> Path | None:
    if not dep.releases.is_dir():
        return None
    return next((p for p in dep.releases.iterdir() if p.name != old), None)


def _log_has(path: Path | None, text: bytes, offset: int = 0) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return text in fh.read()
    except (OSError, TypeError):
        return False


def _venv_building(dep: Deployment, old: str) -> bool:
    """pip has started writing its log into a build directory."""
    venvs = dep.state / "venvs"
    return venvs.is_dir() and any(p.name.endswith(".log") and p.stat().st_size > 0
                                  for p in venvs.iterdir())


def _loading(dep: Deployment, old: str) -> bool:
    rel = _new_release_dir(dep, old)
    return rel is not None and _log_has(rel / "run.json", b'"runtime"')


def _activated(dep: Deployment, old: str) -> bool:
    rel = _new_release_dir(dep, old)
    return rel is not None and _log_has(rel / "runtime.log", b"activated on")


def _old_draining(dep: Deployment, old: str) -> bool:
    log = dep.releases / old / "runtime.log"
    return _log_has(log, b"Shutting down") or _log_has(log, b"stopped (")


KILL_POINTS = [
    # (name, when to kill, does the killed release need a venv, expected release answering)
    ("while the venv builds", _venv_building, True, "old"),
    ("during load, before health", _loading, False, "old"),
    ("right after 'activated on'", _activated, False, "new"),
    ("after the old release got SIGTERM", _old_draining, False, "new"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,when,venv,answering", KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_kill_minus_nine_of_deploy_leaves_nothing_unknown(dep, name, when, venv, answering):
    dep.write(1)
    old = dep.deploy()
    wheel = _wheel(dep.project, "0.1") if venv else None
    dep.write(2, wheel=wheel, load_seconds=0.3)
    kill_at_point([*MLSERVE, "deploy", *dep.args], lambda: when(dep, old), name, 30)
    if venv:                                  # killed mid-build: the build directory is there
        assert [p for p in (dep.state / "venvs").iterdir() if ".tmp-" in p.name]
    answers = dep.health()
    new = _new_release_dir(dep, old)
    assert answers == (old if answering == "old" else new.name)

    # (a) status names the release that /health answers with
    status = json.loads(dep.cli("status", "--json").out)
    assert status["release"] == answers

    # (b) the next deploy of new code succeeds, serves, and leaves only its own processes
    dep.write(3, wheel=_wheel(dep.project, "0.3") if venv else None)
    third = dep.deploy()
    assert dep.health() == third
    left = {pid: argv for pid, argv in dep.processes().items() if f"/releases/{third}" not in argv}
    assert left == {}, left
    journal = json.loads(dep.cli("status", "--json").out)
    assert journal["release"] == third and "pending" not in [r["outcome"] for r in journal["releases"]]
    if venv:                                  # the interrupted build is gone, never reused
        assert not [p for p in (dep.state / "venvs").iterdir() if ".tmp-" in p.name]

    # (c) delete leaves no process of the deployment
    assert dep.cli("delete", "--yes").code == 0
    assert dep.processes() == {}


@pytest.mark.slow
def test_a_crashed_runtime_is_restarted_and_delete_stops_it(dep):
    dep.write(1)
    release = dep.deploy(env={"MLSV_DEPLOYER_CREDENTIAL": "c-0123456789"})
    run = json.loads((dep.releases / release / "run.json").read_text())
    runtime = run["runtime"][0]
    # the long-lived supervisor keeps none of the deployer's own variables
    assert b"c-0123456789" not in Path(f"/proc/{run['supervisor'][0]}/environ").read_bytes()
    os.kill(runtime, signal.SIGKILL)
    wait_until(lambda: dep.health() == release and
          json.loads((dep.releases / release / "run.json").read_text())["runtime"][0] != runtime,
          timeout=15, what="the supervisor to restart the runtime")
    status = json.loads(dep.cli("status", "--json").out)
    assert status["status"] == "READY" and status["release"] == release
    # the log is private, and so is its directory (item 5)
    log = dep.releases / release / "runtime.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((dep.releases / release).stat().st_mode) == 0o700
    assert b"restarting" in log.read_bytes()
    assert dep.cli("delete", "--yes").code == 0
    assert dep.processes() == {}


@pytest.mark.slow
def test_disk_stays_bounded_across_requirement_edits(dep):
    for i, version in enumerate(("0.1", "0.2")):
        dep.write(i + 1, wheel=_wheel(dep.project, version), keep=1)
        last = dep.deploy()
    (dep.project / "model.py").write_text(MODEL + "\nraise RuntimeError('broken')\n")
    assert dep.cli("deploy").code == 1
    (dep.project / "model.py").write_text(MODEL)
    dep.write(9, wheel=_wheel(dep.project, "0.2"), keep=1)
    last = dep.deploy()
    assert [p.name for p in dep.releases.iterdir()] == [last]
    venvs = sorted(p.name for p in (dep.state / "venvs").iterdir() if not p.name.startswith("."))
    key = (dep.releases / last / "venv").read_text()
    assert venvs == [key, f"{key}.log"]
    assert dep.cli("delete", "--yes").code == 0
    assert [p for p in (dep.state / "venvs").iterdir() if not p.name.startswith(".")] == []


@pytest.mark.slow
def test_a_copy_left_by_a_killed_deploy_is_removed_not_kept(dep):
    dep.write(1)
    first = dep.deploy()
    dep.write(2)
    dep.deploy()
    shutil.rmtree(dep.releases / first / "app")            # as if killed while copying
    (dep.releases / first / "app.tmp-4242").mkdir()
    (dep.releases / first / "app.tmp-4242" / "half.py").write_text("x = 1\n")
    dep.write(1)
    assert dep.deploy() == first and dep.health() == first
    assert sorted(p.name for p in (dep.releases / first).iterdir() if p.name.startswith("app")) == ["app"]


@pytest.mark.slow
def test_a_load_failure_headline_names_the_exception(dep):
    dep.write(1)
    (dep.project / "model.py").write_text("import mlsv_module_nobody_has\n" + MODEL)
    failed = dep.cli("deploy")
    assert failed.code == 1
    headline = next(line for line in failed.err.splitlines() if line.startswith("error: "))
    assert "failed to load: ModuleNotFoundError: No module named 'mlsv_module_nobody_has'" in headline
    assert dep.processes() == {}


# -- generated: what a log says, what a process is ---------------------------------------------

_words = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
_names = st.builds(lambda head, tail: head.capitalize() + tail, _words,
                   st.sampled_from(["Error", "Exception", "Exit", ""]))
_messages = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                    max_size=400).map(str.strip)
_noise = st.lists(st.one_of(
    _messages.map(lambda m: f"2026-12-01T05:00:00Z mlserve.runtime info: {m}"),
    _messages.map(lambda m: f"    {m}"),
    _words.map(lambda w: f"--- mlserve: starting {w} at Tue Dec  1 05:00:00 2026 ---")), max_size=6)


@given(before=_noise, name=_names, message=_messages, after=_noise, nested=st.booleans())
def test_load_failure_is_the_last_tracebacks_exception(before, name, message, after, nested):
    frames = ['  File "/app/model.py", line 3, in <module>', "    import torch"]
    first = ["Traceback (most recent call last):", *frames, "KeyError: 'x'", "",
             "During handling of the above exception, another exception occurred:", ""]
    log = [*before, *(first if nested else []), "Traceback (most recent call last):", *frames,
           f"{name}: {message}" if message else name, *after]
    expected = (f"{name}: {message}" if message else name)
    expected = expected if len(expected) <= 300 else expected[:297] + "..."
    assert load_failure("\n".join(log)) == expected


@given(_noise)
def test_a_log_without_a_traceback_has_no_headline(noise):
    assert load_failure("\n".join(noise)) is None


def _argv_cases(releases: Path) -> list[tuple[list[str], str | None]]:
    other = releases.parent.parent / "other" / "releases"
    return [
        (["-m", "mlserve.runtime", "--app-dir", f"{releases}/r-1/app", "--release", "r-1"], "r-1"),
        (["-m", "mlserve.runtime", "--app-dir", f"{releases}/r-2/app/", "--release", "r-2"], "r-2"),
        (["-m", "mlserve.adapters.supervisor", f"{releases}/r-3", "nonce"], "r-3"),
        (["helper.pyz", "/base", "supervise", f"{releases}/r-4", "nonce"], "r-4"),
        (["-m", "mlserve.runtime", "--app-dir", f"{other}/r-5/app", "--release", "r-5"], None),
        (["-m", "mlserve.runtime", "--app-dir", f"{releases}x/r-6/app", "--release", "r-6"], None),
        (["-m", "mlserve.runtime", "--app-dir", f"{releases}/r-7/app"], None),
        (["tail", "-f", f"{releases}/r-8/runtime.log"], None),
        (["-m", "mlserve.adapters.supervisor", f"{releases}/r-9/app/deep", "n"], None),
        (["--app-dir", f"{releases}", "--release", "r-10"], None),
    ]


@pytest.mark.slow
def test_find_runners_knows_exactly_its_own_processes(tmp_path):
    """Real processes with crafted argv: only this deployment's runtimes and supervisors."""
    releases = tmp_path / "state" / "local" / "t" / "releases"
    cases = _argv_cases(releases)
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])
             for argv, _ in cases]
    try:
        wait_until(lambda: all(Path(f"/proc/{p.pid}/cmdline").read_bytes().count(b"\0") > 3
                          for p in procs), what="the processes to start")
        found = {r.ref.pid: r.release for r in find_runners(releases)}
        expected = {p.pid: rid for p, (_, rid) in zip(procs, cases) if rid}
        assert found == expected
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.slow
def test_runtime_logs_on_an_ssh_host_are_private(sshd_host, tmp_path):
    from mlserve import service
    remote = tmp_path / "remote"
    manifest = make(tmp_path, target_for(sshd_host, remote, free_port()))
    try:
        service.deploy(manifest, "box", tmp_path / "state")
        [log] = remote.glob("deployments/*/*/releases/*/runtime.log")
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert stat.S_IMODE(remote.stat().st_mode) == 0o700
    finally:
        service.delete(manifest, "box", tmp_path / "state")
