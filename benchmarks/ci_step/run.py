"""The CI job step's overhead: ``python -m mlserve.ci_step run`` vs ``mlserve ... --json`` alone.

    .venv/bin/python benchmarks/ci_step/run.py [--runs 9] [--json out.json]

The example is deployed once on a local target; then, ``--runs`` times each (medians, whole
processes): a no-op ``deploy --json`` and ``plan --json`` run directly, and the same through
the step (inputs as INPUT_*, outputs to a GITHUB_OUTPUT file, a job summary written);
``schema --output deploy``; ``deploy --timeout 600`` (the armed timer's cost). The step's
install (a clean venv, pip install of this checkout) is timed by the tests, not here: it is
dominated by pip and the package index.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.infra.net import free_port  # noqa: E402

MLSERVE = [sys.executable, "-m", "mlserve.cli"]


def median_of(runs: int, argv: list[str], env: dict) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env=env, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlserve-bench-ci-"))
    project = work / "proj"
    shutil.copytree(ROOT / "examples" / "hello", project)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {free_port()}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", "MLSERVE_STATE": str(work / "st")}
    args = ["-f", str(project)]
    subprocess.run([*MLSERVE, "deploy", *args], check=True, env=env, capture_output=True)
    try:
        step_env = {**env, "INPUT_MANIFEST": str(project), "GITHUB_OUTPUT": str(work / "out"),
                    "GITHUB_STEP_SUMMARY": str(work / "summary.md")}
        step = [sys.executable, "-m", "mlserve.ci_step", "run"]
        results = {
            "deploy_noop_s": median_of(opts.runs, [*MLSERVE, "deploy", *args, "--json"], env),
            "deploy_noop_via_step_s": median_of(opts.runs, step, {**step_env,
                                                                  "INPUT_COMMAND": "deploy"}),
            "deploy_noop_timeout_s": median_of(opts.runs, [*MLSERVE, "deploy", *args, "--timeout",
                                                           "600", "--json"], env),
            "plan_s": median_of(opts.runs, [*MLSERVE, "plan", *args, "--json"], env),
            "plan_via_step_s": median_of(opts.runs, step, {**step_env, "INPUT_COMMAND": "plan"}),
            "schema_output_s": median_of(opts.runs, [*MLSERVE, "schema", "--output", "deploy"],
                                         env),
            "runs": opts.runs,
        }
    finally:
        subprocess.run([*MLSERVE, "delete", *args, "--yes"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
