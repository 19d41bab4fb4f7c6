"""The SageMaker emulator (tests/emulators/sagemaker): how long its transitions and an
InvokeEndpoint take on this machine, so a test's waiting can be judged. Runs the tests' own
components (private dockerd, registry, moto, the emulator; root) and examples/hello built by
mlserve's image builder.

    .venv/bin/python benchmarks/sagemaker_emulator/run.py [--runs 5] [--calls 300] \
        [--json benchmarks/sagemaker_emulator/results/DATE.json]

Figures (medians): CreateEndpoint -> InService (pull, start, /ping), a blue/green UpdateEndpoint
-> InService (a new fleet beside the old, switch, old removed), DeleteEndpoint -> gone; and one
InvokeEndpoint through boto3 and the emulator against the same POST /invocations sent straight
into the container's network namespace (the emulator's own overhead is the difference).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.infra import sagemaker  # noqa: E402


def _build(tmp: Path, engine, registry, base: str) -> str:
    from tests.helpers import run_process

    root = tmp / "hello"
    shutil.copytree(REPO / "examples" / "hello", root)
    manifest = root / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace(
        "targets:\n", "targets:\n  img: {provider: docker, image: "
        f"{json.dumps(registry.address + '/bench-sm/hello')}, base_image: {json.dumps(base)}}}\n"))
    done = run_process("build", "img", "-f", str(root), "--image", "--push", "--json",
                       env={**engine.env(), "DOCKER_CONFIG": str(tmp / "docker-config")},
                       timeout=600)
    if done.code:
        raise SystemExit(done.err)
    return json.loads(done.out)["image"]["ref"]


def _until(sm, name: str, statuses: set[str], after_change: bool = False) -> None:
    seen = []
    while True:
        try:
            status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        except sm.exceptions.ClientError:
            status = "gone"
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in statuses and (not after_change or len(seen) > 1):
            return
        time.sleep(0.02)


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def measure(sm, runtime, store_pid_of, image: str, runs: int, calls: int) -> dict:
    creates, updates, deletes = [], [], []
    role = sagemaker.ROLE_ARN
    variant = {"VariantName": "AllTraffic", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
    body = json.dumps({"input": {"x": [1, 2, 3]}})
    through, direct = [], []
    for run in range(runs):
        name = f"bench-{run}"
        for index in (1, 2):
            sm.create_model(ModelName=f"{name}-m{index}", ExecutionRoleArn=role,
                            PrimaryContainer={"Image": image, "Environment": {"FACTOR": str(index)}})
            sm.create_endpoint_config(EndpointConfigName=f"{name}-c{index}", ProductionVariants=[
                {**variant, "ModelName": f"{name}-m{index}"}])
        began = time.perf_counter()
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c1")
        _until(sm, name, {"InService", "Failed"})
        creates.append(time.perf_counter() - began)
        if run == 0:
            pid = store_pid_of(name)
            from tests.emulators.sagemaker.fleet import NetnsHTTPConnection
            for _ in range(calls):
                t0 = time.perf_counter()
                runtime.invoke_endpoint(EndpointName=name, ContentType="application/json",
                                        Body=body)["Body"].read()
                through.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                conn = NetnsHTTPConnection(pid)
                conn.request("POST", "/invocations", body=body,
                             headers={"Content-Type": "application/json"})
                conn.getresponse().read()
                conn.close()
                direct.append(time.perf_counter() - t0)
        began = time.perf_counter()
        sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c2")
        _until(sm, name, {"InService", "Failed"}, after_change=True)
        updates.append(time.perf_counter() - began)
        began = time.perf_counter()
        sm.delete_endpoint(EndpointName=name)
        _until(sm, name, {"gone"})
        deletes.append(time.perf_counter() - began)
    return {
        "runs": runs, "calls": calls,
        "create_to_in_service_s": round(statistics.median(creates), 2),
        "update_to_in_service_s": round(statistics.median(updates), 2),
        "delete_to_gone_s": round(statistics.median(deletes), 2),
        "invoke_through_emulator_ms": _median_ms(through),
        "invocations_direct_ms": _median_ms(direct),
        "invoke_p99_through_emulator_ms": round(sorted(through)[int(len(through) * 0.99) - 1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import boto3

    with tempfile.TemporaryDirectory() as tmp_name, \
            sagemaker.running_aws_stack(Path(tmp_name)) as stack:
        engine, emulator = stack.dockerd, stack.emulator
        image = _build(Path(tmp_name), engine, stack.registry, stack.base_image.ref)
        sm, runtime = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")

        def pid_of(name: str) -> int:
            (container,) = engine.client().containers.list(
                filters={"label": f"{emulator.label}.endpoint={name}"})
            return container.attrs["State"]["Pid"]

        result = measure(sm, runtime, pid_of, image, args.runs, args.calls)
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
