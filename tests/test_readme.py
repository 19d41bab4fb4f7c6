"""README's first command, run literally in a fresh clone: it installs, deploys and predicts."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)[:2]


def test_readme_gives_two_commands_and_ci_runs_the_second():
    install, tests = _commands()
    assert "mlserve deploy" in install and "mlserve predict" in install
    assert tests.strip() == "bash .ci/test"
    assert "bash .ci/test" in (REPO / ".ci" / "run").read_text()


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
