"""``mlserve migrate`` end to end (real CLI, real processes, the real sshd fixture) and its pure
parts (output comparison, saved inputs) with generated cases.

How a destination answers differently from the source with ONE manifest and the same files:
the model reads the port it serves on from its own command line (the runtime is started as
``python -m mlserve.runtime ... --port N``, on every provider) and looks itself up in the
``BY_PORT`` env var, a JSON object port -> behaviour (fail in load, load slowly, scale outputs
by a factor). Same release id on every target, as migrate requires; only the target's port
differs, which is exactly what a target is allowed to change.

Every end-to-end test polls the source's URL in a thread (``Poller``) while migrate runs: the
source must answer every request until the destination serves (a ``migrated`` event), and to
the end when the migration fails or keeps the source.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from mlserve.errors import InvalidInput
from mlserve.migrate.compare import MISSING, first_difference, numbers_agree
from mlserve.migrate.inputs import read_inputs
from tests.helpers import MLSERVE, REPO, run_cli

MODEL = '''
import json, os, sys, time

VERSION = "v1"


def _port():
    return sys.argv[sys.argv.index("--port") + 1] if "--port" in sys.argv else ""


class Model:
    def load(self):
        me = json.loads(os.environ.get("BY_PORT", "{}")).get(_port(), {})
        if me.get("fail_load"):
            raise RuntimeError("load failed on purpose on port " + _port())
        time.sleep(me.get("slow_load", 0))
        self.factor = me.get("skew", 1.0)

    def predict(self, payload):
        time.sleep(payload.get("sleep", 0))
        return {"y": [v * 2 * self.factor for v in payload["x"]], "version": VERSION}
'''


# -- generated: the comparison ---------------------------------------------------------------

def _path(parent: str, step) -> str:
    """The expected path syntax, written independently of the code under test."""
    if isinstance(step, int):
        return f"{parent}[{step}]"
    ok = step[:1].isalpha() or step[:1] == "_"
    ok = ok and all(c.isalnum() and c.isascii() or c == "_" for c in step) and step.isascii()
    return f"{parent}.{step}" if ok else f"{parent}[{json.dumps(step)}]"


def _leaves(value, path="$"):
    """(path, leaf) in the order the comparison visits them (preorder, a's key order)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, _path(path, key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _leaves(item, _path(path, i))
    else:
        yield path, value


def _map_leaves(value, change, path="$"):
    if isinstance(value, dict) and value:
        return {k: _map_leaves(v, change, _path(path, k)) for k, v in value.items()}
    if isinstance(value, list) and value:
        return [_map_leaves(v, change, _path(path, i)) for i, v in enumerate(value)]
    return change(path, value)


_keys = st.one_of(st.sampled_from(["y", "x_1", "_k", "a b", "1st", "é", "", "k\"q", "[0]"]),
                  st.text(max_size=6))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                     st.floats(-1e300, 1e300, allow_nan=False), st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@given(_json)
def test_a_value_agrees_with_itself_and_its_json_round_trip(value):
    assert first_difference(value, value) is None
    assert first_difference(value, json.loads(json.dumps(value))) is None


@given(_json, st.floats(-0.25, 0.25), st.sampled_from([1e-6, 1e-3, 0.1]))
def test_numbers_moved_within_the_tolerance_agree(value, share, rtol):
    moved = _map_leaves(value, lambda p, v: v * (1 + share * rtol) if _is_number(v) else v)
    assert first_difference(value, moved, rtol=rtol) is None


@given(_json, st.data())
def test_the_first_changed_leaf_is_the_path_named(value, data):
    leaves = list(_leaves(value))
    changed = set(data.draw(st.lists(st.integers(0, max(len(leaves) - 1, 0)), min_size=1,
                                     max_size=3)))
    changed_paths = [p for i, (p, _) in enumerate(leaves) if i in changed]

    def change(path, v):
        if path not in changed_paths:
            return v
        if isinstance(v, bool):
            return int(v)                               # true -> 1: a bool is never a number
        if _is_number(v):
            return v * 1.01 + 1 if v >= 0 else v * 1.01 - 1   # beyond rtol 1e-6 and atol 0
        return v + "!" if isinstance(v, str) else "other"   # another string, another kind
    other = _map_leaves(value, change)
    found = first_difference(value, other)
    assert found is not None and found.path == changed_paths[0]
    assert (found.a, found.b) == (dict(leaves)[found.path], change(found.path, found.a))


@given(st.dictionaries(_keys, _scalars, min_size=1, max_size=6), st.data())
def test_a_missing_key_or_element_is_named(value, data):
    key = data.draw(st.sampled_from(sorted(value)))
    fewer = {k: v for k, v in value.items() if k != key}
    found = first_difference(value, fewer)
    assert (found.path, found.a, found.b) == (_path("$", key), value[key], MISSING)
    found = first_difference(fewer, value)             # only B has it: after A's keys
    assert (found.path, found.a, found.b) == (_path("$", key), MISSING, value[key])
    items = list(value.values())
    found = first_difference({"list": items}, {"list": items[:-1]})
    assert found.path == f"$.list[{len(items) - 1}]" and found.b is MISSING


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
       st.sampled_from([-10, -2, -1.1, -0.9, -0.5, 0.1, 0.5, 0.9, 1.1, 2, 10]),
       st.sampled_from([0.0, 1e-9, 1e-6, 1e-3]), st.sampled_from([0.0, 1e-12, 1.0]),
       st.booleans())
def test_numbers_follow_the_isclose_rule(a, times, rtol, atol, relative):
    """Away from the boundary (where float rounding decides), exactly math.isclose's answer."""
    b = a * (1 + times * rtol) if relative else a + times * atol
    bound = max(rtol * max(abs(a), abs(b)), atol)
    if abs(abs(b - a) - bound) > 1e-9 * max(abs(a), abs(b), atol, 1e-300):
        assert numbers_agree(a, b, rtol, atol) is math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    assert numbers_agree(a, a, rtol, atol) and numbers_agree(b, b, rtol, atol)


@given(st.integers(10**300, 10**400))
def test_huge_integers_neither_overflow_nor_lose_digits(n):
    assert numbers_agree(n, n + 1, 1e-6, 0)
    assert not numbers_agree(n, n + 1, 0, 0)
    assert not numbers_agree(n, 2 * n, 1e-6, 0)
    assert first_difference({"n": n}, {"n": n * 2}).path == "$.n"


def test_kinds_that_never_agree():
    assert first_difference(True, 1).reason == "a boolean vs a number"
    assert first_difference(1, 1.0) is None and first_difference(0, -0.0) is None
    assert first_difference(None, 0).path == "$" and first_difference("1", 1) is not None
    assert first_difference(float("nan"), float("nan")) is None
    assert first_difference(float("inf"), 1e308) is not None
    assert first_difference(float("inf"), float("inf")) is None
    assert first_difference([1, [2, {"a": [3, 4]}]], [1, [2, {"a": [3, 5]}]]).path == "$[1][1].a[1]"
    deep_a, deep_b = 1, 2
    for _ in range(5000):                  # deeper than Python's recursion limit
        deep_a, deep_b = [deep_a], [deep_b]
    assert first_difference(deep_a, deep_b).path == "$" + "[0]" * 5000


# -- generated: saved inputs -----------------------------------------------------------------

_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(),
                                 st.floats(allow_nan=False, allow_infinity=False),
                                 st.text(max_size=5)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.text(max_size=3), inner,
                                                               max_size=3)), max_leaves=8)
_filler = st.sampled_from(["", "   ", "# a note", "  # indented note", "\t"])
_bad = st.one_of(st.sampled_from(["{", "[1,]", "NaN", "[Infinity]", "{'x': 1}", "x", "{} {}",
                                  '"unterminated', "-", "01"]).map(str.encode),
                 st.sampled_from([b"\xff\xfe", b'"\xc3"']))


@given(st.lists(st.one_of(_values.map(lambda v: ("value", v)), _filler.map(lambda f: ("fill", f))),
                max_size=12), st.data())
def test_inputs_are_read_in_order_with_their_line_numbers(tmp_path_factory, lines, data):
    path = tmp_path_factory.mktemp("inputs") / "saved.jsonl"
    text = [json.dumps(v) if kind == "value" else v for kind, v in lines]
    bom = data.draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    end = data.draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    path.write_bytes(bom + "\n".join(text).encode() + end)
    cases = read_inputs(path)
    expected = [(f"{path}:{n}", v) for n, (kind, v) in enumerate(lines, 1) if kind == "value"]
    assert [(c.source, c.input) for c in cases] == expected

    bad_at = data.draw(st.integers(0, len(lines)))
    bad = data.draw(_bad)
    raw = [t.encode() for t in text]
    raw.insert(bad_at, bad)
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(InvalidInput) as refused:
        read_inputs(path)
    assert refused.value.where == f"{path}:{bad_at + 1}"
    assert f"line {bad_at + 1} " in refused.value.message


def test_inputs_that_cannot_be_read(tmp_path):
    for name, make in (("missing.jsonl", None), ("adir", "dir")):
        if make == "dir":
            (tmp_path / name).mkdir()
        with pytest.raises(InvalidInput) as refused:
            read_inputs(tmp_path / name)
        assert name in refused.value.message


# -- CLI: refused before anything is touched ---------------------------------------------------

def _project(root: Path, targets: dict, by_port: dict | None = None,
             smoke: bool = True) -> Path:
    project = root / "proj"
    project.mkdir(parents=True, exist_ok=True)
    (project / "model.py").write_text(MODEL)
    manifest = {"name": "mig", "model": {"entrypoint": "model.py:Model", "python": "3.11"},
                "env": {"BY_PORT": json.dumps({str(k): v for k, v in (by_port or {}).items()})},
                "smoke": [{"input": {"x": [1, 2]}}] if smoke else [],
                "targets": targets}
    (project / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return project


def _local(port: int) -> dict:
    return {"provider": "local", "port": port, "health_timeout": 30}


@pytest.mark.parametrize("args, code, said", [
    (["--inputs", "{inputs}"], 2, "saved.jsonl:3: line 3 is not JSON"),
    (["--rtol", "-1"], 2, "--rtol must be a finite number >= 0"),
    (["--atol", "nan"], 2, "--atol must be a finite number >= 0"),
    (["--to", "a"], 2, "--from and --to both name target 'a'"),
    (["--to", "nope"], 2, "no target 'nope'"),
    ([], 2, "target 'a' is not deployed: there is nothing to migrate"),
    (["--dry-run"], 2, "target 'a' is not deployed"),
    (["--to", "img"], 2, "the 'replicate' provider cannot deploy"),
])
def test_refused_before_anything_is_created(tmp_path, capsys, args, code, said):
    project = _project(tmp_path, {"a": _local(1), "b": _local(2),
                                  "img": {"provider": "replicate", "model": "acme/m"}})
    inputs = tmp_path / "saved.jsonl"
    inputs.write_text('{"x": [1]}\n# a note\n{"x": [1, }\n')
    args = [a.replace("{inputs}", str(inputs)) for a in args]
    if "--to" not in args:
        args += ["--to", "b"]
    result = run_cli(capsys, "migrate", "--from", "a", *args, "-f", str(project),
                     "--state", str(tmp_path / "state"), "--yes")
    assert result.code == code, result.err
    assert said in " ".join(result.err.split())
    assert not (tmp_path / "state").exists()


# -- end to end --------------------------------------------------------------------------------

class Poller:
    """Predicts on ``url`` every ~20 ms in a thread; records when each request failed."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failures = url, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                assert _predict(self.url) == {"y": [2.0, 4.0], "version": "v1"}
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append((time.time(), repr(exc)))
            time.sleep(0.02)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)

    def failed_before(self, when: float) -> list:
        return [f for f in self.failures if f[0] < when]


def _predict(url: str, x=(1, 2), timeout: float = 5):
    body = json.dumps({"input": {"x": list(x)}}).encode()
    req = urllib.request.Request(url + "/predict", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())["output"]


def _answers(url: str) -> bool:
    try:
        _predict(url, timeout=2)
        return True
    except OSError:
        return False


def _events(state: Path, target: str) -> list[dict]:
    from mlserve.state import State
    journal = State.for_reading(state)
    try:
        return journal.events(target, 100)
    finally:
        journal.close()


def _processes_under(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` (what a target runs from there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(path) + "/" in argv and stat != "Z":
                found.append(int(entry.name))
    return found


def _tree_digest(root: Path) -> str:
    """Names, modes and contents below ``root`` (not the contents of the running model's log,
    which the poller's requests append to)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(f"{path.relative_to(root)} {path.lstat().st_mode}".encode())
        if path.is_file() and not path.is_symlink() and path.name != "runtime.log":
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def cleanup(tmp_path):
    """Whatever a test leaves deployed is deleted, even when it failed half-way."""
    yield
    project, state = tmp_path / "proj", tmp_path / "state"
    if (project / "mlserve.yaml").exists() and state.exists():
        from mlserve import service
        from mlserve.errors import MlserveError
        for target in yaml.safe_load((project / "mlserve.yaml").read_text())["targets"]:
            try:
                service.delete(project, target, state)
            except MlserveError:
                pass


def _migrate(capsys, project: Path, state: Path, *args: str):
    result = run_cli(capsys, "migrate", *args, "-f", str(project), "--state", str(state), "--json",
                     "--yes")
    return result, json.loads(result.out)


def _migrated_at(state: Path, target: str) -> float:
    return [e["at"] for e in _events(state, target) if e["kind"] == "migrated"][-1]


@pytest.mark.slow
@pytest.mark.usefixtures("cleanup")
def test_local_to_local_dry_run_busy_then_migrate(tmp_path, capsys):
    from mlserve import service
    from mlserve.state import State
    from tests.infra.net import free_port
    port_a, port_b = free_port(), free_port()
    project = _project(tmp_path, {"a": _local(port_a), "b": _local(port_b)})
    state = tmp_path / "state"
    first = service.deploy(project, "a", state)
    inputs = tmp_path / "saved.jsonl"
    inputs.write_text('{"x": [3, 4.5]}\n\n# from production\n{"x": []}\n')
    with Poller(first.url) as poller:
        before = _tree_digest(state)
        result, planned = _migrate(capsys, project, state, "--from", "a", "--to", "b",
                                   "--dry-run", "--inputs", str(inputs))
        assert result.code == 0, result.err
        assert (planned["status"], planned["inputs"], planned["compared"]) == ("planned", 3, 0)
        assert set(planned["plans"]) == {"a", "b"}
        assert _tree_digest(state) == before, "--dry-run changed the state directory"

        journal = State(state)
        with journal.lock("a"):                   # a deploy of the source is running
            busy, data = _migrate(capsys, project, state, "--from", "a", "--to", "b")
        assert busy.code == 1 and "target 'a' is busy" in busy.err
        with journal.lock("b"):                   # a deploy of the destination is running
            busy, data = _migrate(capsys, project, state, "--from", "a", "--to", "b")
        journal.close()
        assert busy.code == 1 and "target 'b' is busy" in data["message"]
        assert "nothing was changed" in data["message"] and data["status"] == "failed"
        assert not _answers(f"http://127.0.0.1:{port_b}")

        result, done = _migrate(capsys, project, state, "--from", "a", "--to", "b",
                                "--inputs", str(inputs))
    assert result.code == 0, result.err
    assert (done["status"], done["from"], done["to"], done["release"]) == \
        ("migrated", "a", "b", first.release)
    assert (done["compared"], done["mismatches"], done["source"]) == (3, [], "deleted")
    assert set(done["timings"]) >= {"plan", "lock", "deploy", "compare", "delete"}
    assert poller.ok > 0 and poller.failed_before(_migrated_at(state, "b")) == []
    assert _predict(done["url"]) == {"y": [2.0, 4.0], "version": "v1"}
    assert not _answers(first.url) and _processes_under(state / "local" / "a") == []
    assert service.status(project, "a", state)["status"] in ("DELETED", "NOT DEPLOYED")
    [moved] = [e for e in _events(state, "b") if e["kind"] == "migrated"]
    assert moved["message"].startswith("from a (local): release " + first.release)


@pytest.mark.slow
@pytest.mark.usefixtures("cleanup")
def test_failures_leave_the_source_serving_and_remove_what_was_created(tmp_path, capsys):
    from mlserve import service
    from tests.infra.net import free_port
    ports = {name: free_port() for name in ("a", "fails", "skewed", "noise")}
    project = _project(tmp_path, {name: _local(port) for name, port in ports.items()},
                       {ports["fails"]: {"fail_load": True}, ports["skewed"]: {"skew": 1.001},
                        ports["noise"]: {"skew": 1 + 1e-9}})
    state = tmp_path / "state"
    first = service.deploy(project, "a", state)
    inputs = tmp_path / "saved.jsonl"
    inputs.write_text('{"x": [0]}\n{"x": [0, 5]}\n')
    with Poller(first.url) as poller:
        result, failed = _migrate(capsys, project, state, "--from", "a", "--to", "fails")
        assert result.code == 1
        assert "failed to load: RuntimeError: load failed on purpose on port" in failed["message"]
        assert "what was created on 'fails' was removed" in failed["message"]
        assert failed["status"] == "failed" and "load failed on purpose" in result.err  # log tail

        result, failed = _migrate(capsys, project, state, "--from", "a", "--to", "skewed",
                                  "--inputs", str(inputs))
        assert result.code == 1 and failed["compared"] == 3
        assert failed["mismatches"] == [
            {"input": "smoke case 1", "path": "$.y[0]", "from": 2.0, "to": 1 * 2 * 1.001,
             "reason": "numbers differ beyond rtol=1e-06 atol=0"},
            {"input": f"{inputs}:2", "path": "$.y[1]", "from": 10.0, "to": 5 * 2 * 1.001,
             "reason": "numbers differ beyond rtol=1e-06 atol=0"}]
        assert "smoke case 1 at $.y[0]: a gave 2.0, skewed gave 2.002" in result.err
        for target in ("fails", "skewed"):
            assert not _answers(f"http://127.0.0.1:{ports[target]}")
            assert _processes_under(state / "local" / target) == []
            assert service.status(project, target, state)["status"] in ("DELETED", "NOT DEPLOYED")

        result, done = _migrate(capsys, project, state, "--from", "a", "--to", "skewed",
                                "--rtol", "1e-2", "--keep-source")
        assert result.code == 0 and done["source"] == "kept", result.err
        result = run_cli(capsys, "migrate", "--from", "a", "--to", "noise", "--keep-source",
                         "--inputs", str(inputs), "-f", str(project), "--state", str(state))
        assert result.code == 0, result.err          # the result on stdout, progress on stderr
        assert result.out.startswith("migrated r-") and "3 input(s) agreed; a kept" in result.out
        assert "comparing 3 input(s) on a and noise" in result.err

        result, refused = _migrate(capsys, project, state, "--from", "a", "--to", "skewed")
        assert result.code == 1
        assert "target 'skewed' already has a deployment (READY" in refused["message"]
        assert _answers(f"http://127.0.0.1:{ports['skewed']}")       # left as it was
    assert poller.ok > 0 and poller.failures == []


def _start(project: Path, state: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*MLSERVE, "migrate", *args, "-f", str(project), "--state", str(state),
                             "--yes", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, "COLUMNS": "200"})


def _wait(predicate, timeout: float = 30, what: str = "it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _loading(state: Path, target: str) -> bool:
    return bool(_processes_under(state / "local" / target))


def _comparing(state: Path, target: str) -> bool:
    """The destination's deploy is over (journalled): the migration is comparing (the slow
    input takes 1.5 s on each side)."""
    return (state / "state.db").exists() and any(e["kind"] == "deployed"
                                                 for e in _events(state, target))


@pytest.mark.slow
@pytest.mark.usefixtures("cleanup")
def test_interrupted_migrations(tmp_path, capsys):
    """SIGINT and SIGTERM clean up themselves; after SIGKILL the next command does."""
    from mlserve import service
    from tests.infra.net import free_port
    names = ("a", "int-load", "int-compare", "term-compare", "kill-load", "kill-compare")
    ports = {name: free_port() for name in names}
    slow = {"slow_load": 1.5}
    project = _project(tmp_path, {name: _local(port) for name, port in ports.items()},
                       {ports["int-load"]: slow, ports["kill-load"]: slow})
    state = tmp_path / "state"
    first = service.deploy(project, "a", state)
    slow_inputs = tmp_path / "slow.jsonl"
    slow_inputs.write_text('{"x": [1], "sleep": 1.5}\n')
    with Poller(first.url) as poller:
        for target, sig, point in (("int-load", signal.SIGINT, "load"),
                                   ("int-compare", signal.SIGINT, "compare"),
                                   ("term-compare", signal.SIGTERM, "compare")):
            proc = _start(project, state, "--from", "a", "--to", target, "--inputs",
                          str(slow_inputs))
            if point == "load":
                _wait(lambda: _loading(state, target), what=f"{target} loading")
            else:
                _wait(lambda: _comparing(state, target), what=f"{target} deployed")
                for other in ("a", target):    # both targets are held to the end
                    busy = run_cli(capsys, "deploy", other, "-f", str(project), "--state",
                                   str(state))
                    assert busy.code == 1, busy.err
                    assert f"target '{other}' is busy: migrate a -> {target} by pid" in busy.err
                second, data = _migrate(capsys, project, state, "--from", "a", "--to", target)
                assert second.code == 1 and "is busy: migrate a ->" in data["message"]
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 1, err
            name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
            assert (f"failed: interrupted ({name}); what was created on '{target}' was removed"
                    in err)
            assert json.loads(out)["status"] == "failed"
            assert _processes_under(state / "local" / target) == []
            assert not _answers(f"http://127.0.0.1:{ports[target]}")

        proc = _start(project, state, "--from", "a", "--to", "kill-load")
        _wait(lambda: _loading(state, "kill-load"), what="kill-load loading")
        proc.kill()
        proc.wait(10)
        assert _processes_under(state / "local" / "kill-load")     # left behind, and found:
        assert service.status(project, "kill-load", state)["status"] == "PENDING"
        assert run_cli(capsys, "delete", "kill-load", "-f", str(project), "--state", str(state),
                       "--yes").code == 0
        assert _processes_under(state / "local" / "kill-load") == []

        proc = _start(project, state, "--from", "a", "--to", "kill-compare", "--inputs",
                      str(slow_inputs))
        _wait(lambda: _comparing(state, "kill-compare"), what="kill-compare deployed")
        proc.kill()
        proc.wait(10)
        assert service.status(project, "kill-compare", state)["status"] == "READY"   # found
        result, done = _migrate(capsys, project, state, "--from", "a", "--to", "kill-compare",
                                "--keep-source")                 # the next migrate finishes it
        assert result.code == 0 and done["status"] == "migrated", result.err
        assert done["release"] == first.release and _answers(done["url"])
        assert [e["kind"] for e in _events(state, "kill-compare")][-1] == "migrated"
    assert poller.ok > 0 and poller.failures == []


@pytest.mark.slow
@pytest.mark.usefixtures("cleanup")
def test_local_to_ssh_and_back(sshd_host, tmp_path, capsys):
    from mlserve import service
    from tests.infra.net import free_port
    from tests.ssh_models import target_for
    ssh = target_for(sshd_host, tmp_path / "remote", free_port())
    broken = target_for(sshd_host, tmp_path / "remote2", free_port())
    project = _project(tmp_path, {"a": _local(free_port()), "box": {"provider": "ssh", **ssh},
                                  "broken": {"provider": "ssh", **broken}},
                       {broken["port"]: {"fail_load": True}})
    state = tmp_path / "state"
    first = service.deploy(project, "a", state)
    with Poller(first.url) as poller:
        result, failed = _migrate(capsys, project, state, "--from", "a", "--to", "broken")
        assert result.code == 1 and "RuntimeError: load failed on purpose" in failed["message"]
        assert "what was created on 'broken' was removed" in failed["message"]
        assert _processes_under(tmp_path / "remote2") == []
        assert list((tmp_path / "remote2").glob("deployments/*")) == []   # nothing left there
        assert service.status(project, "broken", state)["status"] in ("DELETED", "NOT DEPLOYED")
        assert poller.failures == []

        result, there = _migrate(capsys, project, state, "--from", "a", "--to", "box")
        assert result.code == 0, result.err
    assert poller.ok > 0 and poller.failed_before(_migrated_at(state, "box")) == []
    assert (there["release"], there["providers"]) == (first.release, {"from": "local", "to": "ssh"})
    assert not _answers(first.url)

    with Poller(there["url"]) as poller:
        result, back = _migrate(capsys, project, state, "--from", "box", "--to", "a")
        assert result.code == 0, result.err
    assert poller.ok > 0 and poller.failed_before(_migrated_at(state, "a")) == []
    assert back["url"] == first.url and _predict(first.url) == {"y": [2.0, 4.0], "version": "v1"}
    assert not _answers(there["url"])
    assert service.status(project, "box", state)["status"] in ("DELETED", "NOT DEPLOYED")
