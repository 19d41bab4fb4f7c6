"""`mlserve build`: median wall time of the whole command per format, and what it writes.

    python benchmarks/build/run.py [--runs 7] [--weights-mib 256] [--json out.json]

Two projects: examples/hello (no dependencies) and a copy of it with a WEIGHTS-MiB weights file
(what large models cost: the file is copied into the context, and hashed for the release id).
Each run rebuilds into the same output directory, as a user's `mlserve build -o DIR` loop does.
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

REPO = Path(__file__).resolve().parents[2]
FORMATS = ("docker", "cog", "truss", "cloud-init")


def measure(manifest: Path, fmt: str, out: Path, runs: int) -> dict:
    cmd = [str(Path(sys.executable).with_name("mlserve")), "build", "-f", str(manifest),
           "--format", fmt, "-o", str(out), "--json"]
    subprocess.run(cmd, capture_output=True, check=True)            # warm caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, check=True, text=True)
        samples.append(time.perf_counter() - start)
    info = json.loads(done.stdout)
    size = sum((out / f).stat().st_size for f in info["files"])
    return {"median_s": round(statistics.median(samples), 3), "files": len(info["files"]),
            "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--weights-mib", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mlserve-bench-build-") as tmp:
        big = Path(tmp) / "big"
        shutil.copytree(REPO / "examples" / "hello", big)
        with open(big / "weights.bin", "wb") as fh:
            for _ in range(args.weights_mib):
                fh.write(os.urandom(1 << 20))
        for label, project in (("hello", REPO / "examples" / "hello"),
                               (f"hello + {args.weights_mib} MiB weights", big)):
            for fmt in FORMATS:
                result = measure(project / "mlserve.yaml", fmt, Path(tmp) / "out", args.runs)
                results[f"{label} / {fmt}"] = result
                print(f"{label:<28} {fmt:<11} {result['median_s']:>7.3f} s  "
                      f"{result['files']:>4} files  {result['bytes'] / 1e6:>8.1f} MB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
