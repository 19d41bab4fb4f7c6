"""README's first command, run literally in a fresh clone: it installs, deploys and predicts;
README's provider table and extras match what the code has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.helpers import REPO, run_process


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)[:2]


def test_readme_gives_two_commands_and_ci_runs_the_second():
    install, tests = _commands()
    assert "mlserve deploy" in install and "mlserve predict" in install
    assert tests.strip() == "bash .ci/test"
    assert "bash .ci/test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_readme_first_command_deploys_and_predicts(tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".mlserve", "__pycache__", ".pytest_cache", "build", "dist"))
    install, _ = _commands()
    try:
        result = subprocess.run(["bash", "-c", install], cwd=clone, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == '{"y": [2, 4, 6]}'
    finally:
        subprocess.run([str(clone / ".venv" / "bin" / "mlserve"), "delete", "-f", "examples/hello",
                        "--yes"], cwd=clone, capture_output=True)


def test_readme_provider_table_is_the_catalogue():
    """Which providers deploy and which only build: the table says what `mlserve providers` says."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- providers:", 1)[1].split("<!-- /providers -->", 1)[0]
    rows = {tuple(c.strip(" `") for c in line.strip("|").split("|"))
            for line in block.splitlines()[3:] if line.startswith("|")}
    catalogue = json.loads(run_process("providers", "--json").out)["providers"]
    assert rows == {(p["name"], p["layer"], "deploy" if p["deploy"] else "build") for p in catalogue}
    for name in (p["name"] for p in catalogue if p["deploy"]):
        assert f"**deploys** (`{name}`)" in text


def test_every_extra_installs_only_what_mlserve_imports():
    """An extra's packages are imported somewhere in mlserve/ (by their import name)."""
    import tomllib
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    import_names = {"paramiko": "paramiko", "docker": "docker", "boto3": "boto3",
                    "google-cloud-aiplatform": "google.cloud", "azure-ai-ml": "azure.ai.ml",
                    "azure-identity": "azure.identity"}
    sources = "\n".join(p.read_text() for p in (REPO / "mlserve").rglob("*.py"))
    for extra, requirements in extras.items():
        if extra in ("test", "all"):
            continue
        for requirement in requirements:
            package = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
            module = import_names.get(package, package.replace("-", "_"))
            assert re.search(rf"^\s*(import|from) {re.escape(module)}\b", sources, re.M), (
                f"extra {extra!r} installs {package}, which no mlserve module imports")
    assert set(extras["all"][0].split("[", 1)[1].rstrip("]").split(",")) == set(extras) - {"all", "test"}
