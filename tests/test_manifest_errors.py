"""Invalid manifests: each gives one readable message with file:line:col, the fix, exit 2, no traceback."""

from __future__ import annotations

import textwrap

import pytest

from tests.helpers import run_cli

MODEL = "class Model:\n    def load(self):\n        pass\n    def predict(self, payload):\n        return payload\n"

GOOD = """\
name: hello
model:
  entrypoint: model.py:Model
targets:
  local: {provider: local, port: 8080}
"""



def _with_input(field: str) -> str:
    """GOOD with ``model.inputs.f`` set to ``field`` (flow YAML) on line 5, column 8."""
    return GOOD.replace("  entrypoint: model.py:Model\n",
                        f"  entrypoint: model.py:Model\n  inputs:\n    f: {field}\n")


# (case id, manifest text, fragments that must all appear in the error output)
CASES = [
    ("empty file", "", ["mlserve.yaml is empty", "mlserve init"]),
    ("not a mapping", "- a\n- b\n", ["must be a mapping", "mlserve.yaml:1:1"]),
    ("yaml syntax", "name: [unclosed\n", ["not valid YAML", "mlserve.yaml:2:1"]),
    ("tab indentation", "name: a\nmodel:\n\tentrypoint: m.py:M\n", ["not valid YAML", "mlserve.yaml:3:1"]),
    ("duplicate key", GOOD + "name: other\n", ["duplicate key", "mlserve.yaml:6:1", "first at line 1"]),
    ("missing name", GOOD.replace("name: hello\n", ""), ["name: Field required", "Fix: add it"]),
    ("missing model", "name: hello\ntargets:\n  local: {provider: local}\n", ["model: Field required"]),
    ("missing targets", "name: hello\nmodel: {entrypoint: model.py:Model}\n", ["targets: Field required"]),
    ("empty targets", "name: hello\nmodel: {entrypoint: model.py:Model}\ntargets: {}\n",
     ["targets:", "at least 1 item", "mlserve.yaml:3:10"]),
    ("bad name uppercase", GOOD.replace("name: hello", "name: Hello"),
     ["mlserve.yaml:1:7", "'Hello' is not allowed", "lowercase"]),
    ("name too long", GOOD.replace("name: hello", "name: " + "a" * 41), ["is not allowed", "1-40"]),
    ("name trailing dash", GOOD.replace("name: hello", "name: hello-"), ["'hello-' is not allowed"]),
    ("unknown top-level key", GOOD + "replicas: 3\n",
     ["mlserve.yaml:6:1", "unknown key 'replicas'", "known keys"]),
    ("typo top-level key", GOOD.replace("targets:", "targts:"),
     ["unknown key 'targts'", "did you mean 'targets'"]),
    ("typo nested key", GOOD.replace("  entrypoint: model.py:Model", "  entrypoint: model.py:Model\n  requirments: []"),
     ["mlserve.yaml:4:3", "model.requirments", "did you mean 'requirements'"]),
    ("entrypoint without class", GOOD.replace("model.py:Model", "model.py"),
     ["model.entrypoint", "is not `file.py:ClassName`"]),
    ("entrypoint absolute", GOOD.replace("model.py:Model", "/etc/model.py:Model"),
     ["'/etc/model.py' is an absolute path", "relative to the project directory"]),
    ("entrypoint parent dir", GOOD.replace("model.py:Model", "../model.py:Model"),
     ["'../model.py' goes up out of the project", "relative to the project directory"]),
    ("entrypoint file missing", GOOD.replace("model.py:Model", "other.py:Model"),
     ["mlserve.yaml:3:15", "'other.py' does not exist"]),
    ("entrypoint class missing", GOOD.replace("model.py:Model", "model.py:Nope"),
     ["defines no class Nope", "correct the class name"]),
    ("python version unquoted float", GOOD.replace("  entrypoint: model.py:Model", "  entrypoint: model.py:Model\n  python: 3.1"),
     ["model.python", "string"]),
    ("python version too old", GOOD.replace("  entrypoint: model.py:Model", "  entrypoint: model.py:Model\n  python: \"2.7\""),
     ["'2.7' is not allowed", "3.9 on"]),
    ("requirements wrong type", GOOD.replace("  entrypoint: model.py:Model", "  entrypoint: model.py:Model\n  requirements: 5"),
     ["model.requirements", "must be a file name", "got 5"]),
    ("requirements file missing", GOOD.replace("  entrypoint: model.py:Model", "  entrypoint: model.py:Model\n  requirements: reqs.txt"),
     ["'reqs.txt' does not exist", "mlserve.yaml:4:17"]),
    ("cpu negative", GOOD + "resources: {cpu: -1}\n", ["resources.cpu", "greater than 0", "got -1"]),
    ("memory bad unit", GOOD + "resources: {memory: 2GB}\n", ["resources.memory", "'2GB' is not a size"]),
    ("gpu count zero", GOOD + "resources: {gpu: {type: T4, count: 0}}\n", ["resources.gpu.count", "greater than or equal to 1"]),
    ("gpu without type", GOOD + "resources: {gpu: {count: 1}}\n", ["resources.gpu.type", "Field required"]),
    ("scaling min over max", GOOD + "scaling: {min_replicas: 3, max_replicas: 1}\n",
     ["scaling", "min_replicas (3) is greater than max_replicas (1)"]),
    ("concurrency zero", GOOD + "scaling: {concurrency: 0}\n", ["scaling.concurrency", "greater than or equal to 1"]),
    ("env bad name", GOOD + "env: {\"1BAD\": x}\n", ["env.1BAD", "is not allowed", "mlserve.yaml:6:7"]),
    ("env value mapping", GOOD + "env: {A: {b: 1}}\n", ["env.A", "valid string"]),
    ("secret lower case", GOOD + "secrets: [api_token]\n", ["secrets.0", "upper-case"]),
    ("secret twice", GOOD + "secrets: [A, A]\n", ["secret 'A' is listed twice"]),
    ("secret also in env", GOOD + "env: {TOKEN: x}\nsecrets: [TOKEN]\n", ["'TOKEN' is both in env and in secrets"]),
    ("smoke without input", GOOD + "smoke:\n  - expect: 1\n", ["smoke.0.input", "Field required"]),
    ("smoke unknown key", GOOD + "smoke:\n  - input: 1\n    expected: 2\n", ["unknown key 'expected'", "did you mean 'expect'"]),
    ("target without provider", GOOD.replace("{provider: local, port: 8080}", "{port: 8080}"),
     ["targets.local", "has no `provider:`", "mlserve.yaml:5:10"]),
    ("unknown provider", GOOD.replace("provider: local", "provider: heroku"),
     ["unknown provider 'heroku'", "'local', 'ssh'"]),
    ("port out of range", GOOD.replace("port: 8080", "port: 70000"),
     ["targets.local.port", "less than or equal to 65535", "got 70000", "mlserve.yaml:5:34"]),
    ("port a string", GOOD.replace("port: 8080", "port: http"), ["targets.local.port", "valid integer"]),
    ("target option of another provider", GOOD.replace("port: 8080", "hosts: [a@b]"),
     ["unknown key 'hosts'", "targets.local.hosts"]),
    ("bad target name", GOOD.replace("  local:", "  Local_1:"), ["'Local_1' is not allowed"]),
    ("ssh without hosts", GOOD.replace("{provider: local, port: 8080}", "{provider: ssh}"),
     ["targets.local.hosts", "Field required"]),
    ("ssh bad host", GOOD.replace("{provider: local, port: 8080}", "{provider: ssh, hosts: ['me@@x']}"),
     ["targets.local.hosts", "'me@@x' is not user@host[:port]"]),
    ("ssh host port out of range", GOOD.replace("{provider: local, port: 8080}", "{provider: ssh, hosts: ['me@x:99999']}"),
     ["port must be 1-65535"]),
    ("replicate bad model", GOOD.replace("{provider: local, port: 8080}", "{provider: replicate, model: nope}"),
     ["targets.local.model", "'nope' is not allowed"]),
    ("docker without image", GOOD.replace("{provider: local, port: 8080}", "{provider: docker}"),
     ["targets.local.image", "Field required"]),
    ("health timeout zero", GOOD.replace("port: 8080", "port: 8080, health_timeout: 0"),
     ["targets.local.health_timeout", "greater than 0"]),
    *[(f"inputs {name}", _with_input(field), ["mlserve.yaml:5:8", "model.inputs.f:", *fragments])
      for name, field, fragments in [
          ("default of another type", "{type: integer, default: '3'}",
           ["default: '3' is not an integer", "or remove it (the field is then required)"]),
          ("boolean default for an integer", "{type: integer, default: true}",
           ["default: true is not an integer"]),
          ("infinite default", "{type: number, default: .inf}", ["default: inf", "inf or nan"]),
          ("array default of the wrong items", "{type: array, items: integer, default: [1, 2.5]}",
           ["is not an array of integer"]),
          ("object default not an object", "{type: object, default: [1]}",
           ["default: [1] is not an object"]),
          ("choice of another type", "{type: string, choices: [a, 1]}",
           ["choices: 1 is not a string", "write every choice as the field's type"]),
          ("default not a choice", "{type: string, choices: [a, b], default: c}",
           ["default: 'c' is not one of the choices"]),
          ("default outside ge/le", "{type: integer, default: 11, le: 10}",
           ["default: 11 is outside ge/le"]),
          ("ge above le", "{type: number, ge: 2, le: 1}",
           ["ge (2) is above le (1): no value fits", "ge <= le"]),
          ("infinite bound", "{type: number, le: .inf}", ["le: inf is not a finite number"]),
      ]],
]


@pytest.mark.parametrize("case, text, fragments", CASES, ids=[c[0] for c in CASES])
def test_invalid_manifest(tmp_path, monkeypatch, capsys, case, text, fragments):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "mlserve.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "validate")
    assert result.code == 2, result
    assert "Traceback" not in result.err and "Traceback" not in result.out
    assert result.out == ""
    text_out = " ".join(result.err.split())
    for fragment in fragments:
        assert " ".join(fragment.split()) in text_out, f"{fragment!r} not in:\n{result.err}"
    assert result.err.startswith("error:")


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_every_problem_is_listed_at_once(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "mlserve.yaml").write_text(textwrap.dedent("""\
        name: Bad
        model: {entrypoint: model.py:Model}
        scaling: {concurrency: 0}
        targets:
          local: {provider: local, port: 0}
        """))
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "validate")
    assert result.code == 2
    assert "(3 problems)" in result.err
    for where in ("mlserve.yaml:1:7", "mlserve.yaml:3:24", "mlserve.yaml:5:34"):
        assert where in result.err


def test_valid_manifest(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "mlserve.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "validate", "--json")
    assert result.code == 0, result.err
    assert '"valid": true' in result.out


def test_missing_manifest_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "validate")
    assert result.code == 2
    assert "no mlserve.yaml in" in result.err and "mlserve init" in result.err
