"""What the cloud adapters' benchmarks (``benchmarks/{sagemaker,vertex,azureml}/run.py``) share:
the median whole-process time of some Python code (import costs), the deploy walk (first deploy,
no-op, update after a one-line change, no-op deploys as whole ``mlserve deploy`` processes,
delete) with the API calls each step made, and writing the result."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def process_seconds(code: str, runs: int) -> float:
    """Median seconds of ``python -c CODE`` as a whole process, run from the repository."""
    values = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        values.append(time.perf_counter() - began)
    return round(statistics.median(values), 3)


def deploy_walk(manifest: Path, target: str, state: Path, counted: Callable[[Callable], dict],
                runs: int) -> dict:
    """First deploy, no-op and update (``counted(step)`` runs a step and says what it called),
    then ``runs`` no-op ``mlserve deploy`` processes (median and min seconds), then delete."""
    from mlserve import service

    def deploy():
        return service.deploy(manifest, target, state)
    result = {"first_deploy": counted(deploy), "noop_deploy": counted(deploy)}
    model = manifest.parent / "model.py"
    model.write_text(model.read_text() + "\n# a one-line change\n")
    result["update"] = counted(deploy)
    walls = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mlserve.cli", "deploy", target, "-f",
                               str(manifest), "--state", str(state)], capture_output=True,
                              text=True, env=os.environ.copy(), timeout=300)
        walls.append(time.perf_counter() - began)
        if done.returncode:
            raise SystemExit(done.stderr)
    result["noop_deploy_process_s"] = {"median": round(statistics.median(walls), 3),
                                       "min": round(min(walls), 3), "runs": runs}
    service.delete(manifest, target, state)
    return result


def emit(result: dict, json_path: Path | None) -> None:
    """Print the result (dated) and write it to ``json_path`` when given."""
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result, indent=2))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
