"""mlserve as a CI job step: what ``action.yml`` and the GitLab template run, after installing it.

``python -m mlserve.ci_step extras`` prints the pip extras the step's targets need (``ssh,docker``;
empty for none), so the install step can add them. ``python -m mlserve.ci_step run`` runs one
``mlserve COMMAND ... --json`` and hands its result to the CI system:

- outputs ``release``, ``url``, ``status``, ``changed``, ``exit-code`` (and ``error`` on failure):
  to ``$GITHUB_OUTPUT`` (GitHub), and/or as ``MLSERVE_RELEASE=...`` lines to ``$MLSERVE_DOTENV``
  (GitLab's dotenv report);
- a Markdown summary (the plan, or the deploy's result, or the error) appended to
  ``$GITHUB_STEP_SUMMARY`` (or ``$MLSERVE_SUMMARY``) when set; every user-controlled string in
  it is escaped for Markdown and HTML.

Its exit status is mlserve's. Inputs come from the environment, named as the action's inputs:
``INPUT_COMMAND`` (deploy, plan, migrate, delete, rollback), ``INPUT_TARGET`` (``FROM:TO`` for
migrate), ``INPUT_MANIFEST``, ``INPUT_EXTRA_ARGS`` (split like a shell, never run by one).
Standard library only: it runs in the CI's fresh venv before anything else is known.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

COMMANDS = ("deploy", "plan", "migrate", "delete", "rollback")
OUTPUTS = ("release", "url", "status", "changed", "exit-code", "error")


class StepInputError(Exception):
    """An input the step cannot use (exit 2, like mlserve's own usage errors)."""


def inputs(env: dict[str, str]) -> dict[str, str]:
    """The step's inputs from ``INPUT_*`` variables (``extra-args`` is ``INPUT_EXTRA_ARGS``)."""
    got = {name: env.get(f"INPUT_{name.upper().replace('-', '_')}", "").strip()
           for name in ("command", "target", "manifest", "extra-args")}
    got["command"] = got["command"] or "deploy"
    if got["command"] not in COMMANDS:
        raise StepInputError(f"input command: {got['command']!r} is not one of "
                             f"{', '.join(COMMANDS)}")
    if got["command"] == "migrate" and got["target"].count(":") != 1:
        raise StepInputError("input target: migrate needs FROM:TO (two target names), "
                             f"not {got['target']!r}")
    return got


def argv(step: dict[str, str]) -> list[str]:
    """The mlserve arguments the step runs (always with ``--json``)."""
    command, target = step["command"], step["target"]
    try:
        extra = shlex.split(step["extra-args"])
    except ValueError as exc:
        raise StepInputError(f"input extra-args: {exc}") from None
    args = [command]
    if command == "migrate":
        source, dest = target.split(":")
        args += ["--from", source, "--to", dest]
    elif target:
        args.append(target)
    if step["manifest"]:
        args += ["-f", step["manifest"]]
    return [*args, *extra, "--json"]


def targets_of(step: dict[str, str]) -> list[str | None]:
    if step["command"] == "migrate":
        return list(step["target"].split(":"))
    return [step["target"] or None]


def _state_arg(step: dict[str, str]) -> str | None:
    """The ``--state`` the step's extra-args give, if any."""
    try:
        words = shlex.split(step["extra-args"])
    except ValueError:
        return None              # argv() reports it
    for index, word in enumerate(words):
        if word == "--state" and index + 1 < len(words):
            return words[index + 1]
        if word.startswith("--state="):
            return word.split("=", 1)[1]
    return None


def needed_extras(step: dict[str, str]) -> list[str]:
    """The pip extras the step needs: its targets' (what ``mlserve validate --json`` reports),
    and ``aws`` when its journal is on S3 (``--state``, ``MLSERVE_STATE`` or the manifest's
    ``state:``)."""
    from .manifest import load_project
    project = load_project(step["manifest"] or None)
    return project.extras([project.target(t)[0] for t in targets_of(step)], _state_arg(step))


def _extras_or_none(step: dict[str, str]) -> list[str]:
    """The extras, or none when the manifest or target is wrong: the run step then reports
    that error the CI way (outputs, summary, mlserve's exit code) instead of the install step."""
    from .errors import MlserveError
    try:
        return needed_extras(step)
    except MlserveError as exc:
        print(f"warning: no extras installed: {exc.message}", file=sys.stderr)
        return []


# -- outputs --------------------------------------------------------------------------------
def outputs(command: str, code: int, result: Any) -> dict[str, str]:
    """The step's outputs from mlserve's exit status and ``--json`` object."""
    data = result if isinstance(result, dict) else {}
    out = {"release": "", "url": "", "status": "", "changed": "false", "exit-code": str(code),
           "error": ""}
    if code != 0:
        out.update(status="FAILED", error=str(data.get("message") or "mlserve printed no result"))
        return out
    live = data.get("live") if isinstance(data.get("live"), dict) else {}
    if command == "plan":
        out.update(release=data.get("release"), url=live.get("url"), status=live.get("state"),
                   changed=data.get("action") not in (None, "none"))
    elif command == "delete":
        out.update(status=data.get("status"), changed=data.get("status") == "DELETED")
    elif command == "migrate":
        out.update(release=data.get("release"), url=data.get("url"), status=data.get("status"),
                   changed=data.get("status") == "migrated")
    else:
        out.update(release=data.get("release"), url=data.get("url"), status=data.get("status"),
                   changed=bool(data.get("changed")))
    return {k: _text(v) for k, v in out.items()}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def write_github_outputs(path: str, values: dict[str, str]) -> None:
    """``name<<DELIMITER`` blocks: a value with a newline cannot forge another output."""
    with open(path, "a", encoding="utf-8") as fh:
        for name, value in values.items():
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
            fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def write_dotenv(path: str, values: dict[str, str]) -> None:
    """``MLSERVE_RELEASE=value`` lines (GitLab's dotenv report takes one line per variable)."""
    with open(path, "a", encoding="utf-8") as fh:
        for name, value in values.items():
            flat = " ".join(value.split())
            fh.write(f"MLSERVE_{name.upper().replace('-', '_')}={flat}\n")


# -- summary --------------------------------------------------------------------------------
_MD_SPECIAL = set("\\`*_{}[]()#+-.!|~>")


def md(value: Any) -> str:
    """``value`` as literal Markdown text: HTML escaped, Markdown punctuation backslashed,
    line breaks kept inside a table cell."""
    import html
    text = html.escape(_text(value), quote=True)
    text = "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in text)
    return text.replace("\r", "").replace("\n", "<br>")


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {md(k)} | {md(v)} |" for k, v in rows)]


def summary(command: str, code: int, result: Any, values: dict[str, str]) -> str:
    data = result if isinstance(result, dict) else {}
    head = f"### mlserve {md(command)}: "
    if code != 0:
        lines = [head + f"failed (exit {code})", "", md(data.get("message") or values["error"])]
        lines += [f"- {md(p)}" for p in (data.get("problems") or [])[:50]]
        if data.get("fix"):
            lines += ["", f"**fix:** {md(data['fix'])}"]
        return "\n".join(lines) + "\n"
    if command == "plan":
        lines = [head + md(data.get("action")), "",
                 *_table([("target", data.get("target")), ("provider", data.get("provider")),
                          ("release", data.get("release")), ("current", data.get("current")),
                          ("reasons", "; ".join(map(str, data.get("reasons") or [])))])]
        changes = data.get("changes") or []
        if changes:
            lines += ["", "| change | subject | before | after |", "|---|---|---|---|"]
            lines += [f"| {md(c.get('kind'))} | {md(c.get('subject'))} | "
                      f"{md(_cell(c.get('before')))} | {md(_cell(c.get('after')))} |"
                      for c in changes[:200] if isinstance(c, dict)]
        return "\n".join(lines) + "\n"
    rows = [("target", data.get("target") or data.get("to")), ("provider", data.get("provider")),
            *((k, values[k]) for k in ("release", "url", "status", "changed"))]
    return "\n".join([head + md(values["status"]), "", *_table(rows)]) + "\n"


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


# -- the step -------------------------------------------------------------------------------
def run(env: dict[str, str]) -> int:
    step = inputs(env)
    mlserve = Path(sys.executable).with_name("mlserve")
    args = [str(mlserve) if mlserve.exists() else sys.executable, *([] if mlserve.exists() else
                                                                   ["-m", "mlserve.cli"])]
    proc = subprocess.run([*args, *argv(step)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          env={**{k: v for k, v in env.items() if k != "GITHUB_STEP_SUMMARY"},
                               "CI": env.get("CI") or "true"})   # the step writes the summary
    raw = proc.stdout.decode("utf-8", "replace")
    sys.stdout.write(raw)
    try:
        result = json.loads(raw)
    except ValueError:
        result = None
    values = outputs(step["command"], proc.returncode, result)
    if env.get("GITHUB_OUTPUT"):
        write_github_outputs(env["GITHUB_OUTPUT"], values)
    if env.get("MLSERVE_DOTENV"):
        write_dotenv(env["MLSERVE_DOTENV"], values)
    target = env.get("GITHUB_STEP_SUMMARY") or env.get("MLSERVE_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(summary(step["command"], proc.returncode, result, values))
    return proc.returncode


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    env = dict(os.environ)
    try:
        if args == ["extras"]:
            print(",".join(_extras_or_none(inputs(env))))
            return 0
        if args == ["run"]:
            return run(env)
    except StepInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - mlserve's own error: one line, its exit code
        code = getattr(exc, "exit_code", 1)
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return code
    print("usage: python -m mlserve.ci_step extras|run  (inputs as INPUT_* variables)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
