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
    assert collect(tmp_path / "one").release_id == collect(tmp_path / "two").release_id
    (tmp_path / "two" / "model.py").write_text("x = 2\n")
    assert collect(tmp_path / "one").release_id != collect(tmp_path / "two").release_id


def test_mode_change_is_a_new_release(tmp_path):
    _tree(tmp_path, {"run.sh": "echo hi\n"})
    before = collect(tmp_path).release_id
    os.chmod(tmp_path / "run.sh", 0o755)
    assert collect(tmp_path).release_id != before


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
