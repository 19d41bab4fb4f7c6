"""Benchmark the mlserve runtime against a raw ASGI app, Cog's server and Truss's server.

    .venv/bin/python benchmarks/runtime/run.py [--rounds 3] [--duration 5] [--connections 16,64]
        [--servers runtime,raw,cog,truss] [--out-dir benchmarks/runtime/results]

Every server answers the same dependency-free model (examples/hello, ``model.py:Model``) with the
same payload ``{"input": {"x": [1, 2, 3]}}``. Servers are pinned to core 0 with ``taskset``, ``wrk``
to core 1. Requests/s count 2xx answers only: wrk's status errors (answers >= 400, e.g. Cog's 409
"busy") are subtracted. Rounds interleave the servers, so background noise on a shared machine
hits all of them alike; each run first waits (bounded) for both cores to be quiet, and records how
busy other processes kept them. Figures are medians over rounds, with the best round beside them
(interference only ever slows a server), and 2xx answers per CPU-second the server consumed,
which does not depend on how much of the core it got.

Cog and Truss are installed from PyPI into their own venvs under ``--cache`` (default
/var/tmp/mlserve-bench), never into the project's venv. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from peers import PEERS, Server, free_port, wait_http

PAYLOAD = '{"input":{"x":[1,2,3]}}'


def core_busy_seconds(core: int) -> float:
    """Process time (user, nice, system, steal) of one core since boot, from /proc/stat.

    irq and softirq time are left out: on loopback they are mostly the benchmark's own packets.
    """
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            return (ticks[0] + ticks[1] + ticks[2] + ticks[7]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def wait_for_quiet(servers: list[Server], limit_pct: float, max_wait: float) -> float:
    """Wait until others keep cores 0 and 1 under ``limit_pct`` busy for 0.5 s (at most ``max_wait`` s).

    Returns the seconds waited. The servers' own idle work (timers) is not counted against quiet.
    """
    started = time.monotonic()
    while time.monotonic() - started < max_wait:
        own = sum(s.cpu_seconds() for s in servers)
        before = core_busy_seconds(0) + core_busy_seconds(1)
        time.sleep(0.5)
        busy = core_busy_seconds(0) + core_busy_seconds(1) - before - (sum(s.cpu_seconds() for s in servers) - own)
        if 100.0 * busy / 0.5 < limit_pct:
            break
    return time.monotonic() - started


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(server: Server, connections: int, duration: float, body: str | None = None) -> dict:
    """One wrk run, plus the server's CPU and how busy other processes kept each core.

    This machine is shared: what others run on core 0 slows the server, on core 1 slows wrk.
    Both are recorded per run ("noise"), so a figure can be judged by how quiet its run was.
    """
    cpu_before, wrk_before = server.cpu_seconds(), children_cpu_seconds()
    core0_before, core1_before = core_busy_seconds(0), core_busy_seconds(1)
    result = wrk(server.predict_url, connections, duration, body or server.body(PAYLOAD))
    cpu = server.cpu_seconds() - cpu_before
    wrk_cpu = children_cpu_seconds() - wrk_before
    ok = result["requests"] - result["non_2xx"]
    result["per_cpu_s"] = ok / cpu if cpu > 0 else 0.0
    result["server_core_use_pct"] = 100.0 * cpu / result["seconds"]
    result["core0_others_pct"] = max(0.0, 100.0 * (core_busy_seconds(0) - core0_before - cpu) / result["seconds"])
    result["core1_others_pct"] = max(0.0, 100.0 * (core_busy_seconds(1) - core1_before - wrk_cpu) / result["seconds"])
    return result


def wrk(url: str, connections: int, duration: float, body: str) -> dict:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s",
           "-s", str(HERE / "post.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WRK_BODY": body}, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    raw = json.loads(line[len("WRK_JSON "):])
    seconds = raw["duration_us"] / 1e6
    return {
        "rps_2xx": (raw["requests"] - raw["status_errors"]) / seconds,
        "non_2xx": raw["status_errors"],
        "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "seconds": seconds,
    }


def summarise(runs: list[dict]) -> dict:
    keys = ("rps_2xx", "per_cpu_s", "p50_ms", "p99_ms", "non_2xx", "socket_errors", "server_core_use_pct",
            "core0_others_pct", "core1_others_pct")
    summary = {k: statistics.median(r[k] for r in runs) for k in keys}
    summary["rps_2xx_best"] = max(r["rps_2xx"] for r in runs)
    summary["runs"] = runs
    return summary


def table(results: dict, connections: list[int]) -> str:
    """Medians over rounds; "best" is the best round (interference only ever slows a server down)."""
    runtime = results.get("runtime", {})
    lines = [
        (
            "| server | conns | req/s 2xx: median (best) | 2xx per server CPU-s | p50 / p99 ms | non-2xx | "
            "noise: others on core 0 / 1 | runtime ÷ this: median, best, per CPU-s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_conn in results.items():
        for c in connections:
            r = by_conn.get(str(c))
            if r is None:
                continue
            base = runtime.get(str(c))
            ratios = "-"
            if base and name != "runtime" and r["rps_2xx"] and r["per_cpu_s"]:
                ratios = (f"{base['rps_2xx'] / r['rps_2xx']:.2f} / {base['rps_2xx_best'] / r['rps_2xx_best']:.2f} / "
                          f"{base['per_cpu_s'] / r['per_cpu_s']:.2f}")
            lines.append(
                f"| {name} | {c} | {r['rps_2xx']:,.0f} ({r['rps_2xx_best']:,.0f}) | {r['per_cpu_s']:,.0f} | "
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['non_2xx']:,.0f} | "
                f"{r['core0_others_pct']:.0f}% / {r['core1_others_pct']:.0f}% | {ratios} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--connections", default="16,64")
    ap.add_argument("--servers", default="runtime,raw,cog,truss")
    ap.add_argument("--cache", type=Path, default=Path("/var/tmp/mlserve-bench"))
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--app-dir", type=Path, default=ROOT / "examples" / "hello")
    ap.add_argument("--quiet-pct", type=float, default=10.0,
                    help="before each run, wait until other processes use less than this much of cores 0+1")
    ap.add_argument("--quiet-wait", type=float, default=20.0, help="longest wait for quiet, seconds (0: do not wait)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    connections = [int(c) for c in args.connections.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)

    servers: list[Server] = []
    failures: dict[str, str] = {}
    try:
        for name in args.servers.split(","):
            server = PEERS[name](args.cache, args.app_dir.resolve())
            try:
                server.start(free_port())
                wait_http(server.health_url, server.start_timeout, server.health_any_status)
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
                failures[name] = f"{type(exc).__name__}: {exc}"
                print(f"[{name}] cannot run: {failures[name]}", file=sys.stderr)
                server.stop()
                continue
            servers.append(server)
            print(f"[{name}] up on {server.predict_url}", file=sys.stderr)

        runs: dict[str, dict[str, list]] = {s.name: {str(c): [] for c in connections} for s in servers}
        for s in servers:  # warm every server once before measuring any
            wrk(s.predict_url, connections[0], args.warmup, s.body(PAYLOAD))
        for round_no in range(args.rounds):
            for s in servers:
                for c in connections:
                    waited = wait_for_quiet(servers, args.quiet_pct, args.quiet_wait) if args.quiet_wait > 0 else 0.0
                    r = measure(s, c, args.duration)
                    r["waited_for_quiet_s"] = waited
                    runs[s.name][str(c)].append(r)
                    print(f"round {round_no + 1} {s.name:8} c={c:3} {r['rps_2xx']:9,.0f} req/s  p50 {r['p50_ms']:.2f} "
                          f"p99 {r['p99_ms']:.2f} ms  non-2xx {r['non_2xx']}  2xx per server CPU-s {r['per_cpu_s']:,.0f}  "
                          f"server uses {r['server_core_use_pct']:.0f}% of core 0, others {r['core0_others_pct']:.0f}% / "
                          f"core 1 {r['core1_others_pct']:.0f}%", file=sys.stderr)
    finally:
        for s in servers:
            s.stop()

    results = {name: {c: summarise(rs) for c, rs in by_c.items() if rs} for name, by_c in runs.items()}
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "method": {"rounds": args.rounds, "duration_s": args.duration, "connections": connections,
                   "payload": PAYLOAD, "server_core": 0, "wrk_core": 1, "statistic": "median over rounds, and best round",
                   "quiet_pct": args.quiet_pct, "quiet_wait_s": args.quiet_wait},
        "versions": {s.name: s.version() for s in servers},
        "results": results,
        "failures": failures,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    md = table(results, connections)
    if failures:
        md += "\n\n" + "\n".join(f"- {n} did not run: {why}" for n, why in failures.items())
    (args.out_dir / "results.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
