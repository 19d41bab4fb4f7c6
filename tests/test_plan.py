"""`mlserve plan` through the real CLI: the action, the exact changes, drift, and no side effects.

One local deployment (module fixture, a real process) serves as the journal's "before" for the
table of change kinds and for generated change sets (random file edits, additions, removals,
mode changes and manifest field changes over a small project): the plan's changes must be
exactly what was changed. Drift is made for real (a release deployed behind an older journal's
back, the processes killed, an SSH release removed on the host), and the state directory is
checked byte for byte (content, mode, mtime) around every plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import EXAMPLES, run_cli, run_process
from tests.infra.net import free_port
from tests.test_journal_hostile import v1_journal

#: The base project's files besides the manifest (path -> (content, executable)).
BASE_FILES = {"extra.txt": (b"extra\n", False), "data/a.bin": (b"\x00\x01" * 50, False),
              "bin/run.sh": (b"#!/bin/sh\necho run\n", True)}


def _project(root: Path, port: int) -> Path:
    project = root / "proj"
    shutil.copytree(EXAMPLES / "hello", project)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {port}"))
    for rel, (data, executable) in BASE_FILES.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if executable else 0o644)
    return project


def _plan(capsys, project: Path, state: Path, *more: str):
    result = run_cli(capsys, "plan", "-f", str(project), "--state", str(state), "--json", *more)
    return result.code, (json.loads(result.out) if result.out.strip() else None), result.err


def _kinds(plan: dict) -> set[tuple[str, str]]:
    return {(c["kind"], c["subject"]) for c in plan["changes"]}


def _snapshot(directory: Path) -> dict | None:
    """Every entry under ``directory``: kind, mode, size, mtime and content hash; for a running
    model's ``runtime.log`` only its content, which ``_same`` allows to grow."""
    if not directory.exists():
        return None
    found = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        st_ = path.lstat()
        if path.name == "runtime.log":
            found[str(path.relative_to(directory))] = path.read_bytes()
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest() \
            if stat.S_ISREG(st_.st_mode) else None
        found[str(path.relative_to(directory))] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, digest)
    return found


def _same(before: dict | None, after: dict | None) -> bool:
    """Nothing under the state directory changed, except that a running model server logged
    the requests it answered (plan asks it for /health, as ``status`` does): its log grew by
    whole lines, each a request."""
    if before is None or after is None:
        return before == after
    if set(before) != set(after):
        return False
    for key, old in before.items():
        new = after[key]
        if isinstance(old, bytes):
            grown = new[len(old):].decode()
            if not new.startswith(old) or any(" GET /health " not in line
                                               for line in grown.splitlines()):
                return False
        elif old != new:
            return False
    return True


def _edit_manifest(project: Path, change) -> None:
    path = project / "mlserve.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# -- no deployment: create, invalid input -------------------------------------------------------

def test_never_deployed_is_create_with_every_file_added(tmp_path, capsys):
    project, state = _project(tmp_path, free_port()), tmp_path / "state"
    code, plan, err = _plan(capsys, project, state)
    assert code == 0, err
    assert (plan["action"], plan["target"], plan["provider"], plan["current"]) == \
        ("create", "local", "local", None)
    assert plan["release"].startswith("r-") and plan["drift"] == []
    assert _kinds(plan) == {("file-added", p) for p in [*BASE_FILES, "mlserve.yaml", "model.py"]}
    script = next(c for c in plan["changes"] if c["subject"] == "bin/run.sh")
    assert script["before"] is None and script["after"]["executable"] is True
    assert script["after"]["size"] == len(BASE_FILES["bin/run.sh"][0])
    assert not state.exists()                   # read paths create nothing
    human = run_cli(capsys, "plan", "-f", str(project), "--state", str(state))
    assert human.code == 0 and "create" in human.out and "bin/run.sh" in human.out


@pytest.mark.parametrize("case, change, where", [
    ("unknown target", None, "no target"),
    ("manifest error", lambda d: d["resources"].update(cpu="lots"), "resources.cpu"),
    ("build-only provider", lambda d: d["targets"].update(
        local={"provider": "replicate", "model": "acme/hello"}), "replicate"),
    ("a feature the provider lacks", lambda d: d["scaling"].update(max_replicas=3),
     "cannot run up to 3 replicas"),
])
def test_invalid_input_is_exit_2_and_creates_nothing(tmp_path, capsys, case, change, where):
    project, state = _project(tmp_path, free_port()), tmp_path / "state"
    if change:
        _edit_manifest(project, change)
    args = ("nowhere",) if case == "unknown target" else ()
    code, _, err = _plan(capsys, project, state, *args)
    assert code == 2 and where in err, err
    assert not state.exists()


# -- one deployment: the journal's "before" ------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    project, state = _project(root, free_port()), root / "state"
    result = run_process("deploy", "-f", str(project), "--state", str(state), "--json")
    assert result.code == 0, result.err
    release = json.loads(result.out)["release"]
    _wait_for_smoke_log(state, release)
    yield project, state, release
    run_process("delete", "-y", "-f", str(project), "--state", str(state))


def _wait_for_smoke_log(state: Path, release: str) -> None:
    """The runtime writes its access log every 100 ms (``runtime/logs.py``), so the deploy's own
    health check and smoke request can reach ``runtime.log`` after ``deploy`` returned. Wait for
    the smoke request's line, so a snapshot taken now sees only what ``plan`` itself causes."""
    [log] = state.rglob(f"{release}/runtime.log")
    deadline = time.monotonic() + 10
    while b" POST /predict " not in log.read_bytes():
        assert time.monotonic() < deadline, "the deploy's smoke request never reached runtime.log"
        time.sleep(0.05)


def _copy(project: Path) -> Path:
    """A fresh copy of the deployed project (modes and mtimes kept) to change."""
    copy = Path(tempfile.mkdtemp(prefix="plan-")) / "proj"
    shutil.copytree(project, copy)
    return copy


@pytest.mark.slow
def test_unchanged_is_none_and_the_state_directory_is_untouched(deployed, capsys):
    project, state, release = deployed
    before = _snapshot(state)
    code, plan, err = _plan(capsys, _copy(project), state)
    assert code == 0, err
    assert (plan["action"], plan["release"], plan["current"]) == ("none", release, release)
    assert plan["changes"] == [] and plan["drift"] == []
    assert plan["live"]["state"] == "READY" and plan["live"]["release"] == release
    assert _same(before, _snapshot(state))


def _write(rel: str, data: bytes):
    def apply(project: Path) -> None:
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return apply


def _manifest_change(change):
    return lambda project: _edit_manifest(project, change)


MANIFEST = ("file-changed", "mlserve.yaml")
CHANGES = {
    "one file edited": (_write("model.py", (EXAMPLES / "hello/model.py").read_bytes() + b"# v2\n"),
                        {("file-changed", "model.py")}),
    "one file added": (_write("new/b.txt", b"b"), {("file-added", "new/b.txt")}),
    "one file removed": (lambda p: (p / "extra.txt").unlink(), {("file-removed", "extra.txt")}),
    "a file made executable": (lambda p: (p / "extra.txt").chmod(0o755),
                               {("file-changed", "extra.txt")}),
    "requirements": (_manifest_change(lambda d: d["model"].update(requirements=["numpy>=1"])),
                     {MANIFEST, ("requirement-added", "numpy>=1")}),
    "resources": (_manifest_change(lambda d: d["resources"].update(memory="1Gi")),
                  {MANIFEST, ("resources", "resources.memory")}),
    "scaling": (_manifest_change(lambda d: d["scaling"].update(concurrency=2)),
                {MANIFEST, ("scaling", "scaling.concurrency")}),
    "env value": (_manifest_change(lambda d: d["env"].update(FACTOR="3")),
                  {MANIFEST, ("env", "FACTOR")}),
    "secret name": (_manifest_change(lambda d: d.update(secrets=["API_TOKEN"])),
                    {MANIFEST, ("secret-added", "API_TOKEN")}),
    "target option": (_manifest_change(lambda d: d["targets"]["local"].update(keep_releases=2)),
                      {MANIFEST, ("target", "target.keep_releases")}),
    "model field": (_manifest_change(lambda d: d["model"].update(python="3.12")),
                    {MANIFEST, ("model", "model.python")}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CHANGES))
def test_each_kind_of_change_is_named_exactly(deployed, capsys, case):
    project, state, release = deployed
    apply, expected = CHANGES[case]
    copy = _copy(project)
    apply(copy)
    before = _snapshot(state)
    code, plan, err = _plan(capsys, copy, state)
    assert code == 0, err
    assert plan["action"] == "update" and plan["current"] == release
    assert _kinds(plan) == expected
    assert "API_TOKEN" not in os.environ      # a secret's name is planned; its value never read
    assert _same(before, _snapshot(state))
    if case == "env value":
        [env] = plan["changes"][1:]
        assert (env["before"], env["after"]) == ("2", "3")
    if case == "one file edited":
        [edit] = plan["changes"]
        assert edit["before"]["sha256"] != edit["after"]["sha256"]
        assert edit["after"]["size"] == edit["before"]["size"] + 5


NEW_NAMES = ["extra.txt", "new/x.txt", "data/b.bin", "z.py"]


@st.composite
def change_sets(draw):
    """Random edits, additions, removals and mode flips of files, and manifest field changes."""
    files = {}
    for rel in ["model.py", *BASE_FILES]:
        what = draw(st.sampled_from(["keep", "keep", "edit", "remove", "flip", "touch"]))
        if rel == "model.py" and what in ("remove", "flip"):
            what = "keep"                          # the entrypoint stays
        files[rel] = what
    added = draw(st.sets(st.sampled_from(NEW_NAMES[1:]), max_size=3))
    fields = {
        "cpu": draw(st.sampled_from([1, 2, 0.5])),
        "concurrency": draw(st.sampled_from([8, 4])),
        "env": draw(st.dictionaries(st.sampled_from(["FACTOR", "OTHER"]),
                                    st.sampled_from(["2", "3", "x" * 60]), max_size=2)),
        "secrets": draw(st.sets(st.sampled_from(["TOKEN_A", "TOKEN_B"]))),
        "requirements": draw(st.lists(st.sampled_from(["numpy", "pandas<3", "requests"]),
                                      unique=True, max_size=2)),
        "keep_releases": draw(st.sampled_from([5, 3])),
    }
    return files, added, fields


def _apply(copy: Path, files: dict, added: set, fields: dict) -> set[tuple[str, str]]:
    """Make the change set; return the changes a plan must list."""
    expected = set()
    for rel, what in files.items():
        path = copy / rel
        if what == "edit":
            path.write_bytes(path.read_bytes() + b"\n# edited\n")
        elif what == "remove":
            path.unlink()
        elif what == "flip":
            path.chmod(path.stat().st_mode ^ 0o111)
        elif what == "touch":                       # a new mtime, the same content: no change
            os.utime(path, (1, 1))
        if what in ("edit", "flip"):
            expected.add(("file-changed", rel))
        elif what == "remove":
            expected.add(("file-removed", rel))
    for rel in added:
        _write(rel, rel.encode())(copy)
        expected.add(("file-added", rel))
    old = yaml.safe_load((copy / "mlserve.yaml").read_text())
    new = json.loads(json.dumps(old))
    new["resources"]["cpu"] = fields["cpu"]
    new["scaling"]["concurrency"] = fields["concurrency"]
    new["env"] = fields["env"]
    new["secrets"] = sorted(fields["secrets"])
    new["model"]["requirements"] = fields["requirements"]
    new["targets"]["local"]["keep_releases"] = fields["keep_releases"]
    if new != old:
        (copy / "mlserve.yaml").write_text(yaml.safe_dump(new, sort_keys=False))
        expected.add(MANIFEST)
    if float(new["resources"]["cpu"]) != float(old["resources"]["cpu"]):
        expected.add(("resources", "resources.cpu"))
    if new["scaling"]["concurrency"] != old["scaling"]["concurrency"]:
        expected.add(("scaling", "scaling.concurrency"))
    expected |= {("env", k) for k in set(old["env"]) | set(new["env"])
                 if old["env"].get(k) != new["env"].get(k)}
    expected |= {("secret-added", s) for s in fields["secrets"]}
    expected |= {("requirement-added", r) for r in fields["requirements"]}
    if new["targets"]["local"]["keep_releases"] != old["targets"]["local"].get("keep_releases", 5):
        expected.add(("target", "target.keep_releases"))
    return expected


@pytest.mark.slow
@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=change_sets())
def test_generated_change_sets_are_planned_exactly(deployed, capsys, change):
    project, state, release = deployed
    copy = _copy(project)
    expected = _apply(copy, *change)
    code, plan, err = _plan(capsys, copy, state)
    assert code == 0, err
    assert _kinds(plan) == expected
    assert plan["action"] == ("update" if expected else "none")
    for c in plan["changes"]:
        if c["kind"] == "env" and isinstance(c["after"], str):
            assert len(c["after"]) <= 40           # values are shortened
    shutil.rmtree(copy.parent)


# -- journals of every kind: read only, byte for byte ---------------------------------------------

@pytest.mark.parametrize("journal", ["none", "empty dir", "schema 1", "damaged", "future"])
def test_the_state_directory_is_byte_identical_whatever_the_journal(tmp_path, capsys, journal):
    project, state = _project(tmp_path, free_port()), tmp_path / "state"
    if journal == "empty dir":
        state.mkdir()
    elif journal in ("schema 1", "damaged", "future"):
        v1_journal(state)
    if journal == "damaged":
        data = bytearray((state / "state.db").read_bytes())
        data[100:3000] = os.urandom(2900)
        (state / "state.db").write_bytes(bytes(data))
    if journal == "future":
        db = sqlite3.connect(state / "state.db", isolation_level=None)
        db.execute("PRAGMA user_version=3")
        db.close()
    os.utime(state if state.exists() else tmp_path, (1, 1))
    before = _snapshot(state)
    code, plan, err = _plan(capsys, project, state)
    assert _same(before, _snapshot(state))
    if journal in ("damaged", "future"):
        status = run_cli(capsys, "status", "-f", str(project), "--state", str(state), "--json")
        assert code == status.code == 1
        assert err.splitlines()[0] == status.err.splitlines()[0]       # the same error
        assert "newer mlserve" in err if journal == "future" else "state.db" in err
        return
    assert code == 0, err
    if journal == "schema 1":
        assert plan["action"] == "update" and plan["current"] == "r-v1"
        [unknown] = [c for c in plan["changes"] if c["kind"] == "files-unknown"]
        assert "recorded before mlserve kept file lists" in unknown["before"]
        assert plan["drift"] and plan["drift"][0]["kind"] == "not-serving"
    else:
        assert plan["action"] == "create"


# -- drift, made for real ---------------------------------------------------------------------------

def _processes_of(state: Path) -> list[int]:
    """The supervisor and runtime processes whose command line names ``state``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(str(state).encode() in a for a in argv):
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_drift_a_release_the_journal_does_not_know_a_rollback_then_nothing_serving(tmp_path,
                                                                                   capsys):
    project, state = _project(tmp_path, free_port()), tmp_path / "state"
    args = ("-f", str(project), "--state", str(state), "--json")
    first = run_process("deploy", *args)
    assert first.code == 0, first.err
    older = (state / "state.db").read_bytes()
    (project / "extra.txt").write_text("v2\n")
    second = run_process("deploy", *args)
    assert second.code == 0, second.err
    newer = (state / "state.db").read_bytes()
    r1, r2 = json.loads(first.out)["release"], json.loads(second.out)["release"]
    try:
        (state / "state.db").write_bytes(older)             # the journal forgot the second deploy
        before = _snapshot(state)
        code, plan, err = _plan(capsys, project, state)
        assert code == 0, err
        assert _same(before, _snapshot(state))
        assert (plan["current"], plan["live"]["release"], plan["action"]) == (r1, r2, "update")
        assert [(d["kind"], d["journal"], d["live"]) for d in plan["drift"]] == \
            [("unknown-release", r1, r2)]
        assert _kinds(plan) == {("file-changed", "extra.txt")}

        (state / "state.db").unlink()                        # the journal lost altogether
        code, plan, err = _plan(capsys, project, state)
        assert code == 0, err
        assert (plan["current"], plan["live"]["release"], plan["action"]) == (None, r2, "update")
        assert [(d["kind"], d["journal"], d["live"]) for d in plan["drift"]] == \
            [("unknown-release", None, r2)]
        assert not (state / "state.db").exists()

        (state / "state.db").write_bytes(newer)
        back = run_process("rollback", *args)              # the journal's current is r1 again
        assert back.code == 0, back.err
        code, plan, err = _plan(capsys, project, state)
        assert code == 0, err
        assert (plan["current"], plan["live"]["release"], plan["drift"]) == (r1, r1, [])
        assert plan["action"] == "update" and _kinds(plan) == {("file-changed", "extra.txt")}
        newer = (state / "state.db").read_bytes()

        for pid in sorted(_processes_of(state)):            # supervisor first: nothing restarts
            os.kill(pid, signal.SIGKILL)
        code, plan, err = _plan(capsys, project, state)
        assert code == 0, err
        assert (plan["current"], plan["live"]["release"], plan["action"]) == (r1, None, "update")
        assert [(d["kind"], d["journal"]) for d in plan["drift"]] == [("not-serving", r1)]
        assert _kinds(plan) == {("file-changed", "extra.txt")}
        human = run_cli(capsys, "plan", *args[:-1])
        assert "drift not-serving" in human.out and human.code == 0
    finally:
        (state / "state.db").write_bytes(newer)
        run_process("delete", "-y", *args)


@pytest.mark.slow
def test_drift_an_ssh_release_removed_by_hand(sshd_host, tmp_path, capsys):
    from tests.ssh_models import make, target_for
    remote = tmp_path / "remote"
    manifest = make(tmp_path, target_for(sshd_host, remote, free_port()))
    state = tmp_path / "state"
    args = ("-f", str(manifest), "--state", str(state))
    deployed_ = run_process("deploy", "box", *args, "--json")
    assert deployed_.code == 0, deployed_.err
    release = json.loads(deployed_.out)["release"]
    try:
        code, plan, err = _plan(capsys, manifest.parent, state, "box")
        assert code == 0, err
        assert (plan["action"], plan["provider"], plan["drift"]) == ("none", "ssh", [])
        [host] = json.loads(deployed_.out)["extra"]["hosts"]
        os.kill(host["pid"], signal.SIGKILL)                # what an operator's cleanup does
        for path in remote.rglob(release):
            shutil.rmtree(path, ignore_errors=True)
        before = _snapshot(state)
        code, plan, err = _plan(capsys, manifest.parent, state, "box")
        assert code == 0, err
        assert _same(before, _snapshot(state))
        assert plan["action"] == "update" and plan["live"]["release"] is None
        assert [(d["kind"], d["journal"]) for d in plan["drift"]] == [("not-serving", release)]
    finally:
        run_process("delete", "-y", "box", *args)


def test_help_names_the_command_and_its_options(capsys):
    result = run_cli(capsys, "plan", "-h")
    assert result.code == 0, result.err
    for option in ("--file", "--state", "--json", "TARGET"):
        assert option in result.out


def test_a_provider_that_cannot_be_asked_is_drift_not_a_failure(tmp_path, capsys):
    """An SSH host that refuses connections: the plan still says what deploy would change and
    exits 0, with the reason as drift."""
    from mlserve.state import SERVING, State
    from tests.ssh_models import make
    port = free_port()                                   # nothing listens there
    manifest = make(tmp_path, {"hosts": [f"nobody@127.0.0.1:{port}"], "connect_timeout": 2,
                               "known_hosts": str(tmp_path / "known_hosts")})
    (tmp_path / "known_hosts").write_text("")
    state = tmp_path / "state"
    journal = State(state)
    seq = journal.add_release("box", "r-gone", "ssh", "h", {"name": "echo"}, None, files={})
    journal.finish_release(seq, SERVING)
    journal.close()
    before = _snapshot(state)
    code, plan, err = _plan(capsys, manifest.parent, state, "box")
    assert code == 0, err
    assert _same(before, _snapshot(state))
    assert plan["current"] == "r-gone" and plan["action"] == "update"
    [drift] = plan["drift"]
    # (the ssh adapter still says FAILED for a fleet it cannot reach: either word will do)
    assert drift["kind"] in ("unreachable", "not-serving")
    assert f"127.0.0.1:{port}) refused the connection" in drift["detail"]
    assert {c["kind"] for c in plan["changes"]} >= {"file-added"}   # the journal listed no files


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
SECTION_NAMES = st.sampled_from(["name", "model", "resources", "scaling", "env", "secrets",
                                 "targets", "smoke", "requirements", "sha256", "local"])
SNAPSHOTS = st.dictionaries(SECTION_NAMES, JSON | st.dictionaries(SECTION_NAMES, JSON, max_size=4),
                            max_size=6)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(snapshot=SNAPSHOTS, requirements=st.none() | st.lists(st.text(max_size=6), max_size=3))
def test_any_journal_snapshot_plans_without_crashing(tmp_path, capsys, snapshot, requirements):
    """The journal's manifest snapshot is whatever it holds (another version's, or damaged):
    every section of the wrong shape compares as empty; the plan is printed, exit 0."""
    from mlserve.state import SERVING, State
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    project, state = _project(root, free_port()), root / "state"
    journal = State(state)
    seq = journal.add_release("local", "r-any", "local", "h", snapshot, None,
                              files={"model.py": ("0" * 64, False, 1)}, requirements=requirements)
    journal.finish_release(seq, SERVING)
    journal.close()
    human = run_cli(capsys, "plan", "-f", str(project), "--state", str(state))
    assert human.code == 0 and "internal error" not in human.err, human.err
    code, plan, err = _plan(capsys, project, state)
    assert code == 0, err
    assert plan["current"] == "r-any" and plan["action"] == "update"
    assert ("file-changed", "model.py") in _kinds(plan)
    json.dumps(plan)
