"""Images: first build + push of the examples, and a one-line code change (build wall time,
bytes pushed), against a private dockerd and registry (tests/infra, as root), FROM the local
base image. Each figure is one whole `mlserve build --image --push --json` process.

    .venv/bin/python benchmarks/images/run.py [--runs 5] [--json benchmarks/images/results/DATE.json]

Goals (issue 10): a one-line change builds in <= 2 s on a warm cache and pushes <= 64 KB; a
redeploy of the release already serving on a docker target builds and pushes nothing and takes
under 1 s (the whole `mlserve deploy` process).
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.infra import containers  # noqa: E402


def _started(fixture, *args):
    """The tests' session fixture as a context manager (the same engine and registry)."""
    return contextlib.contextmanager(fixture.__wrapped__)(*args)


def _project(tmp: Path, example: str, repository: str, base: str) -> Path:
    root = tmp / example
    shutil.copytree(REPO / "examples" / example, root,
                    ignore=shutil.ignore_patterns(".mlserve", "__pycache__"))
    text = (root / "mlserve.yaml").read_text()
    text = text.replace("targets:\n", "targets:\n  img: {provider: docker, image: "
                        f"{json.dumps(repository)}, base_image: {json.dumps(base)}}}\n", 1)
    (root / "mlserve.yaml").write_text(text)
    return root


def trusting_base(engine, base: str, tmp: Path) -> str:
    """The base image plus this machine's CA bundle: its package index is reached through a
    TLS-intercepting proxy whose CA only the host trusts (iris's requirements install in the image)."""
    ctx = tmp / "trusting-base"
    ctx.mkdir()
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", ctx / "ca.crt")
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY ca.crt /etc/ssl/certs/ca-certificates.crt\n"
                                    "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt\n")
    engine.client().images.build(path=str(ctx), tag="bench/trusting-base:1", network_mode="host")
    return "bench/trusting-base:1"


def build_push(root: Path, env: dict) -> dict:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mlserve.cli", "build", "img", "-f", str(root),
                           "--image", "--push", "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=900)
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-3:]}
    result = json.loads(done.stdout)
    return {"wall": time.monotonic() - started, "build": result["image"]["seconds"],
            "push": result["push"]["seconds"], "layers_pushed": result["push"]["layers_pushed"],
            "bytes_pushed": result["push"]["bytes_pushed"]}


def redeploy_unchanged(root: Path, env: dict, runs: int) -> dict:
    """Deploy hello to a docker target, then time `mlserve deploy` of the same release."""
    sys.path.insert(0, str(REPO))
    from tests.infra.net import free_port
    text = (root / "mlserve.yaml").read_text()
    (root / "mlserve.yaml").write_text(text.replace("targets:\n", "targets:\n  run: {provider: "
                                                    f"docker, image: bench/run, port: {free_port()}, "
                                                    f"base_image: {json.dumps(env['BASE'])}}}\n", 1))
    cmd = [sys.executable, "-m", "mlserve.cli", "deploy", "run", "-f", str(root), "--json"]
    full = {**os.environ, **env}
    first = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=900)
    if first.returncode:
        return {"failed": first.stderr.strip().splitlines()[-3:]}
    walls, changed = [], []
    try:
        for _ in range(runs):
            started = time.monotonic()
            again = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=300)
            walls.append(time.monotonic() - started)
            changed.append(json.loads(again.stdout)["changed"] if again.returncode == 0 else "failed")
    finally:
        subprocess.run([sys.executable, "-m", "mlserve.cli", "delete", "run", "-f", str(root), "-y"],
                       capture_output=True, env=full, timeout=300)
    return {"wall_median": statistics.median(walls), "wall_min": min(walls),
            "wall_max": max(walls), "changed": sorted(set(map(str, changed))), "runs": runs}


def storage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict = {}
    with _started(containers.dockerd) as engine, _started(containers.registry) as registry, \
            tempfile.TemporaryDirectory() as tmp:
        base = containers.base_image.__wrapped__(engine)
        env = {**engine.env(), "DOCKER_CONFIG": str(Path(tmp) / "docker-config")}
        bases = {"hello": base.ref, "iris": trusting_base(engine, base.ref, Path(tmp))}
        for example in ("hello", "iris"):
            root = _project(Path(tmp), example, f"{registry.address}/bench/{example}",
                            bases[example])
            before = storage(registry.root)
            first = build_push(root, env)
            if "failed" not in first:
                first["registry_growth"] = storage(registry.root) - before
            out[f"{example}_first"] = first
            print(example, "first build+push", first, flush=True)
        root = Path(tmp) / "hello"
        changes = []
        for run in range(args.runs):
            model = root / "model.py"
            model.write_text(model.read_text() + f"\nCHANGE_{run} = {run}\n")
            before = storage(registry.root)
            one = build_push(root, env)
            one["registry_growth"] = storage(registry.root) - before
            changes.append(one)
            print("one-line change", one, flush=True)
        out["one_line_change"] = {key: statistics.median(c[key] for c in changes)
                                  for key in changes[0]}
        out["one_line_change"]["runs"] = len(changes)
        out["redeploy_unchanged"] = redeploy_unchanged(root, {**env, "BASE": base.ref}, args.runs)
        print("redeploy of the serving release", out["redeploy_unchanged"], flush=True)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
