"""Benchmark ``mlserve migrate`` local -> ssh: wall time of the whole command, split by phase.

    .venv/bin/python benchmarks/migrate/run.py [--rounds 5] [--inputs 0,100] [--out-dir DIR]

The ssh host is a real OpenSSH server on loopback started with the test suite's fixture code
(``tests.infra.sshd.running_sshd``), logging in as this user. Each round: a fresh project and
state directory, ``deploy`` to the local target ``a`` (not timed), then ``mlserve migrate --from a
--to box --json`` as a whole process (what users run) onto a fresh remote ``base_dir`` (a cold
host: every file is sent, as on a first deploy), with ``--inputs`` of N saved lines besides the
one smoke case. The phases are the command's own ``timings`` (``plan``: load the manifest, read
the inputs, check A, plan both targets; ``lock``; ``check``: A serves, B is empty, the release
matches; ``deploy``: B's deploy with its health and smoke checks; ``compare``: every input sent
to both; ``record``: the journal; ``delete``: A stopped and removed). ``wall`` is the process,
start-up included. Figures are medians over rounds; writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from mlserve import service  # noqa: E402
from tests.infra.net import free_port  # noqa: E402
from tests.infra.sshd import running_sshd  # noqa: E402

MODEL = '''
class Model:
    def load(self):
        self.factor = 2

    def predict(self, payload):
        return {"y": [v * self.factor for v in payload["x"]]}
'''
PHASES = ("plan", "lock", "check", "deploy", "compare", "record", "delete")


def project(work: Path, host, inputs: int) -> tuple[Path, Path]:
    root = work / "proj"
    root.mkdir(parents=True)
    (root / "model.py").write_text(MODEL)
    box = {"provider": "ssh", "hosts": [f"{host.user}@{host.host}:{host.port}"],
           "identity_file": str(host.key_path), "known_hosts": str(host.known_hosts),
           "base_dir": str(work / "remote"), "port": free_port(), "bind": "127.0.0.1"}
    manifest = {"name": "bench", "model": {"entrypoint": "model.py:Model", "python": "3.11"},
                "smoke": [{"input": {"x": [1, 2]}}],
                "targets": {"a": {"provider": "local", "port": free_port()}, "box": box}}
    (root / "mlserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    saved = work / "saved.jsonl"
    saved.write_text("".join(json.dumps({"x": [i, i / 7]}) + "\n" for i in range(inputs)))
    return root, saved


def one_round(host, inputs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mlsv-bench-migrate-") as tmp:
        work = Path(tmp)
        root, saved = project(work, host, inputs)
        state = work / "state"
        service.deploy(root, "a", state)
        argv = [sys.executable, "-m", "mlserve.cli", "migrate", "--from", "a", "--to", "box",
                "-f", str(root), "--state", str(state), "--inputs", str(saved), "--json", "--yes"]
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        try:
            if proc.returncode != 0:
                raise SystemExit(f"migrate failed ({proc.returncode}):\n{proc.stderr}")
            result = json.loads(proc.stdout)
        finally:
            for target in ("a", "box"):
                service.delete(root, target, state)
    return {"wall": wall, "compared": result["compared"], **result["timings"]}


def median_of(rounds: list[dict]) -> dict:
    keys = ["wall", *[p for p in PHASES if p in rounds[0]]]
    return {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys} | \
        {"compared": rounds[0]["compared"]}


def table(results: dict) -> str:
    lines = ["| inputs compared | wall (s) | " + " | ".join(PHASES) + " |",
             "|---|---|" + "---|" * len(PHASES)]
    for row in results["medians"]:
        lines.append(f"| {row['compared']} | {row['wall']:.2f} | "
                     + " | ".join(f"{row.get(p, 0):.3f}" for p in PHASES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inputs", default="0,100", help="saved input lines, comma-separated")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args()
    user = os.environ.get("USER") or __import__("getpass").getuser()
    medians, raw = [], {}
    with running_sshd(user) as host:
        for count in (int(n) for n in args.inputs.split(",")):
            rounds = [one_round(host, count) for _ in range(args.rounds)]
            raw[count] = rounds
            medians.append(median_of(rounds))
            print(json.dumps(medians[-1]), flush=True)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "system": platform.platform()}, "rounds": args.rounds,
               "medians": medians, "raw": raw}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "results.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
