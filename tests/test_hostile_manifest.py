"""Hostile manifests: every one is refused with one located message, exit 2, never a crash or a hang.

Driven through the real CLI (`validate`, with and without --json). Classes: the named YAML
attacks (alias bombs of several sizes in a memory-limited child, recursive aliases, tags,
complex and merge keys, deep nesting, huge numbers), what `-f` may point at (FIFO, devices,
directories, big files, non-UTF-8), generated token soups, generated YAML documents with hostile
strings, and mutations of a valid manifest.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import string
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import MLSERVE, REPO, run_cli
from tests.test_manifest_errors import GOOD, MODEL




def _unsafe_chars(text: str) -> list[str]:
    """Characters that would act on a terminal: C0/C1 controls but newline, bidi and format
    controls, line and paragraph separators."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


def assert_refused(result, *, json_mode: bool = False, fragments: tuple = ()) -> None:
    """Exit 2, one readable error headline, nothing that can act on a terminal, no crash."""
    assert result.code == 2, result
    for stream in (result.out, result.err):
        assert "internal error" not in stream and "Traceback" not in stream, result
    headlines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(headlines) == 1 and result.err.startswith("error:"), result.err
    assert not _unsafe_chars(result.err), [hex(ord(c)) for c in _unsafe_chars(result.err)]
    if json_mode:
        data = json.loads(result.out)
        assert data["error"] == "ManifestError" and data["exit_code"] == 2
        assert all(p in result.err for p in data["problems"])         # the same located lines
    else:
        assert result.out == ""
    text = " ".join(result.err.split())
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {result.err}"


@pytest.fixture(scope="module")
def project():
    """One project directory for the whole module (hypothesis reuses it between examples)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "model.py").write_text(MODEL)
        yield root


def validate(capsys, root: Path, text: str | bytes, *extra: str):
    path = root / "mlserve.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return run_cli(capsys, "validate", "-f", str(path), *extra)


# --- the named attacks ---------------------------------------------------------------------------

def _bomb(levels: int, width: int = 10) -> str:
    """A "billion laughs" of width**levels leaves, used as a smoke input of a valid manifest."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    body = "\n".join(f"  {line}" for line in lines)
    return GOOD + f"smoke:\n  - input:\n{body.replace('  a', '      a')}\n"


def _nested(depth: int, flow: bool) -> str:
    if flow:
        return GOOD + "smoke:\n  - input: " + "[" * depth + "]" * depth + "\n"
    return GOOD + "smoke:\n  - input:\n" + "".join(" " * (6 + 2 * i) + f"k{i}:\n"
                                                   for i in range(depth))


def _merge_bomb(levels: int) -> str:
    return "a0: &a0 {x: 1, y: 2}\n" + "".join(
        f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 10)}]}}\n" for i in range(1, levels))


ATTACKS = [
    ("recursive alias in a list", "a: &a [*a]\n", ["recursive alias", "mlserve.yaml:1:"]),
    ("recursive alias in a mapping", "a: &a {b: *a}\n", ["recursive alias"]),
    ("recursive alias through a merge", "a: &a {<<: *a}\n", ["recursive alias"]),
    ("recursive alias deep inside", GOOD + "smoke:\n  - input: &x {a: [1, {b: *x}]}\n",
     ["recursive alias"]),
    ("python object tag", GOOD + "x: !!python/object/apply:os.system [id]\n",
     ["mlserve.yaml:6:4", "'!!python/object/apply:os.system' is not supported", "remove the tag"]),
    ("python name tag", GOOD + "x: !!python/name:os.system ''\n", ["is not supported"]),
    ("python tag on the top mapping", "!!python/object:os.Foo {a: 1}\n", ["is not supported"]),
    ("binary tag", GOOD + "x: !!binary aGVsbG8=\n", ["'!!binary' is not supported"]),
    ("set tag", GOOD + "x: !!set {a, b}\n", ["'!!set' is not supported"]),
    ("omap tag", GOOD + "x: !!omap [a: 1]\n", ["'!!omap' is not supported"]),
    ("custom local tag", GOOD + "x: !custom 1\n", ["'!custom' is not supported"]),
    ("tag on a key", GOOD + "!!python/str x: 1\n", ["is not supported"]),
    ("complex key list", "? [a, b]\n: 1\n", ["a key is a list", "complex key"]),
    ("complex key mapping", GOOD + "? {a: 1}\n: 1\n", ["a key is a mapping"]),
    ("merge of a scalar", GOOD + "<<: 1\n", ["merge key", "mlserve.yaml:6:5"]),
    ("merge of a list of scalars", GOOD + "<<: [1, 2]\n", ["merge key"]),
    ("merge of a null", GOOD + "<<:\n", ["merge key"]),
    ("two merge keys", "d: &d {a: 1}\ne: {<<: *d, <<: *d}\n", ["duplicate key"]),
    ("undefined alias", GOOD + "x: *nothing\n", ["not valid YAML", "undefined alias"]),
    ("two documents", GOOD + "---\n" + GOOD, ["not valid YAML", "single document"]),
    ("raw ESC in a key", GOOD + "env: {\x1b[31mRED: 1}\n", ["not valid YAML", "0x001b"]),
    ("raw NUL", GOOD + "env: {A: \x00}\n", ["not valid YAML", "0x0000"]),
    ("escaped ESC in a key", GOOD + 'env: {"\\e[2J\\e[31mX": 1}\n', ["env.\\x1b[2J"]),
    ("escaped controls in a value", GOOD.replace("name: hello", 'name: "a\\r\\0\\u202e\\x85"'),
     ["is not allowed", "\\r\\x00\\u202e\\x85"]),
    ("bidi override in a plain value", GOOD.replace("name: hello", "name: \u202eolleh"),
     ["'\\u202eolleh' is not allowed"]),
    ("line separator in a key", GOOD + 'env: {"A\\LB": x}\n', ["env.A\\u2028B"]),
    ("huge integer", GOOD + "scaling: {concurrency: " + "9" * 5000 + "}\n",
     ["scaling.concurrency", "too many digits", "(5,000 characters)"]),
    ("huge integer key value", GOOD + "smoke:\n  - input: " + "1" * 10000 + "\n",
     ["too many digits"]),
    ("huge float", GOOD + "resources: {cpu: 1e999999}\n", ["resources.cpu"]),
    ("5,000-character key", GOOD + "? " + "k" * 5000 + "\n: 1\n",
     ["unknown key", "(5,000 characters)"]),
    ("1,025-character simple key", GOOD + "k" * 1025 + ": 1\n", ["not valid YAML"]),
    ("5,000-character name", GOOD.replace("name: hello", "name: " + "x" * 5000),
     ["(5,000 characters) is not allowed"]),
    ("name with a trailing newline", GOOD.replace("name: hello", 'name: "hello\\n"'),
     ["'hello\\n' is not allowed"]),
    ("nesting 101 flow", _nested(101, True), ["nested more than 100 levels"]),
    ("nesting 1,000 flow", _nested(1000, True), ["nested"]),
    ("nesting 20,000 flow", _nested(20000, True), ["nested"]),
    ("nesting 150 block", _nested(150, False), ["nested more than 100 levels"]),
    ("nesting 500 block", _nested(500, False), ["nested more than 100 levels"]),
    ("alias bomb 10^5", _bomb(5), ["alias bomb", "10,000"]),
    ("merge bomb 10^5", _merge_bomb(5), ["alias bomb"]),
    ("empty document", "", ["is empty"]),
    ("only a comment", "# nothing\n", ["is empty"]),
    ("a scalar document", "hello\n", ["must be a mapping"]),
    ("a null document", "~\n", ["is empty"]),
    ("a list document", "- 1\n", ["must be a mapping"]),
    ("mapping as the name", GOOD.replace("name: hello", "name: {a: 1, b: 2}"),
     ["got a mapping of 2 keys"]),
    ("list as the port", GOOD.replace("port: 8080", "port: [1, 2, 3]"), ["got a list of 3 items"]),
    ("list as the provider", GOOD.replace("provider: local", "provider: [local]"),
     ["targets.local"]),
    ("mapping as a target", GOOD.replace("{provider: local, port: 8080}", "[1]"),
     ["targets.local"]),
    ("integer keys", GOOD + "env: {1: a}\n", ["env.1", "'1' is not allowed"]),
    ("boolean-looking keys stay names", GOOD + "env: {on: a, yes: b}\n", ["valid"]),
    ("null key", GOOD + "~: 1\n", ["unknown key '~'"]),
    ("timestamp as the name", GOOD.replace("name: hello", "name: 2024-01-01"),
     ["'2024-01-01' is not allowed"]),
    ("non-UTF-8 byte", (GOOD + "env: {A: \xff}\n").encode("latin-1"),
     ["mlserve.yaml:6:10", "not UTF-8", "0xff"]),
    ("UTF-16 file", GOOD.encode("utf-16"), ["not UTF-8"]),
]


@pytest.mark.parametrize("case, text, fragments", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_named_attack(capsys, project, case, text, fragments):
    started = time.monotonic()
    result = validate(capsys, project, text)
    if fragments == ["valid"]:
        assert result.code == 0, result.err
        return
    assert_refused(result, fragments=tuple(fragments))
    assert time.monotonic() - started < 10
    assert_refused(validate(capsys, project, text, "--json"), json_mode=True)


def test_thousands_of_problems_are_counted_and_fifty_listed(capsys, project):
    text = GOOD + "env:\n" + "".join(f"  {i}bad: x\n" for i in range(3000)) + "name: again\n"
    result = validate(capsys, project, text)
    assert_refused(result, fragments=("is invalid (1 problem)", "duplicate key"))
    result = validate(capsys, project, text.replace("name: again\n", ""))
    assert_refused(result, fragments=("is invalid (3,000 problems)", "... and 2,950 more"))
    assert len(result.err.splitlines()) < 60


def test_attack_table_is_large_enough():
    assert len(ATTACKS) >= 50


def test_bom_and_merges_are_plain_yaml(capsys, project):
    """A leading BOM is ignored; `<<: *defaults` merges, keys written win, positions stay right."""
    text = ("\ufeff" + GOOD.replace("  local: {provider: local, port: 8080}",
                                    "  local: {<<: *t, port: 8081}")
            .replace("targets:\n", "defaults: &t {provider: local, port: 1}\ntargets:\n"))
    result = validate(capsys, project, text)
    assert "unknown key 'defaults'" in result.err       # the anchor's own key is still checked
    text = text.replace("defaults: &t {provider: local, port: 1}\n", "").replace(
        "{<<: *t, port: 8081}", "{<<: {provider: local, port: 1, host: x y}, port: 8081}")
    result = validate(capsys, project, text)
    assert_refused(result, fragments=("targets.local.host", "'x y' is not an IP address",
                                      "mlserve.yaml:5:48"))
    ok = validate(capsys, project, text.replace("host: x y", "host: localhost"), "--json")
    assert ok.code == 0, ok.err


# --- bombs in a child with a memory limit: a regression fails instead of eating the machine ----

_LIMIT = 500 * 1024 * 1024


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_LIMIT, _LIMIT))


BOMBS = [("10^9 alias bomb", _bomb(9)), ("10^30 alias bomb", _bomb(30)),
         ("10^8 merge bomb", _merge_bomb(9))]


@pytest.mark.parametrize("case, text", BOMBS, ids=[b[0] for b in BOMBS])
def test_bomb_is_refused_quickly_within_500_mb(tmp_path, case, text):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "mlserve.yaml").write_text(text)
    started = time.monotonic()
    proc = _run_child("validate", "--json", "-f", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "alias bomb" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == 2
    assert time.monotonic() - started < 15


def test_small_aliases_are_fine(capsys, project):
    result = validate(capsys, project, _bomb(3), "--json")        # 1,000 leaves: legitimate
    assert result.code == 0, result.err


def _run_child(*args: str, timeout: float = 30):
    """The CLI in a child limited to 500 MB: a regression fails instead of eating the machine."""
    return subprocess.run([*MLSERVE, *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limited, cwd=REPO, env={**os.environ, "COLUMNS": "200"})


# --- what -f may point at --------------------------------------------------------------------------

def _special(tmp_path: Path, kind: str) -> tuple[str, list[str]]:
    """A path of the given kind, and what the error must say."""
    target = tmp_path / "mlserve.yaml"
    if kind == "fifo":
        os.mkfifo(target)
        return str(target), ["FIFO", "regular file"]
    if kind == "fifo directory":
        os.mkfifo(target)
        return str(tmp_path), ["FIFO"]
    if kind == "dev zero":
        return "/dev/zero", ["character device"]
    if kind == "dev null":
        return "/dev/null", ["character device"]
    if kind == "directory named mlserve.yaml":
        target.mkdir()
        return str(tmp_path), ["is a directory"]
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
        return str(target), ["cannot be read"]
    if kind == "2 MB manifest":
        target.write_text(GOOD + "#" * (2 * 1024 * 1024) + "\n")
        return str(target), ["larger than 1024 KiB", "at most 1024 KiB"]
    if kind == "1 MiB of text":
        target.write_text(GOOD + "smoke:\n" + "".join(f"  - input: {'x' * 1000}\n"
                                                      for _ in range(1000)))
        return str(target), []
    if kind == "symlink loop":
        target.symlink_to(target)
        return str(target), ["cannot be read"]
    if kind == "dangling symlink":
        target.symlink_to(tmp_path / "nowhere")
        return str(target), ["no manifest at"]
    if kind == "name too long":
        return str(tmp_path / ("m" * 5000 + ".yaml")), ["File name too long"]
    if kind == "proc environ":
        return "/proc/self/environ", ["not valid YAML"]
    raise AssertionError(kind)


BLOCKING = ["fifo", "fifo directory", "dev zero"]      # a regression would hang or grow
SPECIAL = ["dev null", "directory named mlserve.yaml", "socket", "2 MB manifest", "1 MiB of text",
           "symlink loop", "dangling symlink", "name too long", "proc environ"]


@pytest.mark.parametrize("kind", BLOCKING)
def test_blocking_file_as_manifest_is_refused_at_once(tmp_path, kind):
    (tmp_path / "model.py").write_text(MODEL)
    path, fragments = _special(tmp_path, kind)
    proc = _run_child("validate", "--json", "-f", path, timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == 2
    text = " ".join(proc.stderr.split())
    assert all(fragment in text for fragment in fragments), proc.stderr


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_file_as_manifest(tmp_path, capsys, kind):
    (tmp_path / "model.py").write_text(MODEL)
    path, fragments = _special(tmp_path, kind)
    for extra in ((), ("--json",)):
        result = run_cli(capsys, "validate", "-f", path, *extra)
        if kind == "1 MiB of text":        # a big but honest manifest is read, not refused
            assert result.code == 0, result.err
            continue
        assert_refused(result, json_mode=bool(extra), fragments=tuple(fragments))


# --- generated: token soups, documents, mutations ------------------------------------------------

TOKENS = ["a", "b", "name", "model", "targets", "env", "&a", "*a", "&b", "*b", "<<", ":", ": ",
          "- ", "? ", "{", "}", "[", "]", ",", "!!python/object:os.system", "!!str", "!x", "'",
          '"', "\\e", "\n", "\n  ", "\n    ", "#", "|", ">", "---", "...", "~", "null", "1e999",
          "9" * 50, "%YAML 1.1", "\t", "\ufeff", "\u202e", "\x85", "\x1b", "\x00", "\r"]

HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from(["\x1b", "\x00", "\r", "\n", "\u202e", "\u2028", "\x7f",
                                      "\x9b", "{", "}", "'", '"', "$", "`", "a", " "]),
            max_size=30),
    st.sampled_from(["x" * 5000, "\x1b[2J\x1b[31m", "model.py:Model\n", "/etc/shadow",
                     "../../../etc/passwd", "/proc/self/environ", "{key}", "%s%n"]),
).map(lambda s: "".join(c for c in s if unicodedata.category(c) != "Cs"))

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HOSTILE_TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(HOSTILE_TEXT, inner, max_size=4)), max_leaves=20)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=80)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_generated_token_soup_never_crashes(capsys, project, tokens):
    result = validate(capsys, project, "".join(tokens))
    assert result.code in (0, 2), result
    if result.code == 2:
        assert_refused(result)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(VALUES)
def test_generated_document_never_crashes(capsys, project, data):
    text = yaml.safe_dump(data, allow_unicode=True)
    result = validate(capsys, project, text, "--json")
    assert result.code == 2        # no generated document is a whole valid manifest
    assert_refused(result, json_mode=True)


FIELDS = [("name",), ("model",), ("model", "entrypoint"), ("model", "python"),
          ("model", "requirements"), ("model", "inputs"), ("targets",), ("targets", "local"),
          ("targets", "local", "provider"), ("targets", "local", "port"),
          ("targets", "local", "host"), ("resources",), ("resources", "memory"), ("env",),
          ("secrets",), ("smoke",), ("scaling",), ("scaling", "concurrency")]


def _deep(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=120)
@given(st.sampled_from(FIELDS), st.one_of(VALUES, st.builds(_deep, st.integers(90, 130)),
                                          st.sampled_from([10 ** 400, "9" * 4000, "x" * 100_000])))
def test_mutated_manifest_is_valid_or_refused(capsys, project, field, value):
    data = yaml.safe_load(GOOD)
    node = data
    for key in field[:-1]:
        node = node.setdefault(key, {})
    node[field[-1]] = value
    result = validate(capsys, project, yaml.safe_dump(data, allow_unicode=True, width=1 << 20))
    assert result.code in (0, 2), result
    if result.code == 2:
        assert_refused(result)
        assert "mlserve.yaml:" in result.err


def _target_fields():
    from mlserve.targets import LocalTarget, SSHTarget, DockerTarget, ReplicateTarget, \
        BasetenTarget, VMTarget
    return [(m.model_fields["provider"].annotation.__args__[0], name)
            for m in (LocalTarget, SSHTarget, DockerTarget, ReplicateTarget, BasetenTarget, VMTarget)
            for name in m.model_fields if name != "provider"]


HOST_LIKE = st.one_of(HOSTILE_TEXT, st.sampled_from(
    ["me@host\n", "me@host:22\n", "127.0.0.1\n", "host\r", "a@b@c", "[::1]:99999", "::1",
     "me@[::1]:2222", "0.0.0.0 ", " host"]))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(st.sampled_from(_target_fields()), st.one_of(HOST_LIKE, VALUES, st.lists(HOST_LIKE,
                                                                                 max_size=3)))
def test_every_target_field_takes_hostile_values(capsys, project, field, value):
    provider, name = field
    target = {"provider": provider, name: value}
    target.setdefault("hosts", ["me@host"]) if provider == "ssh" else None
    target.setdefault("image", "r/x") if provider == "docker" else None
    target.setdefault("model", "a/b") if provider == "replicate" else None
    data = {**yaml.safe_load(GOOD), "targets": {"t": target}}
    result = validate(capsys, project, yaml.safe_dump(data, allow_unicode=True, width=1 << 20))
    assert result.code in (0, 2), result
    if result.code == 2:
        assert_refused(result, fragments=(f"targets.t",))
    elif name in ("host", "bind", "jump_host", "hosts"):      # an address is one clean line
        for text in value if isinstance(value, list) else [value]:
            assert not any(c in str(text) for c in "\n\r\0 "), value


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(HOSTILE_TEXT)
def test_hostile_key_is_shown_escaped(capsys, project, key):
    text = GOOD + yaml.safe_dump({"env": {key: "x"}, key: 1}, allow_unicode=True, width=1 << 20)
    result = validate(capsys, project, text)
    assert_refused(result)
    shown = repr(key[:60])[1:-1]
    if key and key not in ("env",) and "\\" not in shown:
        assert shown in result.err


def test_whole_printable_ascii_is_harmless(capsys, project):
    text = GOOD + "env: {X: " + json.dumps(string.printable) + "}\nsmoke: [{input: 1, x: 2}]\n"
    assert_refused(validate(capsys, project, text), fragments=("unknown key 'x'",))


@settings(max_examples=500)
@given(st.text(), st.integers(1, 100))
def test_shown_text_never_acts_on_a_terminal(text, limit):
    from mlserve.strict import clean, shown
    text = "".join(c for c in text if unicodedata.category(c) != "Cs")
    assert not _unsafe_chars(clean(text)) and not _unsafe_chars(shown(text, limit))
    assert len(shown(text, limit)) <= 10 * limit + 40         # an escape is at most \\U0010ffff
