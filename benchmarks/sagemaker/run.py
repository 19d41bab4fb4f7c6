"""The sagemaker provider: what importing it costs, how many AWS calls a first deploy, an update
and a no-op deploy make, and the wall time of a no-op deploy, against the tests' SageMaker
emulator and moto (private dockerd, registry; root), with examples/hello built FROM the local
base image.

    .venv/bin/python benchmarks/sagemaker/run.py [--runs 5] [--json benchmarks/sagemaker/results/DATE.json]

Calls are counted by botocore's own event hooks in mlserve's ``Aws`` (``before-call``: one per
API operation, however often it was retried; ``before-send``: HTTP requests), in process through
``mlserve.service.deploy``. The no-op wall time is the whole ``mlserve deploy`` process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.infra import containers, sagemaker  # noqa: E402


def _started(fixture, *args):
    return contextlib.contextmanager(fixture.__wrapped__)(*args)


def import_cost(runs: int) -> dict:
    """Whole-process seconds: the adapter module alone, and with boto3 and a session (what a
    command on a sagemaker target adds); `python -c pass` as the floor."""
    def timed(code: str) -> float:
        values = []
        for _ in range(runs):
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                           env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1",
                                "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
            values.append(time.perf_counter() - began)
        return round(statistics.median(values), 3)
    return {"python_pass_s": timed("pass"),
            "import_adapter_s": timed("import mlserve.adapters.sagemaker.steps"),
            "import_adapter_and_boto3_session_s": timed(
                "from mlserve.adapters.sagemaker.api import Aws; Aws('us-east-1').client('sagemaker')")}


def counted(step):
    """Run ``step()`` (a ``service.deploy``) and return what the adapter's ``Aws`` counted."""
    from mlserve.adapters.sagemaker import SageMakerAdapter
    seen = []
    original = SageMakerAdapter.session

    def session(self, ctx):
        aws = original(self, ctx)
        if aws not in seen:
            seen.append(aws)
        return aws
    SageMakerAdapter.session = session
    try:
        began = time.perf_counter()
        result = step()
        wall = time.perf_counter() - began
    finally:
        SageMakerAdapter.session = original
    calls = [c for aws in seen for c in aws.calls]
    return {"changed": result.changed, "wall_s": round(wall, 2), "api_calls": len(calls),
            "http_requests": sum(aws.attempts for aws in seen),
            "writes": sorted(c for c in set(calls) if not c.split(":")[1].startswith(
                ("Describe", "List"))),
            "by_operation": dict(Counter(calls))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"import": import_cost(args.runs)}
    with tempfile.TemporaryDirectory() as tmp_name, \
            _started(containers.dockerd) as engine, _started(containers.registry) as registry, \
            _started(sagemaker.moto_server) as moto, \
            _started(sagemaker.sagemaker_emulator, engine, registry, moto) as emulator:
        tmp = Path(tmp_name)
        base = containers.base_image.__wrapped__(engine)
        sagemaker.create_execution_role(moto)       # the emulator checks it as SageMaker does
        os.environ.update(sagemaker.aws_environment(emulator, moto, engine, tmp))
        root = tmp / "hello"
        shutil.copytree(REPO / "examples" / "hello", root,
                        ignore=shutil.ignore_patterns(".mlserve", "__pycache__"))
        manifest = root / "mlserve.yaml"
        manifest.write_text(manifest.read_text().replace("targets:\n", (
            "targets:\n  sm: {provider: sagemaker, role: " + json.dumps(sagemaker.ROLE_ARN)
            + f", repository: {json.dumps(registry.address + '/bench-sm/hello')}, base_image: "
            f"{json.dumps(base.ref)}, health_timeout: 300}}\n"), 1))
        text = manifest.read_text()       # autoscaling between 1 and 2 instances
        manifest.write_text(text.replace("max_replicas: 1,", "max_replicas: 2,", 1))
        state = tmp / "state"
        from mlserve import service

        def deploy():
            return service.deploy(manifest, "sm", state)
        result["first_deploy"] = counted(deploy)
        result["noop_deploy"] = counted(deploy)
        model = root / "model.py"
        model.write_text(model.read_text() + "\n# a one-line change\n")
        result["update"] = counted(deploy)
        walls = []
        for _ in range(args.runs):
            began = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "mlserve.cli", "deploy", "sm", "-f",
                                   str(manifest), "--state", str(state)], capture_output=True,
                                  text=True, env=os.environ.copy(), timeout=300)
            walls.append(time.perf_counter() - began)
            if done.returncode:
                raise SystemExit(done.stderr)
        result["noop_deploy_process_s"] = {"median": round(statistics.median(walls), 3),
                                           "min": round(min(walls), 3), "runs": args.runs}
        service.delete(manifest, "sm", state)
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
