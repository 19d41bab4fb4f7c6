"""The provider protocol (issue 8): the phases runner, ``observe``, ``delete`` without a journal,
read paths that write nothing.

The runner is driven with small real steps over real files (one directory per step: ``current``
names the release serving there, ``new`` is a prepared release, ``old`` one waiting to drain), as
a table of failures at each phase and position plus generated runs checked against invariants.
The local target is driven through the real CLI and real processes; the ssh target against the
real sshd fixture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from mlserve.adapters import phases
from mlserve.errors import DeployError
from tests.helpers import EXAMPLES, run_process
from tests.infra.net import free_port
from tests.ssh_models import wait_until

RELEASE = "r-new"


class FileStep:
    """One step over a directory: ``prepare`` writes ``new``, ``activate`` moves it to
    ``current`` (keeping the old one as ``old``), ``finish`` removes ``old``, ``abort`` ``new``.
    ``fail`` makes one phase raise (``<phase>-interrupt``: KeyboardInterrupt)."""

    def __init__(self, root: Path, label: str, fail: str | None = None,
                 serving: str | None = "r-old") -> None:
        self.dir = root / label
        self.dir.mkdir(parents=True)
        if serving:
            (self.dir / "current").write_text(serving)
        self.label, self.fail = label, fail
        self.previous = serving
        self.calls: list[str] = []

    def _maybe_fail(self, phase: str) -> None:
        self.calls.append(phase)
        if self.fail == phase:
            raise DeployError(f"{self.label}: {phase} failed")
        if self.fail == f"{phase}-interrupt":
            raise KeyboardInterrupt

    def prepare(self) -> bool:
        self._maybe_fail("prepare")
        if self.previous == RELEASE:
            return False
        (self.dir / "new").write_text(RELEASE)
        return True

    def activate(self) -> None:
        try:
            self._maybe_fail("activate")
        except DeployError:     # the contract: a step that fails cleans up what it made
            (self.dir / "new").unlink(missing_ok=True)
            raise
        if self.previous:
            os.replace(self.dir / "current", self.dir / "old")
        os.replace(self.dir / "new", self.dir / "current")

    def finish(self) -> None:
        self._maybe_fail("finish")
        (self.dir / "old").unlink(missing_ok=True)

    def abort(self) -> None:
        self.calls.append("abort")
        (self.dir / "new").unlink(missing_ok=True)

    def close(self) -> None:
        self.calls.append("close")

    def on_disk(self) -> tuple[str | None, list[str]]:
        current = self.dir / "current"
        return (current.read_text() if current.exists() else None,
                sorted(p.name for p in self.dir.iterdir() if p.name != "current"))


D, F, N, S, U = phases.DEPLOYED, phases.FAILED, phases.NOT_SWITCHED, phases.SKIPPED, phases.UNCHANGED

# (failing step and phase, max_parallel, max_unavailable, step already serving RELEASE) ->
# statuses. Preparation is serial (max_parallel 1) where the failure is in prepare, so which
# steps were reached is defined.
TABLE = [
    (None, 1, 1, None, [D, D, D, D]),
    ((0, "prepare"), 1, 1, None, [F, S, S, S]),
    ((2, "prepare"), 1, 1, None, [N, N, F, S]),
    ((3, "prepare"), 1, 1, None, [N, N, N, F]),
    ((0, "activate"), 1, 1, None, [F, N, N, N]),
    ((2, "activate"), 1, 1, None, [D, D, F, N]),
    ((1, "activate"), 4, 2, None, [D, F, N, N]),
    ((2, "activate"), 4, 2, None, [D, D, F, D]),     # h3 switched in the same wave as h2
    ((3, "activate"), 4, 3, None, [D, D, D, F]),
    ((3, "prepare"), 1, 1, 1, [N, U, N, F]),
    ((2, "activate"), 1, 1, 1, [D, U, F, N]),
    (None, 4, 4, 0, [U, D, D, D]),
]


@pytest.mark.parametrize("failing, max_parallel, max_unavailable, unchanged, expected", TABLE)
def test_runner_table(tmp_path, failing, max_parallel, max_unavailable, unchanged, expected):
    steps = [FileStep(tmp_path, f"h{i}", fail=failing[1] if failing and failing[0] == i else None,
                      serving=RELEASE if i == unchanged else "r-old") for i in range(4)]
    results = phases.run(steps, RELEASE, max_parallel, max_unavailable)
    assert [r.status for r in results] == expected
    for step, res in zip(steps, results):
        current, others = step.on_disk()
        assert current == res.release                   # what the result says serves, serves
        assert others == []                             # nothing prepared or drained is left
        assert (res.status == D) == ("finish" in step.calls)
        assert (res.status == N) == ("abort" in step.calls)
        assert ("prepare" in step.calls) == (res.status != S)
        assert step.calls[-1] == "close"                # every step is closed, last
    error = phases.failure(RELEASE, results)
    assert (error is None) == (failing is None)
    if error is not None:
        failed = f"h{failing[0]}"
        assert f"{failing[1]} failed" in error.message and error.exit_code == 1
        assert [h["host"] for h in error.hosts] == [s.label for s in steps]
        assert failed in error.message           # several steps: the one that stopped it


def test_a_finish_that_fails_still_counts_as_deployed(tmp_path):
    steps = [FileStep(tmp_path, "h0", fail="finish"), FileStep(tmp_path, "h1")]
    results = phases.run(steps, RELEASE, 2, 2)
    assert [r.status for r in results] == [D, D] and phases.failure(RELEASE, results) is None
    assert "not confirmed stopped" in results[0].reason
    assert steps[0].on_disk() == (RELEASE, ["old"])     # the old one was not drained: said so


@pytest.mark.parametrize("phase", ["prepare", "activate"])
def test_an_interrupt_aborts_every_prepared_step_and_propagates(tmp_path, phase):
    steps = [FileStep(tmp_path, f"h{i}", fail=f"{phase}-interrupt" if i == 2 else None)
             for i in range(4)]
    with pytest.raises(KeyboardInterrupt):
        phases.run(steps, RELEASE, 1, 1)
    for step in steps:
        current, others = step.on_disk()
        assert others == [] and step.calls[-1] == "close"   # nothing prepared left, all closed
        assert current in ("r-old", RELEASE)
    assert [s.on_disk()[0] for s in steps[:2]] == ([RELEASE] * 2 if phase == "activate"
                                                   else ["r-old"] * 2)


@given(n=st.integers(1, 6), fail_at=st.integers(0, 5),
       phase=st.sampled_from(["prepare", "activate", "finish", None]),
       max_unavailable=st.integers(1, 4), unchanged=st.sets(st.integers(0, 5), max_size=2),
       fresh=st.sets(st.integers(0, 5), max_size=2))
def test_runner_invariants_over_generated_runs(tmp_path_factory, n, fail_at, phase,
                                               max_unavailable, unchanged, fresh):
    root = tmp_path_factory.mktemp("run")
    steps = [FileStep(root, f"h{i}", fail=phase if i == fail_at else None,
                      serving=RELEASE if i in unchanged else (None if i in fresh else "r-old"))
             for i in range(n)]
    results = phases.run(steps, RELEASE, 1, max_unavailable)
    statuses = [r.status for r in results]
    for step, res in zip(steps, results):
        current, others = step.on_disk()
        assert current == res.release and "new" not in others
        assert res.status in (D, F, N, S, U)
    assert statuses.count(F) <= 1
    if F in statuses:                   # nothing after the failing step took the new release
        assert D not in statuses[statuses.index(F) + 1:]
        assert phases.failure(RELEASE, results) is not None
    else:
        assert all(s in (D, U) for s in statuses)


# -- the local target: observe, caller, delete without a journal, read paths -------------------
def _local_project(tmp_path: Path) -> tuple[Path, Path, int]:
    project = tmp_path / "proj"
    shutil.copytree(EXAMPLES / "hello", project)
    port = free_port()
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {port}"))
    return project, tmp_path / "state", port


def _processes_naming(path: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if entry.isdigit() and str(path) in argv:
            found.append(int(entry))
    return found


def _tree(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with its mode and content hash; a runtime's own
    log only by its mode (the running model writes it, e.g. for each request it serves)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.name == "runtime.log":
            out[str(path.relative_to(root))] = oct(path.lstat().st_mode)
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and \
            not path.is_symlink() else ""
        out[str(path.relative_to(root))] = f"{oct(st.st_mode)} {digest}"
    return out


@pytest.fixture
def local(tmp_path):
    project, state, port = _local_project(tmp_path)
    yield project, state, port
    from mlserve import service
    from mlserve.errors import MlserveError
    try:
        service.delete(project, None, state)
    except MlserveError:
        pass
    for pid in _processes_naming(state):
        os.kill(pid, 9)


@pytest.mark.slow
def test_observe_finds_nothing_then_the_deployment_and_the_caller_asks_it(local):
    from mlserve import service
    from mlserve.vocab import DeployState
    project, state, _ = local
    nothing = service.observe(project, None, state)
    assert nothing.state == DeployState.NOT_DEPLOYED and nothing.resources == []
    assert not state.exists()                           # asking created nothing
    deployed = service.deploy(project, None, state)
    seen = service.observe(project, None, state)
    assert seen.state == DeployState.READY and seen.release == deployed.release
    assert seen.url == deployed.url
    [proc] = seen.resources
    assert proc.kind == "process" and proc.serving and proc.release == deployed.release
    assert proc.id.startswith(f"{deployed.extra['pid']}@")
    code, body = service.caller(project, None, state)({"x": [1, 2, 3]})
    assert (code, body["output"]) == (200, {"y": [2, 4, 6]})
    shutil.rmtree(state / "state.db", ignore_errors=True)
    (state / "state.db").unlink(missing_ok=True)
    assert service.observe(project, None, state).release == deployed.release   # no journal needed


@pytest.mark.slow
def test_delete_after_the_journal_was_removed_stops_the_local_process(local):
    project, state, port = local
    args = ["-f", str(project), "--state", str(state)]
    assert run_process("deploy", *args).code == 0
    assert _processes_naming(state)
    shutil.rmtree(state)                            # the journal and every release directory
    status = run_process("status", *args, "--json")
    assert json.loads(status.out)["status"] == "READY", status.err   # still found by identity
    deleted = run_process("delete", "--yes", *args, "--json")
    assert deleted.code == 0 and json.loads(deleted.out)["status"] == "DELETED", deleted.err
    assert _processes_naming(state) == []
    again = run_process("delete", "--yes", *args, "--json")
    assert json.loads(again.out)["status"] == "NOT DEPLOYED"


@pytest.mark.slow
def test_read_paths_leave_the_state_directory_byte_identical(local):
    project, state, _ = local
    args = ["-f", str(project), "--state", str(state)]
    assert run_process("deploy", *args).code == 0
    before = _tree(state)
    for command in (["status"], ["status", "--json"], ["list"], ["list", "--json"],
                    ["logs", "-n", "5"], ["predict", "--input", '{"x": [1]}']):
        done = run_process(*command, *args)
        assert done.code == 0, (command, done.err)
        assert _tree(state) == before, command


# -- the ssh target: observe by each host's store, delete without a journal ---------------------
@pytest.fixture
def ssh_project(tmp_path):
    from tests.ssh_models import make, target_for
    made = {}

    def build(host):
        port = free_port()
        made["manifest"] = make(tmp_path, target_for(host, tmp_path / "remote", port), smoke=False)
        made["state"], made["remote"], made["port"] = tmp_path / "state", tmp_path / "remote", port
        return made
    yield build
    if made:
        from mlserve import service
        from mlserve.errors import MlserveError
        try:
            service.delete(made["manifest"], "box", made["state"])
        except MlserveError:
            pass
        for pid in _processes_naming(made["remote"]):
            os.kill(pid, 9)


@pytest.mark.slow
def test_ssh_observe_read_paths_and_delete_without_the_journal(
        sshd_host, ssh_project):
    from mlserve import service
    from mlserve.vocab import DeployState
    p = ssh_project(sshd_host)
    nothing = service.observe(p["manifest"], "box", p["state"])
    assert nothing.state == DeployState.NOT_DEPLOYED and nothing.resources == []
    assert not p["state"].exists()
    deployed = service.deploy(p["manifest"], "box", p["state"])
    seen = service.observe(p["manifest"], "box", p["state"])
    assert (seen.state, seen.release) == (DeployState.READY, deployed.release)
    assert [(r.kind, r.release, r.serving) for r in seen.resources] == [
        ("host-release", deployed.release, True)]
    call = service.caller(p["manifest"], "box", p["state"])
    answers = [call({"x": [i]}) for i in range(3)]     # one SSH session for all three
    call.close()
    assert [(code, body["output"]["y"]) for code, body in answers] == [(200, [2 * i]) for i in range(3)]
    args = ["-f", str(p["manifest"]), "--state", str(p["state"])]
    before = _tree(p["state"])
    for command in (["status", "box"], ["list"], ["logs", "box", "-n", "5"],
                    ["predict", "box", "--input", '{"x": [1]}']):
        done = run_process(*command, *args)
        assert done.code == 0 and _tree(p["state"]) == before, (command, done.err)
    shutil.rmtree(p["state"])                              # the journal is gone
    deleted = run_process("delete", "box", "--yes", *args, "--json")
    assert deleted.code == 0 and json.loads(deleted.out)["status"] == "DELETED", deleted.err
    wait_until(lambda: not _processes_naming(p["remote"]), 15, "no process of the deployment")
    assert not list(p["remote"].glob("deployments/*"))     # nothing of the deployment on disk
    again = service.observe(p["manifest"], "box", p["state"])
    assert again.state == DeployState.NOT_DEPLOYED
