"""`mlserve cost` for every catalogued target: median wall time of whole processes.

    .venv/bin/python benchmarks/cost/run.py [--runs 15] [--json benchmarks/cost/results.json]

Goal (issue 13): report it. Three figures: ``table_s`` is `mlserve cost` as users run it (every
catalogued row, three policies each, the tables and charts rendered for a 200-column terminal),
``json_s`` is `mlserve cost --json`, and ``call_s`` is ``mlserve.cost.estimate([])`` in a warm
process (catalogue files read and validated, 168 hours x 3 policies per row), for a 168-hour
profile. ``help_s`` (`mlserve --help`) is the start-up floor on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mlserve.cost import estimate  # noqa: E402


def wall(cmd: list[str], runs: int, env: dict) -> float:
    subprocess.run(cmd, capture_output=True, check=True, env=env)          # warm caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env)
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    mlserve = str(Path(sys.executable).parent / "mlserve")
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "week.yaml"
        week = [(h % 24) * 10 + (h // 24) for h in range(168)]
        profile.write_text(json.dumps({"requests_per_hour": week, "seconds_per_request": 0.4,
                                       "prices": {"local": 0.05, "ssh": 0.4}}))
        env = {**os.environ, "COLUMNS": "200", "MLSERVE_PRICES_DIR": str(Path(tmp) / "none")}
        os.environ["MLSERVE_PRICES_DIR"] = env["MLSERVE_PRICES_DIR"]
        targets = len(estimate([], profile)["targets"])
        calls = []
        for _ in range(args.runs):
            start = time.perf_counter()
            estimate([], profile)
            calls.append(time.perf_counter() - start)
        results = {
            "targets": targets,
            "runs": args.runs,
            "help_s": wall([mlserve, "--help"], args.runs, env),
            "table_s": wall([mlserve, "cost", "--profile", str(profile)], args.runs, env),
            "json_s": wall([mlserve, "cost", "--profile", str(profile), "--json"], args.runs, env),
            "call_s": round(statistics.median(calls), 4),
        }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
