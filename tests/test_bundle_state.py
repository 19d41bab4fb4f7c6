"""Content-addressed bundles and the journal (real files, real SQLite, real OS locks)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlserve.bundle import collect
from mlserve.errors import Busy
from mlserve.state import FAILED, SERVING, SUPERSEDED, State


def _tree(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_same_files_same_release_id_anywhere(tmp_path):
    files = {"model.py": "x = 1\n", "weights/a.bin": "abc", "mlserve.yaml": "name: a\n"}
    _tree(tmp_path / "one", files)
    _tree(tmp_path / "two", dict(reversed(list(files.items()))))
    assert collect(tmp_path / "one").content_hash == collect(tmp_path / "two").content_hash
    (tmp_path / "two" / "model.py").write_text("x = 2\n")
    assert collect(tmp_path / "one").content_hash != collect(tmp_path / "two").content_hash


def test_mode_change_is_a_new_release(tmp_path):
    _tree(tmp_path, {"run.sh": "echo hi\n"})
    before = collect(tmp_path).content_hash
    os.chmod(tmp_path / "run.sh", 0o755)
    assert collect(tmp_path).content_hash != before


def test_ignores_builtin_and_mlserveignore(tmp_path):
    _tree(tmp_path, {"model.py": "", ".git/config": "", "__pycache__/m.pyc": "", ".venv/bin/x": "",
                     ".mlserve/state.db": "", "data/raw/big.csv": "", "data/keep.csv": "",
                     "notes.log": "", ".mlserveignore": "data/raw/\n*.log\n"})
    shipped = [f.path for f in collect(tmp_path).files]
    assert shipped == [".mlserveignore", "data/keep.csv", "model.py"]


def test_state_dir_elsewhere_in_tree_is_left_out(tmp_path):
    from mlserve.bundle import state_ignores
    _tree(tmp_path, {"model.py": "", "var/state/state.db": ""})
    bundle = collect(tmp_path, extra_ignores=state_ignores(tmp_path, tmp_path / "var" / "state"))
    assert [f.path for f in bundle.files] == ["model.py"]


def test_journal_records_outcomes_and_previous(tmp_path):
    state = State(tmp_path)
    first = state.add_release("local", "r-1", "local", "h1", {"name": "a"}, None)
    state.finish_release(first, SERVING, url="http://x")
    second = state.add_release("local", "r-2", "local", "h2", {"name": "a"}, None)
    state.finish_release(second, FAILED, reason="smoke")
    third = state.add_release("local", "r-3", "local", "h3", {"name": "a"}, None)
    state.finish_release(third, SERVING, url="http://x")
    assert state.current("local").release_id == "r-3"
    assert state.previous("local").release_id == "r-1"
    assert [r.outcome for r in state.releases("local")] == [SUPERSEDED, FAILED, SERVING]
    assert state.deployment("local").release_id == "r-3"
    assert state.find_release("local", "r-1").seq == first
    state.close()


def test_lock_refuses_a_second_holder_in_another_process(tmp_path):
    state = State(tmp_path)
    with state.lock("local"):
        code = ("import sys; from mlserve.state import State; from mlserve.errors import Busy\n"
                f"s = State({str(tmp_path)!r})\n"
                "try:\n    s.lock('local').__enter__()\nexcept Busy as e:\n    print(e.message); sys.exit(7)\n")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode == 7, other.stderr
        assert f"busy: deploy by pid {os.getpid()}" in other.stdout
    with state.lock("local"):        # released: can be taken again
        pass
    state.close()


def test_lock_is_released_when_the_holder_dies(tmp_path):
    code = ("import os; from mlserve.state import State\n"
            f"s = State({str(tmp_path)!r}); s.lock('local').__enter__(); os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    with State(tmp_path).lock("local"):
        pass


def test_lock_error_is_busy(tmp_path):
    state = State(tmp_path)
    with state.lock("t"):
        with pytest.raises(Busy):
            with State(tmp_path).lock("t"):
                pass


def test_delete_is_recorded_without_rewriting_outcomes(tmp_path):
    from mlserve.state import DeploymentStatus
    state = State(tmp_path)
    for rid in ("r-1", "r-2"):
        state.finish_release(state.add_release("local", rid, "local", "h", {"name": "a"}, None),
                             SERVING, url="http://x")
    state.mark_deleted("local", "local", "a")
    assert [(r.release_id, r.outcome) for r in state.releases("local")] == [
        ("r-1", SUPERSEDED), ("r-2", SERVING)]
    assert state.deployment("local").status == DeploymentStatus.DELETED
    assert state.current("local") is None and state.previous("local") is None
    assert state.releases("local", since_deletion=True) == []
    third = state.add_release("local", "r-3", "local", "h", {"name": "a"}, None)
    state.finish_release(third, SERVING, url="http://x")
    assert state.current("local").release_id == "r-3" and state.previous("local") is None
    state.close()


def test_a_noop_attempt_is_discarded_and_the_schema_is_versioned(tmp_path):
    import sqlite3
    state = State(tmp_path)
    seq = state.add_release("local", "r-1", "local", "h", {"name": "a"}, None)
    state.discard_release(seq)
    assert state.releases("local") == []
    state.close()
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"   # readers create no files
    db.close()


MODEL_SRC = "class Model:\n    def load(self):\n        pass\n\n    def predict(self, payload):\n        return payload\n"


# -- the release id: the model version, the same on every target and in every build format ------
BASE_MANIFEST = {
    "name": "relid", "model": {"entrypoint": "model.py:Model", "python": "3.11", "requirements": []},
    "resources": {"cpu": 1, "memory": "512Mi"}, "scaling": {"concurrency": 2},
    "env": {"A": "1"}, "secrets": ["TOKEN_B", "TOKEN_A"],
    "smoke": [{"input": {"x": 1}}],
    "targets": {"local": {"provider": "local", "port": 8480},
                "rep": {"provider": "replicate", "model": "acme/relid"},
                "bt": {"provider": "baseten"}, "img": {"provider": "docker", "image": "acme/relid"},
                "box": {"provider": "vm"}},
}

# (path into the manifest, new value, whether the model version changes)
EDITS = [
    (("model", "entrypoint"), "other.py:Model", True),
    (("model", "python"), "3.12", True),
    (("model", "requirements"), ["numpy==1.26.4"], True),
    (("env", "A"), "2", True),
    (("env", "B"), "new", True),
    (("secrets",), ["TOKEN_A", "TOKEN_B", "TOKEN_C"], True),
    (("secrets",), ["TOKEN_A", "TOKEN_B"], False),          # the same names in another order
    (("resources", "cpu"), 2, True),
    (("scaling", "concurrency"), 3, True),
    (("smoke",), [{"input": {"x": 2}, "expect": 4}], False),
    (("targets", "local", "port"), 9999, False),
    (("targets", "extra"), {"provider": "local", "port": 8481}, False),
    (("name",), "renamed", False),
]


def _relid_project(root, manifest: dict, files: dict[str, str]):
    import yaml
    from mlserve.manifest import load_project
    _tree(root, {**files, "mlserve.yaml": yaml.safe_dump(manifest, sort_keys=False)})
    (root / "other.py").write_text(MODEL_SRC)
    return load_project(root / "mlserve.yaml")


def _relid(root, manifest: dict, files: dict[str, str]) -> str:
    from mlserve.release import release_id
    project = _relid_project(root, manifest, files)
    return release_id(project, collect(project.root))


@pytest.mark.parametrize("path, value, changes", EDITS,
                         ids=[".".join(e[0]) + ("" if e[2] else " (same)") for e in EDITS])
def test_release_id_changes_with_behaviour_only(tmp_path, path, value, changes):
    import copy
    files = {"model.py": MODEL_SRC}
    edited = copy.deepcopy(BASE_MANIFEST)
    node = edited
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    before = _relid(tmp_path / "a", BASE_MANIFEST, files)
    assert (before != _relid(tmp_path / "b", edited, files)) is changes


def test_release_id_is_the_same_for_every_build_format_and_deploy(tmp_path):
    """``mlserve build`` reports the model version's id for every format (each records its own
    context hash under it), and it is the id a deploy would use."""
    from mlserve.packaging import FORMATS, build_project
    from mlserve.release import release_id
    project = _relid_project(tmp_path / "p", BASE_MANIFEST, {"model.py": MODEL_SRC})
    results = [build_project(project, "local", fmt, tmp_path / f"out-{fmt}") for fmt in FORMATS]
    expected = release_id(project, collect(project.root, extra_ignores=["/.mlserve/"]))
    assert {r.release for r in results} == {expected}
    assert len({r.context for r in results}) == len(FORMATS)     # different builds under one id


def test_release_id_follows_the_files(tmp_path):
    files = {"model.py": MODEL_SRC, "weights/a.bin": "abc"}
    same = _relid(tmp_path / "a", BASE_MANIFEST, files)
    assert _relid(tmp_path / "b", BASE_MANIFEST, files) == same
    assert _relid(tmp_path / "c", BASE_MANIFEST, {**files, "weights/a.bin": "abd"}) != same
    assert _relid(tmp_path / "d", BASE_MANIFEST, {**files, "notes.txt": ""}) != same
