"""The ssh provider under kill -9 of ``mlserve deploy`` (issue 9 item 8), against a real sshd.

``mlserve deploy`` (a CLI subprocess) is killed with SIGKILL at each point of a remote deploy:
while uploading, while the new release loads on the host, right after the host switched, and
after the old release was told to drain. Afterwards: ``status --json`` names, per host, the
release ``/health`` answers with; the next deploy of new code succeeds, serves, and leaves no
process of the deployment but the serving one; ``delete`` leaves no process and nothing under
base_dir. The sshd fixture runs on this machine, so the host's processes are read from /proc
here; every one whose argv names the test's base_dir is killed by pid in the finaliser.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from mlserve.adapters.procs import read_json
from tests.helpers import MLSERVE, kill_at_point, run_process
from tests.infra.cleanup import pids_mentioning
from tests.infra.net import free_port
from tests.infra.procs import kill_pids
from tests.ssh_models import edit, health, make, target_for, wait_until
from tests.ssh_models import undeploy_afterwards  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.slow

MODEL = '''
import os, time

VERSION = "v1"


class Model:
    def load(self):
        time.sleep(float(os.environ.get("LOAD_SECONDS", "0")))

    def predict(self, payload):
        return {"version": VERSION}
'''


class Remote:
    """One project deployed over SSH to ``base`` (on this machine) and the processes it runs."""

    def __init__(self, tmp_path: Path, hosts: list, port: int, target: dict) -> None:
        self.base = Path(target["base_dir"])
        self.manifest = make(tmp_path, target, smoke=False)
        (self.manifest.parent / "model.py").write_text(MODEL)
        self.args = ["-f", str(self.manifest), "--state", str(tmp_path / "state")]
        self.urls = [f"http://{h.host}:{port}" for h in hosts]
        self.version = 1

    def next_code(self, load_seconds: float = 0.0, big: int = 0) -> None:
        """New code (a new release id), loading for ``load_seconds``; ``big`` bytes of data."""
        self.version += 1
        model = self.manifest.parent / "model.py"
        model.write_text(MODEL.replace('"v1"', f'"v{self.version}"'))
        edit(self.manifest, env={"LOAD_SECONDS": str(load_seconds)})
        data = self.manifest.parent / "data.bin"
        data.unlink(missing_ok=True)
        if big:
            data.write_bytes(os.urandom(big))

    def cli(self, *args: str):
        return run_process(*args, *self.args)

    def deploy(self) -> str:
        done = self.cli("deploy", "--json")
        assert done.code == 0, done.err
        return json.loads(done.out)["release"]

    def answering(self, url: str) -> str | None:
        try:
            return health(url, timeout=2).get("release")
        except OSError:
            return None

    def releases(self) -> Path:
        """The first host's releases (hosts in a fleet share this base_dir, one dir each)."""
        return sorted(self.base.glob("deployments/*/*/releases"))[0]

    def processes(self) -> dict[int, str]:
        """pid -> argv of every live process whose argv names base_dir: helpers, setsid
        supervisors (they carry the helper's argv) and runtimes."""
        found = {}
        for pid in pids_mentioning(str(self.base)):
            with contextlib.suppress(OSError, IndexError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    found[pid] = argv.replace("\0", " ")
        return found

    def kill_all(self) -> None:
        kill_pids(list(self.processes()))


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _strays(remote: Remote, serving: str) -> dict[int, str]:
    """Processes of the deployment other than ``serving``'s runtime and its supervisor."""
    procs = remote.processes()
    runtimes = [pid for pid, argv in procs.items() if f"/releases/{serving}/app" in argv]
    keep = set(runtimes) | {_parent(pid) for pid in runtimes if pid in procs}
    return {pid: argv[:160] for pid, argv in procs.items() if pid not in keep}


def _log_has(path: Path, text: bytes) -> bool:
    try:
        return text in path.read_bytes()
    except OSError:
        return False


def _new(remote: Remote, old: str) -> Path | None:
    try:
        return next((p for p in remote.releases().iterdir() if p.name != old), None)
    except (OSError, StopIteration):
        return None


def _uploading(remote: Remote, old: str) -> bool:
    partial = remote.base / "objects" / "partial"
    return any(p.stat().st_size > 0 for p in partial.iterdir()) if partial.is_dir() else False


def _loading(remote: Remote, old: str) -> bool:
    new = _new(remote, old)
    return new is not None and bool(read_json(new / "run.json").get("runtime"))


def _switched(remote: Remote, old: str) -> bool:
    new = _new(remote, old)
    return new is not None and _log_has(new / "runtime.log", b"activated on")


def _draining(remote: Remote, old: str) -> bool:
    log = remote.releases() / old / "runtime.log"
    return _log_has(log, b"Shutting down") or _log_has(log, b"stopped (")


KILL_POINTS = [
    # (name, when to kill, seconds the new release loads, bytes of data, kill the host's helper
    #  too (nothing on the host finishes or undoes what it was doing), which release answers)
    ("while uploading", _uploading, 0.0, 40 << 20, False, "old"),
    ("during the remote load", _loading, 2.0, 0, False, "old"),
    ("during the remote load, helper killed too", _loading, 2.0, 0, True, "old"),
    ("right after the host switched", _switched, 0.0, 0, False, "new"),
    ("right after the switch, helper killed too", _switched, 0.0, 0, True, "either"),
    ("after the old release was told to drain", _draining, 0.0, 0, False, "new"),
]


def _helpers(remote: Remote) -> list[int]:
    """The helper processes serving SSH sessions: argv names base_dir and ``serve``, and they
    are neither a runtime nor a supervisor a release recorded."""
    supervisors = {read_json(p).get("supervisor", [0])[0] for p in remote.base.glob(
        "deployments/*/*/releases/*/run.json")}
    return [pid for pid, argv in remote.processes().items()
            if argv.endswith(" serve ") and "--app-dir" not in argv and pid not in supervisors]


@pytest.fixture
def remote_for(tmp_path):
    made = []

    def build(hosts: list, target: dict | None = None) -> Remote:
        port = free_port()
        target = {**target_for(hosts[0], tmp_path / "remote", port, health_timeout=30),
                  **(target or {})}
        made.append(Remote(tmp_path, hosts, port, target))
        return made[-1]
    yield build
    for remote in made:
        remote.kill_all()


def _kill_deploy_at(remote: Remote, when, name: str, old: str, helper_too: bool) -> None:
    def helpers():
        for pid in _helpers(remote) if helper_too else ():
            os.kill(pid, signal.SIGKILL)
    kill_at_point([*MLSERVE, "deploy", *remote.args], lambda: when(remote, old), name, 60, helpers)


def _check_after_kill(remote: Remote, old: str, expected: list[str | set]) -> None:
    """(a) status names, per host, what /health answers (``expected``: a release per host, or
    the set of releases that may answer while two listen); (b) the next deploy serves alone;
    (c) delete leaves nothing."""
    for url, want in zip(remote.urls, expected):
        if isinstance(want, str):       # the host's helper finishes the switch it was doing
            wait_until(lambda: remote.answering(url) == want, 15, f"{want} at {url}")
    status = json.loads(remote.cli("status", "--json").out)
    rows = status["extra"]["hosts"]
    for row, url, want in zip(rows, remote.urls, expected):
        if isinstance(want, str):
            assert row["release"] == remote.answering(url) == want, rows
            assert row.get("journal_differs", False) == (want != old), rows   # flagged
        else:                           # SO_REUSEPORT: each connection may reach either
            assert row["release"] in want and remote.answering(url) in want, rows

    remote.next_code()
    third = remote.deploy()
    assert [remote.answering(u) for u in remote.urls] == [third] * len(remote.urls)
    wait_until(lambda: not _strays(remote, third), 15, "only the serving release's processes")
    history = json.loads(remote.cli("status", "--json").out)["releases"]
    assert "pending" not in [h["outcome"] for h in history], history
    served = {h["release"] for h in history if h["outcome"] in ("serving", "superseded")}
    if len(set(map(str, expected))) == 1 and isinstance(expected[0], str):
        assert expected[0] in served, history   # what every host served is in the journal

    done = remote.cli("delete", "--yes")
    assert done.code == 0, done.err
    wait_until(lambda: not remote.processes(), 15, "no process of the deployment")
    assert not remote.base.exists() or not list(remote.base.glob("deployments/*")), \
        sorted(map(str, remote.base.rglob("*")))[:20]


@pytest.mark.parametrize("name,when,load,big,helper_too,answers", KILL_POINTS,
                         ids=[k[0] for k in KILL_POINTS])
def test_kill_minus_nine_of_an_ssh_deploy_leaves_nothing_unknown(sshd_host, remote_for, name, when,
                                                                 load, big, helper_too, answers):
    remote = remote_for([sshd_host])
    old = remote.deploy()
    remote.next_code(load_seconds=load, big=big)
    _kill_deploy_at(remote, when, name, old, helper_too)
    new = getattr(_new(remote, old), "name", None)      # none yet while uploading
    if helper_too:                  # left running: the next command's reconciliation finds it
        assert _strays(remote, old)
    elif answers == "old":          # the host's helper saw its client go and stopped what it started
        wait_until(lambda: not _strays(remote, old), 10, "the unswitched release stopped")
    _check_after_kill(remote, old, [{"old": old, "new": new, "either": {old, new}}[answers]])


@pytest.mark.root
def test_kill_minus_nine_mid_rollout_over_a_fleet(ssh_fleet, remote_for, tmp_path):
    """Killed right after the first host of a fleet switched: each host's status names its own
    release; the next deploy brings every host to the new code, alone."""
    hosts = list(ssh_fleet)[:2]
    remote = remote_for(hosts, {"hosts": [f"{h.user}@{h.host}" for h in hosts], "bind": "0.0.0.0",
                                "identity_file": str(ssh_fleet.key_path), "max_unavailable": 1,
                                "known_hosts": str(ssh_fleet.known_hosts)})
    remote.urls = [f"http://{h.host}:{remote.urls[0].rsplit(':', 1)[1]}" for h in hosts]
    old = remote.deploy()
    remote.next_code()
    _kill_deploy_at(remote, _switched, "first host switched", old, False)
    new = _new(remote, old).name
    # The kill lands once the first host logs its switch; the deployer may already have asked the
    # second host to switch by then (it does as soon as the first answers), and on a loaded machine
    # often has: that host then serves either release, and status must name the one it serves.
    _check_after_kill(remote, old, [new, {old, new}])
