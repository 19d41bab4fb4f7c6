"""The vertex provider: what importing it costs, how many Google API calls a first deploy, an
update and a no-op deploy make, and the wall time of a no-op deploy, against the tests' Vertex
AI emulator (private dockerd, registry; root), with examples/hello built FROM the local base
image.

    .venv/bin/python benchmarks/vertex/run.py [--runs 5] [--json benchmarks/vertex/results/DATE.json]

Calls are counted by mlserve's ``Gcp`` (one per API method, however often it was retried,
operation polls included) and HTTP requests by a response hook on the SDK's REST session, in
process through ``mlserve.service.deploy``. The no-op wall time is the whole ``mlserve deploy``
process.
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

from tests.infra import vertex  # noqa: E402
from cloud_deploys import deploy_walk, emit, process_seconds  # noqa: E402

READS = ("Get", "List")


def import_cost(runs: int) -> dict:
    """Whole-process seconds: the adapter module alone, and with the SDK and a client (what a
    command on a vertex target adds); `python -c pass` as the floor."""
    return {"python_pass_s": process_seconds("pass", runs),
            "import_adapter_s": process_seconds("import mlserve.adapters.vertex.steps", runs),
            "import_adapter_and_sdk_client_s": process_seconds(
                "from mlserve.adapters.vertex.api import _sdk; _, _, v1 = _sdk();"
                "from google.auth.credentials import AnonymousCredentials;"
                "v1.EndpointServiceClient(credentials=AnonymousCredentials(), transport='rest')", runs)}


def counted(step):
    """Run ``step()`` (a ``service.deploy``) and return what the adapter's ``Gcp`` counted."""
    from mlserve.adapters.vertex import VertexAdapter
    seen = []
    original = VertexAdapter.session

    def session(self, ctx):
        gcp = original(self, ctx)
        if gcp not in seen:
            seen.append(gcp)
        return gcp
    VertexAdapter.session = session
    try:
        began = time.perf_counter()
        result = step()
        wall = time.perf_counter() - began
    finally:
        VertexAdapter.session = original
    calls = [c for gcp in seen for c in gcp.calls]
    return {"changed": result.changed, "wall_s": round(wall, 2), "api_calls": len(calls),
            "operation_polls": calls.count("Operations.GetOperation"),
            "http_requests": sum(gcp.attempts for gcp in seen),
            "writes": sorted(c for c in set(calls) if not c.split(".")[1].startswith(READS)),
            "by_method": dict(Counter(calls))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"import": import_cost(args.runs)}
    with tempfile.TemporaryDirectory() as tmp_name, \
            vertex.running_gcp_stack(Path(tmp_name) / "gcp") as stack:
        tmp = Path(tmp_name)
        root = tmp / "hello"
        shutil.copytree(REPO / "examples" / "hello", root,
                        ignore=shutil.ignore_patterns(".mlserve", "__pycache__"))
        manifest = root / "mlserve.yaml"
        options = {"provider": "vertex", **stack.target, "health_timeout": 300,
                   "repository": f"{stack.registry.address}/bench-vx/hello",
                   "base_image": stack.base_image.ref}
        manifest.write_text(manifest.read_text().replace(
            "targets:\n", f"targets:\n  vx: {json.dumps(options)}\n", 1))
        state = tmp / "state"
        result.update(deploy_walk(manifest, "vx", state, counted, args.runs))
    emit(result, args.json)


if __name__ == "__main__":
    main()
