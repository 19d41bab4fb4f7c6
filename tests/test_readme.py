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


def _block(text: str, name: str) -> list[tuple[str, ...]]:
    """The rows of the table between ``<!-- name:`` and ``<!-- /name -->`` (header excluded)."""
    block = text.split(f"<!-- {name}:", 1)[1].split(f"<!-- /{name} -->", 1)[0]
    return [tuple(c.strip() for c in line.strip().strip("|").split("|"))
            for line in block.splitlines()[3:] if line.startswith("|")]


def provider_rows(catalogue: list[dict]) -> list[tuple[str, ...]]:
    """README's provider table as the registry says it should read."""
    return [(f"`{p['name']}`", p["layer"], "deploy" if p["deploy"] else "build",
             f"`{p['default_format']}`", ", ".join(p["unsupported"])) for p in catalogue]


def test_readme_provider_table_is_the_catalogue():
    """Layer, deploy or build, build format and gaps: the table says what `mlserve providers`
    says, in registry order (the expected rows are printed on failure, ready to paste)."""
    text = (REPO / "README.md").read_text()
    catalogue = json.loads(run_process("providers", "--json").out)["providers"]
    expected = provider_rows(catalogue)
    assert _block(text, "providers") == expected, "\n".join(
        "| " + " | ".join(row) + " |" for row in expected)
    for name in (p["name"] for p in catalogue if p["deploy"]):
        assert f"**deploys** (`{name}`)" in text


def test_readme_targets_table_names_every_option():
    """The Targets table has one row per provider, naming each option its model has (but the
    `provider` key and `health_timeout`, which every target takes) and no other."""
    from mlserve.providers import REGISTRY
    from mlserve.targets import TargetBase
    section = (REPO / "README.md").read_text().split("### Targets", 1)[1]
    table = section[section.index("\n|"):].split("\n\n", 1)[0].strip().splitlines()
    rows = {cells[0].strip(" `"): set(re.findall(r"`([a-z_]+)`", cells[1]))
            for cells in (line.strip("|").split("|") for line in table[2:])}
    common = set(TargetBase.model_fields)
    assert rows == {name: set(info.options_model.model_fields) - common - {"provider"}
                    for name, info in REGISTRY.items()}


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
