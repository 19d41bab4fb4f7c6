"""The CI job step as CI runners run it: ``action.yml`` and the GitLab template, for real.

``run_action`` does what a GitHub runner does with a composite action: it reads ``action.yml``,
evaluates the ``${{ }}`` expressions a step uses (inputs with their defaults,
``github.action_path``, earlier steps' outputs; any other expression fails the test), and runs
each step's ``run`` with its ``shell`` in the workspace, with a fresh ``GITHUB_OUTPUT`` file per
step, ``GITHUB_STEP_SUMMARY``, ``RUNNER_TEMP``, ``CI=true`` and a PATH without the test's venv.
``run_gitlab_job`` runs the ``.mlserve`` job's script lines in one bash, with the job's variables
as GitLab sets them. The install step builds a clean venv (pip install of this checkout) once per
session; later runs reuse it (pip re-installs the checkout). The model is deployed for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from mlserve import ci_step
from tests.helpers import EXAMPLES, REPO, run_process
from tests.infra.net import free_port

_EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def _base_env(tmp: Path, venv: Path) -> dict[str, str]:
    """What a runner's job has: system PATH with a python3 that makes venvs (not this venv)."""
    python_dir = str(Path(sys._base_executable).parent)
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in (
        "HOME", "LANG", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "TMPDIR")}
    return {**keep, "PATH": f"{python_dir}:/usr/local/bin:/usr/bin:/bin", "CI": "true",
            "MLSERVE_VENV": str(venv), "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class Run:
    code: int                   # the first failing step's status, else 0
    outputs: dict[str, str]     # the action's outputs
    summary: str
    log: str


def parse_github_output(text: str) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIMITER`` blocks, as the runner reads them."""
    values, lines = {}, iter(text.split("\n"))
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for part in lines:
                if part == delimiter:
                    break
                body.append(part)
            else:
                raise AssertionError(f"output {name!r}: no closing delimiter")
            values[name] = "\n".join(body)
        elif line:
            name, _, value = line.partition("=")
            values[name] = value
    return values


def run_action(inputs: dict[str, str], workspace: Path, tmp: Path, venv: Path) -> Run:
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    unknown = set(inputs) - set(action["inputs"])
    assert not unknown, f"not inputs of action.yml: {unknown}"
    given_inputs = {name: inputs.get(name, spec.get("default", ""))
                    for name, spec in action["inputs"].items()}
    steps: dict[str, dict[str, str]] = {}
    context = {"inputs": given_inputs, "steps": steps}

    def evaluate(text: str) -> str:
        def one(match: re.Match) -> str:
            expr = match.group(1)
            if expr == "github.action_path":
                return str(REPO)
            parts = expr.split(".")
            if parts[0] == "inputs" and len(parts) == 2:
                return str(context["inputs"][parts[1]])
            if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
                return steps.get(parts[1], {}).get(parts[3], "")
            raise AssertionError(f"action.yml uses an expression this runner does not know: {expr}")
        return _EXPR.sub(one, str(text))

    summary_file, log, code = tmp / "step_summary.md", [], 0
    summary_file.touch()
    for index, step in enumerate(action["runs"]["steps"]):
        assert step["shell"] == "bash" and "uses" not in step
        assert not _EXPR.search(step["run"]), "run scripts take inputs through env only"
        output_file = tmp / f"output-{index}"
        output_file.write_text("")
        env = {**_base_env(tmp, venv), "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace),
               "RUNNER_TEMP": str(tmp), "GITHUB_OUTPUT": str(output_file),
               "GITHUB_STEP_SUMMARY": str(summary_file),
               **{k: evaluate(v) for k, v in (step.get("env") or {}).items()}}
        script = tmp / f"step-{index}.sh"
        script.write_text(step["run"])
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                              cwd=workspace, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=900)
        log.append(f"--- step {step.get('id')} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
        steps[step.get("id", str(index))] = parse_github_output(output_file.read_text())
        if proc.returncode != 0:
            code = proc.returncode
            break
    outputs = {name: evaluate(spec["value"]) for name, spec in action["outputs"].items()}
    return Run(code, outputs, summary_file.read_text(), "\n".join(log))


def run_gitlab_job(variables: dict[str, str], workspace: Path, tmp: Path, venv: Path) -> Run:
    template = yaml.safe_load((REPO / "ci" / "gitlab" / "mlserve.gitlab-ci.yml").read_text())
    job = template[".mlserve"]
    for name in ("mlserve:plan", "mlserve:deploy", "mlserve:migrate", "mlserve:delete"):
        assert template[name]["extends"] == ".mlserve"
    env = {**_base_env(tmp, venv), "GITLAB_CI": "true", "CI_PROJECT_DIR": str(workspace),
           **{k: str(v) for k, v in job["variables"].items()}, **variables}
    script = tmp / "gitlab-job.sh"
    script.write_text("\n".join(job["script"]) + "\n")
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                          cwd=workspace, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=900)
    assert job["artifacts"]["reports"]["dotenv"] == "mlserve.env"
    dotenv = workspace / "mlserve.env"
    outputs = dict(line.split("=", 1) for line in dotenv.read_text().splitlines()) \
        if dotenv.exists() else {}
    summary = workspace / "mlserve-summary.md"
    return Run(proc.returncode, outputs, summary.read_text() if summary.exists() else "",
               proc.stdout + proc.stderr)


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def step_venv(tmp_path_factory) -> Path:
    """Where the action's install step makes its venv: built by the first run, then reused."""
    return tmp_path_factory.mktemp("ci-step") / "venv"


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A checked-out repository with the example model; its deployment deleted afterwards."""
    root = tmp_path / "workspace"
    shutil.copytree(EXAMPLES / "hello", root / "model")
    manifest = root / "model" / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {free_port()}"))
    yield root
    from mlserve import service
    from mlserve.errors import MlserveError
    try:
        service.delete(root / "model", None, None)
    except MlserveError:
        pass


def _answer(url: str, payload) -> dict:
    req = urllib.request.Request(url + "/predict", data=json.dumps({"input": payload}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


# -- the GitHub action ----------------------------------------------------------------------
@pytest.mark.slow
def test_action_plans_deploys_and_deletes(workspace, tmp_path, step_venv):
    (tmp_path / "plan").mkdir()
    planned = run_action({"command": "plan", "manifest": "model"}, workspace, tmp_path / "plan",
                         step_venv)
    assert planned.code == 0, planned.log
    assert planned.outputs["changed"] == "true" and planned.outputs["release"].startswith("r-")
    assert "### mlserve plan: create" in planned.summary
    assert planned.summary.count("### mlserve") == 1      # the step's, not mlserve's too

    (tmp_path / "deploy").mkdir()
    deployed = run_action({"command": "deploy", "manifest": "model", "extra-args": "--timeout 300"},
                          workspace, tmp_path / "deploy", step_venv)
    assert deployed.code == 0, deployed.log
    out = deployed.outputs
    assert (out["status"], out["changed"], out["exit-code"]) == ("READY", "true", "0")
    assert out["release"] == planned.outputs["release"]
    assert _answer(out["url"], {"x": [1, 2]}) == {"output": {"y": [2, 4]}}
    assert "### mlserve deploy: READY" in deployed.summary
    assert f"| release | {ci_step.md(out['release'])} |" in deployed.summary

    (tmp_path / "delete").mkdir()
    deleted = run_action({"command": "delete", "manifest": "model"}, workspace,
                         tmp_path / "delete", step_venv)
    assert deleted.code == 0, deleted.log
    assert (deleted.outputs["status"], deleted.outputs["changed"]) == ("DELETED", "true")


@pytest.mark.slow
def test_action_failure_sets_outputs_and_summary_and_fails_the_step(workspace, tmp_path,
                                                                     step_venv):
    manifest = workspace / "model" / "mlserve.yaml"
    manifest.write_text(manifest.read_text() + "bogus_<b>key</b>: 1\n")
    invalid = run_action({"command": "deploy", "manifest": "model"}, workspace, tmp_path,
                         step_venv)
    assert invalid.code == 2, invalid.log
    assert invalid.outputs["status"] == "FAILED" and invalid.outputs["exit-code"] == "2"
    assert "is invalid" in invalid.outputs["error"] and "&lt;" not in invalid.outputs["error"]
    assert "<b>" not in invalid.summary and "bogus\\_&lt;b&gt;key&lt;/b&gt;" in invalid.summary
    (tmp_path / "again").mkdir()
    manifest.write_text(manifest.read_text().replace("bogus_<b>key</b>: 1\n", ""))
    refused = run_action({"command": "deploy", "manifest": "model", "target": "nope"},
                         workspace, tmp_path / "again", step_venv)
    assert refused.code == 2, refused.log
    assert refused.outputs["status"] == "FAILED" and refused.outputs["exit-code"] == "2"
    assert "nope" in refused.outputs["error"]
    assert "### mlserve deploy: failed (exit 2)" in refused.summary


# -- the GitLab template --------------------------------------------------------------------
@pytest.mark.slow
def test_gitlab_job_deploys_and_exports_a_dotenv_report(workspace, tmp_path, step_venv):
    job = run_gitlab_job({"MLSERVE_COMMAND": "deploy", "MLSERVE_MANIFEST": "model",
                          "MLSERVE_VERSION": str(REPO)}, workspace, tmp_path, step_venv)
    assert job.code == 0, job.log
    assert job.outputs["MLSERVE_STATUS"] == "READY" and job.outputs["MLSERVE_CHANGED"] == "true"
    assert _answer(job.outputs["MLSERVE_URL"], {"x": [3]}) == {"output": {"y": [6]}}
    assert "### mlserve deploy: READY" in job.summary


# -- the step's pieces (no install, no deploy) ----------------------------------------------
def _step(tmp_path: Path, *args: str, **inputs: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **{f"INPUT_{k.upper()}": v for k, v in inputs.items()}}
    return subprocess.run([sys.executable, "-m", "mlserve.ci_step", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_extras_are_those_of_the_step_targets(tmp_path):
    project = tmp_path / "p"
    shutil.copytree(EXAMPLES / "hello", project)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace(
        "  local: {provider: local, port: 8480}\n",
        "  local: {provider: local, port: 8480}\n  box: {provider: ssh, hosts: [u@h]}\n"
        "  box2: {provider: docker, image: reg.example/m}\n"
        "  sm: {provider: sagemaker, role: 'arn:aws:iam::123456789012:role/S', region: us-east-1,"
        " repository: 123456789012.dkr.ecr.us-east-1.amazonaws.com/m}\n"))
    cases = {"local": "", "box": "ssh", "box2": "docker", "box:box2": "docker,ssh",
             "sm": "aws,docker", "sm:box": "aws,docker,ssh"}
    for target, extras in cases.items():
        command = "migrate" if ":" in target else "deploy"
        got = _step(tmp_path, "extras", command=command, target=target, manifest="p")
        assert (got.returncode, got.stdout.strip()) == (0, extras), got.stderr
    validated = subprocess.run([sys.executable, "-m", "mlserve.cli", "validate", "-f", str(project),
                                "--json"], capture_output=True, text=True)
    assert json.loads(validated.stdout)["extras"] == ["aws", "docker", "ssh"]
    # a journal on S3 needs the aws extra (its S3 client), however it is named
    for how in ({"extra_args": "--state s3://team-bucket/m"},
                {"extra_args": "--timeout 60 --state=s3://team-bucket/m"}):
        got = _step(tmp_path, "extras", command="deploy", target="box", manifest="p", **how)
        assert (got.returncode, got.stdout.strip()) == (0, "aws,ssh"), got.stderr
    os.environ["MLSERVE_STATE"] = "s3://team-bucket/m"
    try:
        got = _step(tmp_path, "extras", command="deploy", target="local", manifest="p")
    finally:
        del os.environ["MLSERVE_STATE"]
    assert (got.returncode, got.stdout.strip()) == (0, "aws"), got.stderr
    manifest.write_text("state: s3://team-bucket/m\n" + manifest.read_text())
    got = _step(tmp_path, "extras", command="deploy", target="local", manifest="p")
    assert (got.returncode, got.stdout.strip()) == (0, "aws"), got.stderr
    validated = subprocess.run([sys.executable, "-m", "mlserve.cli", "validate", "local", "-f",
                                str(project), "--json"], capture_output=True, text=True)
    assert json.loads(validated.stdout)["extras"] == ["aws"], validated.stderr


@pytest.mark.parametrize("inputs, message", [
    ({"command": "destroy"}, "is not one of"),
    ({"command": "migrate", "target": "only-one"}, "FROM:TO"),
    ({"command": "deploy", "extra-args": "'unclosed"}, "extra-args"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, inputs, message):
    got = _step(tmp_path, "run", **{k.replace("-", "_"): v for k, v in inputs.items()})
    assert got.returncode == 2 and message in got.stderr and "Traceback" not in got.stderr


def test_argv_never_goes_through_a_shell():
    step = {"command": "deploy", "target": "prod", "manifest": "m dir/$(touch x)",
            "extra-args": "--timeout 60 '--state=a b'"}
    assert ci_step.argv(step) == ["deploy", "prod", "-f", "m dir/$(touch x)", "--timeout", "60",
                                  "--state=a b", "--json"]
    assert ci_step.argv({**step, "command": "migrate", "target": "a:b", "extra-args": ""})[:5] == [
        "migrate", "--from", "a", "--to", "b"]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_markdown_escaping_keeps_any_string_literal(text):
    shown = ci_step.md(text)
    assert "\n" not in shown and "\r" not in shown
    assert "<" not in shown.replace("<br>", "")            # no HTML tag can open
    assert not re.search(r"(?<!\\)[|`*_\[\]]", shown.replace("\\\\", ""))   # all escaped


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(ci_step.OUTPUTS), st.text(), min_size=1))
def test_github_outputs_cannot_be_forged_by_a_value(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("out") / "GITHUB_OUTPUT"
    clean = {k: v.replace("\r", "") for k, v in values.items()}
    ci_step.write_github_outputs(str(path), clean)
    assert parse_github_output(path.read_text()) == clean


# -- plain mlserve honours $GITHUB_STEP_SUMMARY -------------------------------------------
def _summary_project(tmp_path: Path) -> Path:
    project = tmp_path / "model"
    shutil.copytree(EXAMPLES / "hello", project)
    return project


def test_plain_cli_appends_its_outcome_to_the_job_summary(tmp_path):
    project = _summary_project(tmp_path)
    page = tmp_path / "summary.md"
    page.write_text("earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(page)}
    state = ["--state", str(tmp_path / "state")]
    planned = run_process("plan", "-f", str(project), *state, env=env)
    assert planned.code == 0, planned.err
    refused = run_process("deploy", "nope", "-f", str(project), *state, env=env)
    assert refused.code == 2, refused.err
    shown = run_process("status", "-f", str(project), *state, env=env)   # not a summary command
    assert shown.code == 0, shown.err
    text = page.read_text()
    assert text.startswith("earlier step\n")                            # appended, not replaced
    assert text.count("### mlserve plan: create") == 1
    assert text.count("### mlserve deploy: failed (exit 2)") == 1 and "nope" in text
    assert text.count("### mlserve") == 2


def test_step_writes_the_summary_once(tmp_path):
    project = _summary_project(tmp_path)
    page = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(page), "INPUT_COMMAND": "plan",
           "INPUT_MANIFEST": str(project),
           "INPUT_EXTRA_ARGS": f"--state {tmp_path / 'state'}"}
    proc = subprocess.run([sys.executable, "-m", "mlserve.ci_step", "run"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert page.read_text().count("### mlserve plan: create") == 1


def test_an_unwritable_summary_only_warns(tmp_path):
    project = _summary_project(tmp_path)
    planned = run_process("plan", "-f", str(project), "--state", str(tmp_path / "state"),
                          env={"GITHUB_STEP_SUMMARY": str(tmp_path / "no" / "such" / "dir")})
    assert planned.code == 0, planned.err
    assert "cannot write the job summary" in planned.err and "Traceback" not in planned.err
