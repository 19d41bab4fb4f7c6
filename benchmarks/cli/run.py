"""CLI start-up: median wall time of whole processes (what a user waits for).

    python benchmarks/cli/run.py [--runs 30] [--json out.json]

Compares `mlserve --help` and `mlserve validate` with a minimal two-command Typer app and with
`python -c "import typer"`, all from the same venv (the venv's console script, not a pyenv shim).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def median_wall(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, capture_output=True, check=True)          # warm the page cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    mlserve = str(bindir / "mlserve")
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        'python -c "import typer"': [py, "-c", "import typer"],
        "minimal Typer app --help": [py, str(HERE / "minimal_typer.py"), "--help"],
        "mlserve --help": [mlserve, "--help"],
        "mlserve validate": [mlserve, "validate", "-f", str(REPO / "examples" / "hello")],
        "mlserve deploy --help": [mlserve, "deploy", "--help"],
    }
    results = {name: median_wall(cmd, args.runs) for name, cmd in cases.items()}
    ref = results["minimal Typer app --help"]
    print(f"| command | median wall (s, {args.runs} runs) | x minimal Typer |")
    print("|---|---|---|")
    for name, value in results.items():
        print(f"| `{name}` | {value:.3f} | {value / ref:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "median_s": results,
                                         "cpu_count": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
