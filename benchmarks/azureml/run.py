"""The azureml provider: what importing it costs, how many Azure calls a first deploy, an update
and a no-op deploy make, and the wall time of a no-op deploy, against the tests' Azure ML
emulator (private dockerd, registry; root), with examples/hello built FROM the local base image.

    .venv/bin/python benchmarks/azureml/run.py [--runs 5] [--json benchmarks/azureml/results/DATE.json]

Calls are what reached the emulator (``GET /_emulator/calls``: every HTTP request, token
requests and operation polls included; a retried request counts each time), in process through
``mlserve.service.deploy``. The no-op wall time is the whole ``mlserve deploy`` process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tests.infra.azureml import RESOURCE_GROUP, WORKSPACE, running_azure_stack  # noqa: E402
from cloud_deploys import deploy_walk, emit, process_seconds  # noqa: E402


def import_cost(runs: int) -> dict:
    """Whole-process seconds: the adapter module alone, and with azure-ai-ml, azure-identity
    and an MLClient (what a command on an azureml target adds); `python -c pass` as the floor."""
    client = ("from types import SimpleNamespace as N; from mlserve.adapters.azureml.api import "
              "Azure; Azure(N(subscription_id='00000000-0000-0000-0000-000000000000', "
              "resource_group='rg', workspace='wsx'))")
    return {"python_pass_s": process_seconds("pass", runs),
            "import_adapter_s": process_seconds("import mlserve.adapters.azureml.steps", runs),
            "import_adapter_and_sdk_client_s": process_seconds(client, runs)}


def counted(emulator, step) -> dict:
    seen = len(emulator.calls())
    began = time.perf_counter()
    result = step()
    wall = time.perf_counter() - began
    calls = [c["operation"] for c in emulator.calls()[seen:]]
    return {"changed": result.changed, "wall_s": round(wall, 2), "http_requests": len(calls),
            "polls": calls.count("GET mfeOperationsStatus"),
            "writes": sorted({c for c in calls if not c.startswith("GET")}),
            "by_operation": dict(Counter(calls))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"import": import_cost(args.runs)}
    with tempfile.TemporaryDirectory() as tmp_name, running_azure_stack(Path(tmp_name)) as stack:
        tmp = Path(tmp_name)
        root = tmp / "hello"
        shutil.copytree(REPO / "examples" / "hello", root,
                        ignore=shutil.ignore_patterns(".mlserve", "__pycache__"))
        manifest = root / "mlserve.yaml"
        manifest.write_text(manifest.read_text().replace("targets:\n", (
            "targets:\n  az: {provider: azureml, resource_group: " + RESOURCE_GROUP
            + f", workspace: {WORKSPACE}, registry: {json.dumps(stack.registry.address)}, "
            f"repository: bench-az/hello, base_image: {json.dumps(stack.base_image.ref)}, "
            "health_timeout: 300}\n"), 1))
        state = tmp / "state"
        result.update(deploy_walk(manifest, "az", state, lambda step: counted(stack.emulator, step), args.runs))
    emit(result, args.json)


if __name__ == "__main__":
    main()
