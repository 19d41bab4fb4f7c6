"""The shared journal's overhead: S3 (moto's server on loopback) against SQLite.

    .venv/bin/python benchmarks/journal/run.py [--runs 15] [--history 60] [--json out.json]

Goal (issue 13): the shared journal adds under 100 ms per command on loopback. Figures (medians):

- ``deploy_journal_s``: the journal work of one deploy in a warm process: open the journal for
  writing, take the target's lock, add the release, record adapter data, finish it as serving,
  release the lock (what ``service.deploy`` does around the adapter's steps).
- ``read_s``: open for reading + current + history (what ``status``/``plan`` read).
- ``deploy_process_s``: the same deploy journal work as a new process (``python -c``: the imports,
  and for S3 the botocore client), the cost a CI step pays once per command.
- ``status_cli_s``: ``mlserve status --json`` of a never-deployed local target, whole process.
- ``obstore_import_s`` / ``store_s``: what the S3 client itself costs in a new process.

Every journal starts with ``--history`` writes already in it (a target with some history; the S3
one read through its checkpoint). moto runs serialized (``tests.infra.moto_s3``), one request at
a time, as the tests run it.
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

from tests.infra.s3 import running_moto  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from work import deploy_work, read_work  # noqa: E402

DEPLOY = """
import sys, time
started = time.perf_counter()
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from pathlib import Path
from mlserve.journal import locate
from work import deploy_work
deploy_work(locate(Path(sys.argv[2]), None, sys.argv[1]))
print(time.perf_counter() - started)
"""


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def measure(where_text: str, workdir: Path, project: Path, runs: int, history: int,
            env: dict) -> dict:
    from mlserve.journal import locate
    where = locate(workdir, None, where_text)
    for _ in range(history):
        deploy_work(where)
    deploy = [deploy_work(where) for _ in range(runs)]
    read = [read_work(where) for _ in range(runs)]
    process, status = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", DEPLOY, where_text, str(workdir), str(ROOT),
                              str(Path(__file__).resolve().parent)], env=env,
                             capture_output=True, text=True, check=True).stdout
        process.append(float(out))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlserve.cli", "status", "-f", str(project),
                        "--state", where_text, "--json"], env=env, capture_output=True,
                       check=True)
        status.append(time.perf_counter() - started)
    return {"deploy_journal_s": median(deploy), "read_s": median(read),
            "deploy_process_s": median(process), "status_cli_s": median(status)}


def client_cost(env: dict, runs: int) -> dict:
    """What the S3 client itself costs in a new process: importing obstore, and building the
    store (credentials from the environment, as on a CI runner)."""
    code = ("import time; t=time.perf_counter(); import obstore, obstore.store; "
            "a=time.perf_counter(); from mlserve.journal.s3client import store; "
            "store('b', 's3://b'); print(a-t, time.perf_counter()-a)")
    rows = [tuple(map(float, subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                            capture_output=True, text=True).stdout.split()))
            for _ in range(runs)]
    return {"obstore_import_s": median([r[0] for r in rows]),
            "store_s": median([r[1] for r in rows])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--history", type=int, default=60)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mlsv-bench-journal-"))
    try:
        project = workdir / "proj"
        shutil.copytree(ROOT / "examples" / "hello", project)
        with running_moto(serialize=True) as store:
            env = {**os.environ, **store.env(), "PYTHONPATH": str(ROOT),
                   "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                   "AWS_EC2_METADATA_DISABLED": "true"}
            os.environ.update({k: v for k, v in env.items() if k.startswith("AWS")})
            bucket = store.bucket()
            results = {
                "sqlite": measure(str(workdir / "state"), workdir, project, args.runs,
                                  args.history, env),
                "s3": measure(f"s3://{bucket}/bench", workdir, project, args.runs, args.history,
                              env),
                "s3_client": client_cost(env, args.runs),
            }
        results["overhead_s"] = {k: round(results["s3"][k] - results["sqlite"][k], 4)
                                 for k in results["sqlite"]}
        results["runs"], results["history"] = args.runs, args.history
        text = json.dumps(results, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
