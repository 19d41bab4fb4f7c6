"""The command line's conventions, through the real CLI: terminal-safe output, results on stdout,
predict's input, `serve`, fix hints that repeat -f/--state, delete's prompt, help and flags.

Generated cases: control characters in manifest keys, values and target names, and in option
values (hypothesis); JSON payloads and non-JSON text for `predict --input`; project paths with
spaces and quotes for the fix hints.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import subprocess
import time
import unicodedata
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import EXAMPLES, MLSERVE, run_process
from tests.infra.net import free_port, wait_for_port

BIDI = {chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
def _commands() -> tuple[str, ...]:
    """Every command the app has (read from it, so a new command is checked too)."""
    import typer
    from mlserve.cli.main import app
    return tuple(sorted(typer.main.get_command(app).commands))


COMMANDS = _commands()


def unsafe_chars(text: str) -> set[str]:
    """Characters that would act on a terminal: controls other than newline and tab, bidi overrides."""
    return {c for c in text if (unicodedata.category(c) == "Cc" and c not in "\n\t") or c in BIDI}


def hello(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    if not project.exists():
        shutil.copytree(EXAMPLES / "hello", project)
    return project


# --- terminal escapes (issue 9, item 6) ---------------------------------------------------------

hostile = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
with_control = st.builds(lambda a, c, b: a + c + b, hostile,
                         st.sampled_from(["\x1b[31m", "\x1b]0;pwned\x07", "\x9b2J", "\x7f", "\r",
                                          "\x00", "\u202e", "\u2066", "\x08", "\x1b"]), hostile)


def _manifest(tmp_path: Path, doc: dict) -> Path:
    """JSON is YAML: every string is written with escapes, so the loader sees the raw characters."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model.py").write_text("class Model:\n    def load(self): pass\n"
                                       "    def predict(self, p): return p\n")
    (tmp_path / "mlserve.yaml").write_text(json.dumps(doc))
    return tmp_path


BASE = {"name": "hello", "model": {"entrypoint": "model.py:Model", "requirements": []},
        "targets": {"local": {"provider": "local", "port": 8080}}}


MANIFEST_CASES = (
    lambda key, value: {**BASE, key: 1},                                          # unknown key
    lambda key, value: {**BASE, "model": {**BASE["model"], key: value}},         # nested key
    lambda key, value: {**BASE, "name": value},                                   # invalid value
    lambda key, value: {**BASE, "targets": {key: {"provider": "local", "port": value}}},
    lambda key, value: {**BASE, "env": {"A": value}, "targets": {key: {"provider": value}}},
)


@settings(max_examples=25)
@given(key=with_control, value=with_control, case=st.sampled_from(MANIFEST_CASES))
def test_control_characters_from_the_manifest_never_reach_the_terminal(tmp_path_factory, key,
                                                                       value, case):
    root = tmp_path_factory.mktemp("m")
    project = _manifest(root, case(key, value))
    for args in (["validate", "-f", str(project)], ["status", key, "-f", str(project)],
                 ["deploy", key, "-f", str(project), "--state", str(root / "st")]):
        result = _run_in_process(*args)
        assert result.code in (1, 2, 3), (args, result)
        assert not unsafe_chars(result.err + result.out), (args, result.err)


def _run_in_process(*args: str):
    """run_cli without pytest's capsys (hypothesis runs many examples in one test)."""
    import contextlib
    import io
    from tests.helpers import Result
    from mlserve.cli.main import run
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
    return Result(code, out.getvalue(), err.getvalue())


PROJECT = str(EXAMPLES / "hello")
ARGUMENT_CASES = (
    lambda name: ["deploy", name, "-f", PROJECT],                      # unknown target
    lambda name: ["logs", name, "-f", PROJECT],
    lambda name: ["predict", "-f", PROJECT, "--input", name],          # not JSON
    lambda name: ["deploy", "--no-such" + name],                      # click's usage error
    lambda name: ["validate", "-f", name],                             # no such manifest
    lambda name: ["build", "local", "-f", PROJECT, "--format", name],  # a callback's BadParameter
)


@settings(max_examples=40)
@given(name=with_control, case=st.sampled_from(ARGUMENT_CASES))
def test_control_characters_in_arguments_are_escaped(name, case):
    result = _run_in_process(*case(name))
    assert result.code == 2, (case(name), result)
    assert not unsafe_chars(result.err + result.out), (case(name), result.err)


def test_an_escape_is_shown_visibly_and_markup_printed_literally(tmp_path):
    project = _manifest(tmp_path, {**BASE, "mo\x1b[31mdel": 1})
    result = _run_in_process("validate", "-f", str(project))
    assert result.code == 2 and "mo\\x1b[31mdel" in result.err, result.err   # escaped, not coloured
    result = _run_in_process("status", "[red]x\u202e", "-f", str(EXAMPLES / "hello"))
    assert result.code == 2 and "[red]x\\u202e" in result.err, result.err  # markup literal


# --- results on stdout, progress on stderr (item 15) --------------------------------------------

def test_tables_are_results_on_stdout(tmp_path):
    providers = run_process("providers")
    assert providers.code == 0
    assert [line for line in providers.out.splitlines() if "ssh" in line and "deploy" in line]
    assert "ssh" not in providers.err
    project = hello(tmp_path)
    listing = run_process("list", "-f", str(project), "--state", str(tmp_path / "st"))
    assert "local" in listing.out and "NOT DEPLOYED" in listing.out and listing.err == ""
    status = run_process("status", "-f", str(project), "--state", str(tmp_path / "st"))
    assert status.out.startswith("local (local): NOT DEPLOYED") and status.err == ""
    assert "releases" not in status.out                 # no empty table for a new target


def test_a_step_that_raises_never_says_done(capsys):
    from mlserve.cli.output import RichReporter
    reporter = RichReporter()
    with reporter.progress("fast step"):
        pass
    with pytest.raises(RuntimeError):
        with reporter.progress("failing step"):
            raise RuntimeError("boom")
    err = capsys.readouterr().err
    assert "fast step ..." in err and "fast step: done" in err
    assert "failing step ..." in err and "failing step: done" not in err


@pytest.mark.slow
def test_a_failed_venv_build_never_says_done(tmp_path):
    project = _manifest(tmp_path / "proj", {**BASE, "model": {"entrypoint": "model.py:Model",
                                                              "requirements": "requirements.txt"}})
    (project / "requirements.txt").write_text("--no-index\nnosuchpkg-mlserve==1.0\n")
    result = run_process("deploy", "-f", str(project), "--state", str(tmp_path / "st"))
    assert result.code == 1 and "installing the model's requirements failed" in result.err
    assert "building a venv for 2 requirement(s) ..." in result.err
    assert "building a venv for 2 requirement(s): done" not in result.err, result.err


def test_heartbeat_beats_only_while_a_stage_runs_silently():
    from mlserve.cli.heartbeat import Heartbeat
    lines: list[str] = []
    beat = Heartbeat(lines.append, interval=0.1)
    beat.begin("stage one")
    time.sleep(0.55)
    assert 3 <= len(lines) <= 6 and all(l.startswith("stage one: still running") for l in lines)
    count = len(lines)
    for _ in range(6):                   # other output keeps it quiet
        beat.touch()
        time.sleep(0.05)
    assert len(lines) <= count + 1       # (one may have been due as the first touch came)
    count = len(lines)
    beat.begin("stage two")
    time.sleep(0.35)
    assert any(l.startswith("stage two") for l in lines[count:])
    beat.end()
    count = len(lines)
    time.sleep(0.3)
    assert len(lines) == count           # ended: silent, and its thread gone
    assert not [t for t in __import__("threading").enumerate() if t.name == "mlserve-heartbeat"]


SLOW_MODEL = """import os, time
class Model:
    def load(self):
        time.sleep(float(os.environ["LOAD_SECONDS"]))
        if os.environ.get("FAIL"):
            raise RuntimeError("load failed on purpose")
    def predict(self, payload):
        time.sleep(float(os.environ["PREDICT_SECONDS"]))
        return payload
"""


@pytest.mark.slow
@pytest.mark.parametrize("fail", [False, True])
def test_a_long_step_beats_while_it_runs_and_says_done_only_on_success(tmp_path, fail):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "model.py").write_text(SLOW_MODEL)
    env = {"LOAD_SECONDS": "2.5", "PREDICT_SECONDS": "2", **({"FAIL": "1"} if fail else {})}
    (project / "mlserve.yaml").write_text(json.dumps({
        **BASE, "env": env, "smoke": [{"input": 1, "expect": 1}],
        "targets": {"local": {"provider": "local", "port": free_port()}}}))
    state = str(tmp_path / "st")
    try:
        result = run_process("deploy", "-f", str(project), "--state", state,
                             env={"MLSERVE_HEARTBEAT_SECONDS": "0.5"})
        lines = result.err.splitlines()
        start = next(i for i, l in enumerate(lines) if re.search(r"waiting for \S+ to load \.\.\.$", l))
        beats = [l for l in lines[start:] if "to load: still running" in l]
        assert len(beats) >= 3, result.err
        done = [l for l in lines if "to load: done" in l]
        if fail:
            assert result.code == 1 and done == [] and "load failed on purpose" in result.err
            assert [l for l in lines if "to load: failed" in l], result.err
        else:
            assert result.code == 0 and len(done) == 1, result.err
            assert lines.index(done[0]) > lines.index(beats[-1])
            # a plain step (no progress bar) beats too: the smoke case takes 2 s
            assert len([l for l in lines if "smoke case(s): still running" in l]) >= 2, result.err
    finally:
        run_process("delete", "--yes", "-f", str(project), "--state", state)


# --- predict's input (item 11) ------------------------------------------------------------------

def _predict(tmp_path: Path, *args: str, stdin: str | None = None):
    """A real process with a real stdin; the project is not deployed, so an input that parses
    reaches the next check ("is not deployed") and an input that does not stops before it."""
    proc = subprocess.run([*MLSERVE, "predict", "-f", str(hello(tmp_path)), "--state",
                           str(tmp_path / "st"), *args], input=stdin, capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    return proc.returncode, proc.stderr


def test_predict_reads_a_file_stdin_and_piped_input(tmp_path):
    (tmp_path / "in.json").write_text('{"x": [1, 2]}')
    for args, stdin in ((["--input", f"@{tmp_path / 'in.json'}"], None), (["--input", "-"], '{"x": 1}'),
                        ([], '{"x": [1]}'), (["--input", "null"], None)):
        code, err = _predict(tmp_path, *args, stdin=stdin)
        assert code == 2 and "is not deployed" in err, (args, err)


@pytest.mark.parametrize("args, stdin, message", [
    ([], None, "stdin is empty"),                       # stdin not a terminal, but empty
    ([], "  \n", "stdin is empty"),
    (["--input", "-"], "", "stdin is empty"),
    (["--input", "-"], "{x", "stdin is not JSON"),
    ([], "NaN", "stdin is not JSON"),
    (["--input", "@"], None, "names no file"),
    (["--input", "@/no/such/file.json"], None, "No such file"),
    (["--input", "@/"], None, "is a directory"),
    (["--input", "{x"], None, "--input is not JSON"),
    (["--input", "Infinity"], None, "--input is not JSON"),
    (["--input", ""], None, "--input is empty"),
])
def test_predict_input_errors_exit_2_before_contacting_anything(tmp_path, args, stdin, message):
    code, err = _predict(tmp_path, *args, stdin=stdin)
    assert code == 2 and message in err and "fix:" in err and "not deployed" not in err, err


@pytest.mark.slow
def test_predict_sends_piped_and_file_input_to_a_deployed_model(tmp_path):
    project = hello(tmp_path)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {free_port()}"))
    state = str(tmp_path / "st")
    (tmp_path / "in.json").write_text('{"x": [1, 2]}')
    base = [*MLSERVE, "predict", "-f", str(project), "--state", state]
    try:
        assert run_process("deploy", "-f", str(project), "--state", state).code == 0
        for extra, stdin in (([], '{"x": [1, 2]}'), (["--input", "-"], '{"x": [1, 2]}'),
                             (["--input", f"@{tmp_path / 'in.json'}"], None)):
            proc = subprocess.run([*base, *extra], input=stdin, capture_output=True, text=True,
                                  timeout=60, stdin=None if stdin is not None else subprocess.DEVNULL)
            assert (proc.returncode, proc.stdout.strip()) == (0, '{"y": [2, 4]}'), proc.stderr
        status = run_process("status", "-f", str(project), "--state", state)
        assert status.out.startswith("local (local): READY http://127.0.0.1:"), status
        assert "releases" in status.out and "serving" in status.out and status.err == ""
    finally:
        run_process("delete", "--yes", "-f", str(project), "--state", state)


def test_predict_without_input_on_a_terminal_asks_for_it(tmp_path):
    controller, terminal = pty.openpty()
    proc = subprocess.run([*MLSERVE, "predict", "-f", PROJECT, "--state", str(tmp_path / "st")],
                          stdin=terminal, capture_output=True, text=True, timeout=60)
    os.close(terminal)
    os.close(controller)
    assert proc.returncode == 2 and "no input given" in proc.stderr and "@input.json" in proc.stderr
    assert proc.stdout == ""


def test_predict_input_file_errors(tmp_path):
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "text.json").write_text("hello")
    for name, message in (("bad.json", "not UTF-8"), ("empty.json", "is empty"),
                          ("text.json", "is not JSON")):
        result = _run_in_process("predict", "-f", PROJECT, "--state", str(tmp_path / "st"),
                                 "--input", f"@{tmp_path / name}")
        assert result.code == 2 and message in result.err, result.err


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text()
                           | st.floats(allow_nan=False, allow_infinity=False),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


@settings(max_examples=150)
@given(value=json_values)
def test_any_json_input_reads_back_the_same_from_option_and_file(tmp_path_factory, value):
    from mlserve.cli.payload import read_input
    text = json.dumps(value)
    path = tmp_path_factory.mktemp("in") / "input.json"
    path.write_text(text)
    assert read_input(text) == value
    assert read_input(f"@{path}") == value


def _strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(constant)
    return json.loads(text, parse_constant=refuse)


@settings(max_examples=150)
@given(text=st.text(max_size=30) | st.sampled_from(["NaN", "[1, -Infinity]", "{}", " 1 ", "[]x"]))
def test_any_text_is_strict_json_or_a_clear_input_error(text):
    from mlserve.cli.payload import read_input
    from mlserve.errors import InvalidInput
    try:
        expected = _strict_json(text)
    except ValueError:
        with pytest.raises(InvalidInput) as exc:
            read_input(text)
        assert exc.value.exit_code == 2 and exc.value.fix
    else:
        assert read_input(text) == expected


# --- fix hints repeat -f/--state; delete (item 17) ----------------------------------------------

path_names = st.text(st.sampled_from("ab -'\"$ç"), min_size=1, max_size=10).filter(
    lambda s: s.strip(" -") == s and s not in (".", ".."))


@settings(max_examples=25)
@given(name=path_names)
def test_fix_hints_repeat_the_file_and_state_given(tmp_path_factory, name):
    root = tmp_path_factory.mktemp("h")
    project = root / name
    shutil.copytree(EXAMPLES / "hello", project)
    state = root / f"state {name}"
    result = _run_in_process("logs", "-f", str(project), "--state", str(state))
    assert result.code == 2
    fix = next(l for l in result.err.splitlines() if l.startswith("fix: "))[5:]
    assert shlex.split(fix) == ["mlserve", "deploy", "-f", str(project), "--state", str(state), "local"]


def test_fix_hints_only_add_what_the_command_takes(tmp_path):
    project = hello(tmp_path)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text() + "  rep: {provider: replicate, model: acme/hello}\n")
    state = str(tmp_path / "st")
    deploy = _run_in_process("deploy", "rep", "-f", str(project), "--state", state)
    assert deploy.code == 2
    # build takes -f but not --state
    assert f"mlserve build -f {project} TARGET" in deploy.err and "build -f" in deploy.err
    assert f"build -f {project} --state" not in deploy.err
    rollback = _run_in_process("rollback", "-f", str(project), "--state", state, "--json")
    assert rollback.code == 2
    fix = json.loads(rollback.out)["fix"]
    assert f"mlserve status -f {project} --state {state} local" in fix, fix


def test_state_from_the_environment_is_not_repeated(tmp_path, monkeypatch):
    project = hello(tmp_path)
    monkeypatch.setenv("MLSERVE_STATE", str(tmp_path / "st"))
    result = _run_in_process("logs", "-f", str(project))
    assert f"fix: mlserve deploy -f {project} local" in result.err


def test_delete_of_a_never_deployed_target_is_nothing_to_delete(tmp_path):
    result = run_process("delete", "--yes", "-f", str(hello(tmp_path)), "--state", str(tmp_path / "st"))
    assert result.code == 0 and "nothing to delete" in result.err, result.err


def test_delete_prompt_names_the_target_and_provider(tmp_path):
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.Popen([*MLSERVE, "delete", "-f", str(hello(tmp_path)), "--state",
                             str(tmp_path / "st")], stdin=terminal, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    os.close(terminal)
    os.write(controller, b"n\n")
    out, err = proc.communicate(timeout=60)
    os.close(controller)
    assert "Delete the deployment of local (local)? [y/N]" in err
    # (click's prompt leaves one space on stdout, where the terminal is)
    assert proc.returncode == 1 and "aborted: nothing was changed" in err and out.strip() == ""


# --- help, flags and start-up (item 18) ---------------------------------------------------------

def test_help_has_no_bool_placeholder_and_fits_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    for command in (None, *COMMANDS):
        args = ["-h"] if command is None else [command, "-h"]
        result = _run_in_process(*args)
        assert result.code == 0, result.err
        assert "<bool>" not in result.out, command
        assert max(len(line) for line in result.out.splitlines()) <= 80, command


def test_completion_version_and_debug_anywhere(tmp_path):
    top = _run_in_process("--help")
    assert "--install-completion" in top.out and "--show-completion" in top.out
    completion = run_process("--show-completion", "bash")       # what a shell runs
    assert completion.code == 0 and "complete" in completion.out and "mlserve" in completion.out
    for flag in ("-V", "--version"):
        version = _run_in_process(flag)
        assert version.code == 0 and version.out.startswith("mlserve ")
    (tmp_path / "mlserve.yaml").write_text("name: [\n")
    for args in (["--debug", "validate", "-f", str(tmp_path)], ["validate", "--debug", "-f", str(tmp_path)],
                 ["validate", "-f", str(tmp_path), "--debug"]):
        debug = _run_in_process(*args)
        assert debug.code == 2 and "Traceback" in debug.err, args
    assert "Traceback" not in _run_in_process("validate", "-f", str(tmp_path)).err


def test_serve_help_lists_its_options():
    result = run_process("serve", "-h", env={"COLUMNS": "120"})
    for option in ("--file", "--port", "--host", "--concurrency", "--app-dir", "--entrypoint"):
        assert option in result.out
    assert "127.0.0.1" in result.out


# --- serve (item 12) ----------------------------------------------------------------------------

SERVE_MODEL = """import os
class Model:
    def load(self):
        self.greeting = os.environ["GREETING"]
    def predict(self, payload):
        if payload == "secret":
            raise RuntimeError("token is " + os.environ["API_TOKEN"])
        return {"greeting": self.greeting, "x": payload}
"""


@pytest.mark.slow
def test_serve_runs_the_manifest_model_with_its_port_env_name_and_secrets(tmp_path):
    project = tmp_path / "proj" / "nested"
    project.mkdir(parents=True)
    (project.parent / "model.py").write_text(SERVE_MODEL)
    port = free_port()
    (project.parent / "mlserve.yaml").write_text(json.dumps({
        **BASE, "name": "greeter", "env": {"GREETING": "hi there"}, "secrets": ["API_TOKEN"],
        "targets": {"local": {"provider": "local", "port": port}}}))
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "API_TOKEN": "tok-123456"}
    # run in a subdirectory of the project, without -f: the manifest is found above (like git)
    proc = subprocess.Popen([*MLSERVE, "serve"], cwd=project, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    health = json.loads(resp.read())
                break
            except OSError:
                time.sleep(0.1)
        assert (health["status"], health["name"]) == ("ready", "greeter")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict",
                                     data=json.dumps({"input": [1, 2]}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["output"] == {"greeting": "hi there", "x": [1, 2]}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict",
                                     data=json.dumps({"input": "secret"}).encode(), method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
            body = ""
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
        assert "token is" in body and "tok-123456" not in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert f"listening on 127.0.0.1:{port}" in text, text
    assert "tok-123456" not in text


def test_serve_without_a_secret_value_says_so(tmp_path):
    project = _manifest(tmp_path, {**BASE, "secrets": ["MISSING_TOKEN_X"]})
    result = run_process("serve", "-f", str(project), env={"MISSING_TOKEN_X": ""})
    assert result.code == 3 and "MISSING_TOKEN_X is not set" in result.err

