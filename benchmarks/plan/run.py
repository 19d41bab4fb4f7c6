"""`mlserve plan`: median wall time on a deployed local target and a deployed N-host SSH fleet.

    .venv/bin/python benchmarks/plan/run.py [--runs 9] [--fleet 4] [--json out.json]

Goal (issue 8): under 0.5 s for local, under 1 s for a 4-host SSH target. Two figures each:
``cli_s`` is the whole command as users run it (`mlserve plan --json`, a new process: the
interpreter, imports, the manifest, the project's files hashed, the journal read, the provider
asked) and ``call_s`` the ``mlserve.plan.plan`` call in a warm process (what ``migrate
--dry-run`` pays); ``status_cli_s`` is `mlserve status`, the same question to the provider
without the plan, for comparison. The fleet needs root (network namespaces,
tests/infra/fleet.py); without it only local is measured. Each target is deployed once, planned ``--runs`` times, then deleted.
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

from mlserve import service  # noqa: E402
from mlserve.plan import plan  # noqa: E402
from tests.infra.net import free_port  # noqa: E402


def measure(manifest: Path, target: str, state: Path, runs: int) -> dict:
    cmd = [sys.executable, "-m", "mlserve.cli", "plan", target, "-f", str(manifest),
           "--state", str(state), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, capture_output=True, check=True, env=env)          # warm caches
    status_cmd = [*cmd[:3], "status", *cmd[4:]]
    cli, call, status = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, check=True, text=True, env=env)
        cli.append(time.perf_counter() - start)
        start = time.perf_counter()
        plan(manifest, target, state)
        call.append(time.perf_counter() - start)
        start = time.perf_counter()          # the same provider question, for comparison
        subprocess.run(status_cmd, capture_output=True, check=True, env=env)
        status.append(time.perf_counter() - start)
    result = json.loads(done.stdout)
    assert result["action"] == "none", result          # a deployed, unchanged target
    return {"cli_s": round(statistics.median(cli), 3), "call_s": round(statistics.median(call), 3),
            "status_cli_s": round(statistics.median(status), 3), "action": result["action"]}


def local(work: Path, runs: int) -> dict:
    project = work / "local"
    shutil.copytree(ROOT / "examples" / "hello", project)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {free_port()}"))
    state = work / "local-state"
    service.deploy(manifest, "local", state)
    try:
        return measure(manifest, "local", state, runs)
    finally:
        service.delete(manifest, "local", state)


def fleet(work: Path, runs: int, size: int) -> dict:
    from tests.infra.fleet import running_fleet
    from tests.ssh_models import make
    with running_fleet(size) as hosts:
        target = {"hosts": [f"{h.user}@{h.host}" for h in hosts.hosts],
                  "identity_file": str(hosts.key_path), "known_hosts": str(hosts.known_hosts),
                  "base_dir": str(work / "remote"), "port": free_port(), "max_parallel": size}
        manifest = make(work, target, name="bench")
        state = work / "fleet-state"
        service.deploy(manifest, "box", state)
        try:
            return measure(manifest, "box", state, runs)
        finally:
            service.delete(manifest, "box", state)


def show(label: str, result: dict, goal: float) -> None:
    print(f"{label:<16} plan cli {result['cli_s']:.3f} s  plan call {result['call_s']:.3f} s  "
          f"status cli {result['status_cli_s']:.3f} s  (goal {goal} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--fleet", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="mlserve-bench-plan-") as tmp:
        results["local"] = local(Path(tmp), args.runs)
        show("local", results["local"], 0.5)
        if os.geteuid() == 0:
            key = f"ssh_{args.fleet}_hosts"
            results[key] = fleet(Path(tmp), args.runs, args.fleet)
            show(f"ssh, {args.fleet} hosts", results[key], 1.0)
        else:
            print("ssh fleet skipped: it needs root (network namespaces)")
    print(f"load average {results['load_average']:.2f} on {results['cpus']} CPUs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
