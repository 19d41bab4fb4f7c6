"""Dynamic batching: the runtime next to the model's own limit and to BentoML's adaptive batching.

    .venv/bin/python benchmarks/runtime/batching.py [--rounds 3] [--duration 5] [--connections 1,16,64]
        [--servers runtime,bentoml] [--out-dir benchmarks/runtime/results]

The model is ``mlp/model.py`` (numpy MLP 1024 -> 4096 -> 4096 -> 10, float32), BLAS on one thread
(``OPENBLAS_NUM_THREADS=1`` and friends) for every process. Each request carries 1,024 floats as
JSON. In one run, on core 0 each (``wrk`` on core 1):

- **limit**: ``mlp/limit.py``, the model in a loop with no server: JSON decode + ``predict_batch``
  + JSON encode, at batch 1 (through ``predict``), the runtime's ``max_batch_size`` and 64;
- **runtime**: ``python -m mlserve.runtime`` with its defaults (``max_batch_size`` 32,
  ``max_batch_wait_ms`` 10, concurrency 4, access log on);
- **bentoml**: BentoML's own server (``bentoml serve``) with ``@bentoml.api(batchable=True,
  max_batch_size=32)`` around the same ``Model``, from PyPI in its own venv under ``--cache``;
- **runtime-b64**, **bentoml-b64**: the same with batches of 64 at most (the issue's first table).

Goals (issue 14): at 64 connections >= 0.9x the limit at the same batch size and p99 <= twice
one full batch; at 1 connection p50 <= 1.1x one ``predict`` (decode + predict + encode); ahead of
BentoML at every load. (With batches of 32 and 64 connections, Little's law puts the mean latency
at 64 / throughput = 2 x (one batch of 32) / (throughput ÷ limit): above twice a batch of 32 for
any server below the limit. The table gives p99 against a batch of 64 too.)

This machine's speed drifts by up to a third within minutes (its memory bandwidth is shared),
so the limit is measured right beside every run: ``limit.py --serve`` keeps the model loaded and
measures batch 1, the server's batch and 64 for ``--limit-seconds`` just before and just after
each run, and each ratio is that run against the mean of the two. Rounds interleave the servers;
figures are medians over rounds of those per-run ratios, with the machine's load average recorded
(the machine is shared). Writes ``batching.json`` and ``batching.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from peers import PYTHON, Server, _pip_version, free_port, venv, wait_http  # noqa: E402
from run import measure, wait_for_quiet  # noqa: E402

MLP = HERE / "mlp"
ONE_THREAD_BLAS = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
BATCH = 32  # the runtime's default max_batch_size, given to BentoML too


def payload() -> list[float]:
    import random
    rng = random.Random(14)
    return [round(rng.gauss(0, 1), 6) for _ in range(1024)]


class MlpRuntime(Server):
    name = "runtime"
    batch = BATCH
    flags: tuple = ()

    def command(self):
        return ([sys.executable, "-m", "mlserve.runtime", "--app-dir", str(MLP), "--host", "127.0.0.1",
                 "--port", str(self.port), "--release", "bench", *self.flags],
                {"PYTHONPATH": str(ROOT), **ONE_THREAD_BLAS}, None)

    def version(self) -> str:
        return "numpy " + _pip_version(Path(sys.executable).parent, "numpy")


class MlpRuntime64(MlpRuntime):
    name = "runtime-b64"
    batch = 64
    flags = ("--max-batch-size", "64")


BENTO_SERVICE = """\
import sys

import bentoml

sys.path.insert(0, {mlp!r})
from model import Model


@bentoml.service(workers=1)
class MLP:
    def __init__(self) -> None:
        self.model = Model()
        self.model.load()

    @bentoml.api(batchable=True, max_batch_size={batch})
    def predict(self, input: list[list[float]]) -> list[list[float]]:
        return self.model.predict_batch(input)
"""


class Bento(Server):
    """BentoML's server; a request is a batch of one (``{"input": [[1024 floats]]}``), which its
    adaptive batcher merges with others, as BentoML's batchable APIs take requests."""

    name = "bentoml"
    batch = BATCH
    start_timeout = 90.0
    health_path = "/readyz"

    def cpu_seconds(self) -> float:
        """BentoML's workers leave the server's process group (its supervisor starts them): count
        every descendant of the server process instead."""
        parents, times = {}, {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat.parent.name)
            parents[pid], times[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
        family, grew = {self.proc.pid}, True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in family and pid not in family:
                    family.add(pid)
                    grew = True
        return sum(times.get(pid, 0) for pid in family) / os.sysconf("SC_CLK_TCK")

    def body(self, payload: str) -> str:
        return '{"input":[' + payload[len('{"input":'):-1] + "]}"

    def command(self):
        bin_dir = venv(self.cache, "bentoml-venv", "bentoml==1.4.40", "numpy")
        app = self.cache / f"{self.name}-app"
        app.mkdir(exist_ok=True)
        (app / "service.py").write_text(BENTO_SERVICE.format(mlp=str(MLP), batch=self.batch))
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "BENTOML_DO_NOT_TRACK": "True", **ONE_THREAD_BLAS}
        return [str(bin_dir / "bentoml"), "serve", "service:MLP", "--host", "127.0.0.1", "--port", str(self.port)], env, app

    def version(self) -> str:
        bin_dir = self.cache / "bentoml-venv" / "bin"
        return f"bentoml {_pip_version(bin_dir, 'bentoml')}, numpy {_pip_version(bin_dir, 'numpy')}"


class Bento64(Bento):
    name = "bentoml-b64"
    batch = 64


class Lean64(Server):
    """``lean_http.py``: a ceiling probe with a far leaner HTTP path than the runtime's (not in
    the default set)."""
    name = "lean-b64"
    batch = 64

    def command(self):
        return ([sys.executable, str(Path(__file__).resolve().parent / "lean_http.py"), str(MLP),
                 str(self.port), str(self.batch)], {**ONE_THREAD_BLAS}, None)


class Inline(Lean64):
    """``lean_http.py`` with ``predict`` inline on the event loop: no thread, no batching. At one
    connection, the floor HTTP sets under the runtime's latency (not in the default set)."""
    name = "inline"
    batch = 1

    def command(self):
        cmd, env, cwd = super().command()
        return cmd[:-1] + ["0"], env, cwd


SERVERS = {s.name: s for s in (MlpRuntime, MlpRuntime64, Bento, Bento64, Lean64, Inline)}
DEFAULT_SERVERS = ("runtime", "runtime-b64", "bentoml", "bentoml-b64")


class Limit:
    """``mlp/limit.py --serve`` on core 0, the model loaded once: the limit measured on request."""

    def __init__(self, body_file: Path) -> None:
        self.proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, str(MLP / "limit.py"), "--serve", str(body_file)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **ONE_THREAD_BLAS})

    def measure(self, batch: int, seconds: float) -> dict:
        self.proc.stdin.write(f"{batch} {seconds}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def load_average() -> float:
    return os.getloadavg()[0]


def table(report: dict) -> str:
    """One row per server and load. Each server is held to the limit at its own largest batch
    and compared with its peer of the same batch size (runtime with bentoml, -b64 with -b64).
    Every ratio is the median over rounds of one run against the limit measured right beside it."""
    lim = report["limit"]
    measured = "; ".join(f"batch {b} {v['rps']:,.0f} req/s ({v['batch_ms']:.2f} ms per batch)" for b, v in lim.items())
    lines = [f"limit (model in a loop, one core; medians of every measurement beside a run): {measured}", "",
             "| server | max batch | conns | req/s (median) | x limit at its batch | per CPU-s x limit | p50 / p99 ms | "
             "p50 ÷ one predict | p99 ÷ one full batch | p99 ÷ one batch of 64 | runtime ÷ this | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    results, batches = report["results"], report["batches"]
    for name, by_conn in results.items():
        mine = "runtime" + name[len("bentoml"):] if name.startswith("bentoml") else None
        for c, r in by_conn.items():
            base = results.get(mine, {}).get(c)
            ratio = f"{base['rps_2xx'] / r['rps_2xx']:.2f}" if base and r["rps_2xx"] else "-"
            lines.append(f"| {name} | {batches[name]} | {c} | {r['rps_2xx']:,.0f} | {r['x_limit']:.2f} | "
                         f"{r['per_cpu_x_limit']:.2f} | "
                         f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['p50_x_predict']:.2f} | "
                         f"{r['p99_x_batch']:.2f} | {r['p99_x_batch64']:.2f} | "
                         f"{ratio} | {r['load_avg']:.1f} |")
    return "\n".join(lines)


def summarise(runs: list[dict]) -> dict:
    keys = ("rps_2xx", "per_cpu_s", "p50_ms", "p99_ms", "non_2xx", "socket_errors", "core0_others_pct",
            "core1_others_pct", "load_avg", "x_limit", "per_cpu_x_limit", "p50_x_predict", "p99_x_batch",
            "p99_x_batch64")
    return {**{k: statistics.median(r[k] for r in runs) for k in keys}, "runs": runs}


def beside(run: dict, own: dict, single: dict, b64: dict) -> None:
    """Ratios of one run to the limit measured right beside it (before and after, averaged)."""
    run["x_limit"] = run["rps_2xx"] / own["rps"]
    run["per_cpu_x_limit"] = run["per_cpu_s"] / own["per_cpu_s"]
    run["p50_x_predict"] = run["p50_ms"] / single["batch_ms"]
    run["p99_x_batch"] = run["p99_ms"] / own["batch_ms"]
    run["p99_x_batch64"] = run["p99_ms"] / b64["batch_ms"]


def mean_of(a: dict, b: dict) -> dict:
    return {k: (a[k] + b[k]) / 2 for k in ("rps", "per_cpu_s", "batch_ms")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", default="1,16,64")
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                    help=f"comma-separated, of: {', '.join(SERVERS)}")
    ap.add_argument("--cache", type=Path, default=Path("/var/tmp/mlserve-bench"))
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--limit-seconds", type=float, default=1.0,
                    help="length of each limit measurement beside a run (one before, one after)")
    ap.add_argument("--quiet-pct", type=float, default=10.0)
    ap.add_argument("--quiet-wait", type=float, default=10.0)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    connections = [int(c) for c in args.connections.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"input": payload()}, separators=(",", ":"))
    body_file = args.cache / "mlp-body.json"
    body_file.write_text(body)

    servers: list[Server] = []
    runs: dict = {}
    limits: dict = {str(b): [] for b in (1, BATCH, 64)}
    lim = Limit(body_file)
    slice_s = args.limit_seconds

    def beside_limits(batch: int) -> dict:
        out = {}
        for b in sorted({1, batch, 64}):
            out[str(b)] = lim.measure(b, slice_s)
            limits[str(b)].append(out[str(b)])
        return out

    try:
        for name in args.servers.split(","):
            server = SERVERS[name](args.cache, MLP)
            server.start(free_port())
            wait_http(server.health_url, server.start_timeout, server.health_any_status)
            servers.append(server)
            print(f"[{name}] up on {server.predict_url}", file=sys.stderr)
        for s in servers:
            measure(s, 16, 2.0, s.body(body))  # warm up
        runs = {s.name: {str(c): [] for c in connections} for s in servers}
        for round_no in range(args.rounds):
            for s in servers:
                for c in connections:
                    wait_for_quiet(servers, args.quiet_pct, args.quiet_wait)
                    before = beside_limits(s.batch)
                    r = measure(s, c, args.duration, s.body(body))
                    r["load_avg"] = load_average()
                    after = beside_limits(s.batch)
                    r["limit_beside"] = {b: mean_of(before[b], after[b]) for b in before}
                    beside(r, r["limit_beside"][str(s.batch)], r["limit_beside"]["1"], r["limit_beside"]["64"])
                    runs[s.name][str(c)].append(r)
                    print(f"round {round_no + 1} {s.name:8} c={c:3} {r['rps_2xx']:8,.0f} req/s ({r['x_limit']:.2f}x limit) "
                          f"p50 {r['p50_ms']:.2f} ({r['p50_x_predict']:.2f}x predict) p99 {r['p99_ms']:.2f} ms "
                          f"non-2xx {r['non_2xx']}  load {r['load_avg']:.1f}", file=sys.stderr)
    finally:
        lim.stop()
        for s in servers:
            s.stop()

    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "method": {"rounds": args.rounds, "duration_s": args.duration, "connections": connections,
                   "limit_beside_s": args.limit_seconds,
                   "body_bytes": len(body), "server_core": 0, "wrk_core": 1, "blas_threads": 1, "batch": BATCH},
        "versions": {s.name: s.version() for s in servers},
        "batches": {s.name: s.batch for s in servers},
        "limit": {b: {k: statistics.median(x[k] for x in xs) for k in ("rps", "per_cpu_s", "batch_ms")}
                  for b, xs in limits.items() if xs},
        "limit_runs": limits,
        "results": {name: {c: summarise(rs) for c, rs in by_c.items()} for name, by_c in runs.items()},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "batching.json").write_text(json.dumps(report, indent=2) + "\n")
    md = table(report)
    (args.out_dir / "batching.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
