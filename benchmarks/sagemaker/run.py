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
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tests.infra import containers, sagemaker  # noqa: E402
from cloud_deploys import deploy_walk, emit, process_seconds  # noqa: E402


def _started(fixture, *args):
    return contextlib.contextmanager(fixture.__wrapped__)(*args)


def import_cost(runs: int) -> dict:
    """Whole-process seconds: the adapter module alone, and with boto3 and a session (what a
    command on a sagemaker target adds); `python -c pass` as the floor."""
    return {"python_pass_s": process_seconds("pass", runs),
            "import_adapter_s": process_seconds("import mlserve.adapters.sagemaker.steps", runs),
            "import_adapter_and_boto3_session_s": process_seconds(
                "from mlserve.adapters.sagemaker.api import Aws; Aws('us-east-1').client('sagemaker')", runs)}


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
        result.update(deploy_walk(manifest, "sm", state, counted, args.runs))
    emit(result, args.json)


if __name__ == "__main__":
    main()
