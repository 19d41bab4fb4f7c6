"""Every ``--json`` output against its shipped JSON Schema (``mlserve/schemas/output``).

The commands that take ``--json`` are found from the CLI itself (the Typer app), so a command
added later (``cost``, ``journal``) without a schema, or without a case here that runs it, fails
``test_every_json_command_has_a_schema_and_a_case`` with what to add. Each case runs the real CLI
in a child process against a real project (the slow ones deploy the example on this machine) and
validates what it printed; errors are checked against ``error.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from mlserve import schemas
from tests.helpers import EXAMPLES, run_process
from tests.infra.net import free_port


def json_commands() -> list[str]:
    """Names of the CLI's commands (and sub-commands, space-joined) with a ``--json`` option."""
    import typer.main
    from mlserve.cli.main import app

    found = []

    def walk(command, prefix: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{prefix} {name}".strip())
        if prefix and any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.append(prefix)
    walk(typer.main.get_command(app), "")
    return sorted(found)


def check(name: str, text: str) -> dict:
    """``text`` is one JSON object valid against schema ``name`` (the failure says where not)."""
    data = json.loads(text)
    validator = jsonschema.Draft202012Validator(schemas.load(name))
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in validator.iter_errors(data)]
    assert not problems, f"{name} output does not match its schema:\n" + "\n".join(problems)
    return data


# -- projects -------------------------------------------------------------------------------
def _project(tmp_path: Path, second_target: bool = False) -> tuple[list[str], Path]:
    project = tmp_path / "proj"
    shutil.copytree(EXAMPLES / "hello", project)
    manifest = project / "mlserve.yaml"
    targets = f"  local: {{provider: local, port: {free_port()}}}\n"
    if second_target:
        targets += f"  other: {{provider: local, port: {free_port()}}}\n"
    text = manifest.read_text().replace("  local: {provider: local, port: 8480}\n", targets)
    manifest.write_text(text)
    return ["-f", str(project), "--state", str(tmp_path / "state")], project


def _no_state(args: list[str]) -> list[str]:
    return args[:2]


# Cases that deploy nothing: command -> argv after the command name (given the project args).
QUICK = {
    "validate": lambda a: ["validate", *_no_state(a)],
    "providers": lambda a: ["providers"],
    "plan": lambda a: ["plan", *a],
    "status": lambda a: ["status", *a],
    "list": lambda a: ["list", *a],
    "delete": lambda a: ["delete", *a, "--yes"],
    "build": lambda a: ["build", *_no_state(a), "--format", "docker"],
    "cost": lambda a: ["cost", "local", "aws-ec2", *a],
}
# Cases run by the lifecycle test below (a real local deployment).
LIFECYCLE = ("deploy", "status", "list", "plan", "rollback", "migrate", "delete",
             "journal import")


def test_every_json_command_has_a_schema_and_a_case():
    commands = json_commands()
    assert "deploy" in commands and "validate" in commands     # the discovery itself works
    available = schemas.names()
    missing = [c for c in commands if c.replace(" ", "-") not in available]
    assert not missing, (
        f"these commands print --json but ship no schema: {', '.join(missing)}; add "
        "mlserve/schemas/output/<command>.json (sub-commands: <group>-<command>.json) and "
        "document it in README")
    untested = [c for c in commands if QUICK.get(c) is None and c not in LIFECYCLE]
    assert not untested, (f"these --json commands have no case in {__name__}: "
                          f"{', '.join(untested)}; add one to QUICK or LIFECYCLE")


def test_schema_command_prints_each_schema_and_refuses_unknown_names():
    for name in schemas.names():
        shown = run_process("schema", "--output", name)
        assert shown.code == 0, shown.err
        document = json.loads(shown.out)
        jsonschema.Draft202012Validator.check_schema(document)
        assert document == schemas.load(name)
    unknown = run_process("schema", "--output", "nope")
    assert unknown.code == 2 and unknown.out == ""
    assert "one of:" in unknown.err and "deploy" in unknown.err
    manifest = run_process("schema")          # without --output: the manifest's, as before
    assert manifest.code == 0 and "targets" in json.loads(manifest.out)["properties"]


@pytest.mark.parametrize("command", sorted(c for c, case in QUICK.items() if case))
def test_output_without_a_deployment_matches_its_schema(tmp_path, command):
    args, _ = _project(tmp_path)
    result = run_process(*QUICK[command](args), "--json")
    assert result.code == 0, result.err
    data = check(command, result.out)
    if command == "validate":
        assert data["targets"] == {"local": "local"} and data["extras"] == []
    if command == "plan":
        assert data["action"] == "create"
    if command in ("delete", "status"):
        assert data["status"] == "NOT DEPLOYED"


ERRORS = {   # argv -> (exit code, error kind): one per kind of failure the CLI reports
    "manifest": (["validate", "-f", "{bad}", "--json"], 2, "ManifestError"),
    "usage": (["deploy", "--no-such-option", "--json"], 2, "UsageError"),
    "bad timeout": (["deploy", "--timeout", "-5", "--json"], 2, "UsageError"),
    "unknown target": (["plan", "nope", "-f", "{good}", "--json"], 2, "NotFound"),
    "nothing to roll back": (["rollback", "-f", "{good}", "--state", "{state}", "--json"], 2,
                             "NotFound"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_under_json_match_the_error_schema(tmp_path, case):
    argv, code, kind = ERRORS[case]
    _, good = _project(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {entrypoint: model.py:Model}\ntargets: {local: {provider: "
                   "local, port: 99999}}\nbogus: 1\n")
    filled = [a.format(bad=bad, good=good, state=tmp_path / "state") for a in argv]
    result = run_process(*filled)
    assert result.code == code, result.err
    data = check("error", result.out)
    assert (data["error"], data["exit_code"]) == (kind, code)
    assert "Traceback" not in result.err


@pytest.mark.slow
def test_lifecycle_outputs_match_their_schemas(tmp_path):
    """deploy, status, list, plan, rollback, migrate, delete and journal import on real local
    deployments."""
    args, project = _project(tmp_path, second_target=True)
    try:
        first = run_process("deploy", "local", *args, "--json")
        assert first.code == 0, first.err
        assert check("deploy", first.out)["changed"] is True
        manifest = project / "mlserve.yaml"
        manifest.write_text(manifest.read_text().replace('FACTOR: "2"', 'FACTOR: "3"')
                            .replace("expect: {y: [2, 4, 6]}", "expect: {y: [3, 6, 9]}"))
        second = run_process("deploy", "local", *args, "--json")
        assert second.code == 0, second.err
        check("deploy", second.out)
        status = run_process("status", "local", *args, "--json")
        assert check("status", status.out)["status"] == "READY"
        listed = run_process("list", *args, "--json")
        assert {r["target"] for r in check("list", listed.out)["deployments"]} == {"local", "other"}
        plan = run_process("plan", "local", *args, "--json")
        assert check("plan", plan.out)["action"] == "none"
        back = run_process("rollback", "local", *args, "--json")
        assert back.code == 0, back.err
        assert check("rollback", back.out)["release"] == json.loads(first.out)["release"]
        again = run_process("deploy", "local", *args, "--json")     # migrate moves the current
        assert again.code == 0, again.err
        dry = run_process("migrate", "--from", "local", "--to", "other", *args, "--dry-run",
                          "--json")
        assert check("migrate", dry.out)["status"] == "planned"
        moved = run_process("migrate", "--from", "local", "--to", "other", *args, "--yes",
                            "--json")
        assert moved.code == 0, moved.err
        assert check("migrate", moved.out)["status"] == "migrated"
        gone = run_process("delete", "other", *args, "--yes", "--json")
        assert check("delete", gone.out)["status"] == "DELETED"
        exported = tmp_path / "journal.json"
        assert run_process("journal", "export", *args, "-o", str(exported)).code == 0
        imported = run_process("journal", "import", str(exported), "--state",
                               str(tmp_path / "copy"), "--json")
        assert imported.code == 0, imported.err
        counts = check("journal-import", imported.out)
        assert counts["releases"] >= 2 and counts["deployments"] == 2, counts
    finally:
        for target in ("local", "other"):
            run_process("delete", target, *args, "--yes")
