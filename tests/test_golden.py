"""Golden renders: tests/golden/<format>/<case>/project/ is the input (the manifest, plus
tests/golden/model.py unless the case has its own model.py), tests/golden/<format>/<case>/expected/
what `mlserve build` must write for it.

The target built is the project's target whose provider defaults to the format (else its
default target). Compared: every file mlserve renders, byte for byte, and ``FILES``, the list of
paths in the context. Left out of the comparison: what is copied verbatim (the model's files,
checked in tests/test_build.py; the mlserve runtime and its dependencies' wheels, which change
with their own code), in cloud-init user-data the embedded bundle and its sha256, and in
user-data and the Dockerfile the runtime's pinned versions, which are replaced by placeholders.

Regenerate after an intended change, then review the diff:

    MLSERVE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from mlserve.manifest import load_project
from mlserve.packaging import DEFAULT_FORMAT, build
from mlserve.packaging.runtime import runtime_pins

GOLDEN = Path(__file__).with_name("golden")
REGENERATE = os.environ.get("MLSERVE_REGEN_GOLDEN", "") not in ("", "0")
VERBATIM = ("app/", "model/app/", "runtime/lib/", "runtime/wheels/", "mlserve/", "model/mlserve/",
            "mlserve_shim.py", "model/mlserve_shim.py", "runtime/healthcheck.py", "bundle.tar.gz")
UNLISTED = ("runtime/lib/", "runtime/wheels/", "mlserve/", "model/mlserve/")
CASES = sorted(p.parent.relative_to(GOLDEN).as_posix() for p in GOLDEN.glob("*/*/project"))


def _normalise(path: str, text: str) -> str:
    if path not in ("user-data", "Dockerfile"):
        return text
    if path == "user-data":
        text = re.sub(r"^(    content: )[A-Za-z0-9+/=]{100,}$", r"\1<embedded bundle.tar.gz>", text,
                      flags=re.M)
        text = re.sub(r"\b[0-9a-f]{64}\b", "<sha256 of bundle.tar.gz>", text)
    for pin in runtime_pins("3.11"):
        name = pin.split("==")[0]
        text = text.replace(pin, f"{name}==<version>")
    return text


def _target(project_dir: Path, fmt: str) -> str | None:
    targets = load_project(project_dir).manifest.targets
    return next((name for name, t in targets.items() if DEFAULT_FORMAT[t.provider] == fmt), None)


def _render(case: str, tmp_path: Path) -> dict[str, str]:
    fmt = case.split("/")[0]
    project = tmp_path / "project"
    shutil.copytree(GOLDEN / case / "project", project)
    if not (project / "model.py").exists():
        shutil.copy(GOLDEN / "model.py", project / "model.py")
    out = tmp_path / "out"
    result = build(project, _target(project, fmt), fmt, out)
    files = {p: _normalise(p, (out / p).read_text(encoding="utf-8"))
             for p in result.files if not p.startswith(VERBATIM)}
    files["FILES"] = "".join(p + "\n" for p in result.files if not p.startswith(UNLISTED))
    return files


@pytest.mark.parametrize("case", CASES)
def test_golden_render(case, tmp_path):
    rendered = _render(case, tmp_path)
    expected_dir = GOLDEN / case / "expected"
    if REGENERATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        for path, text in rendered.items():
            (expected_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / path).write_text(text, encoding="utf-8")
    expected = {p.relative_to(expected_dir).as_posix(): p.read_text(encoding="utf-8")
                for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    assert sorted(rendered) == sorted(expected), "files differ; regenerate: see module docstring"
    for path in rendered:
        assert rendered[path] == expected[path], f"{case}/{path} differs from the golden file"
