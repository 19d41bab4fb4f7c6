"""Benchmark the ssh provider: what a deploy sends and how long it takes, 1 host vs a fleet.

    .venv/bin/python benchmarks/ssh/run.py [--rounds 5] [--weights-mb 8] [--fleet 4]
        [--fleet-users root,mlsvtest] [--host-cpus CPUS] [--out-dir benchmarks/ssh/results]

Run as root (the fleet lives in network namespaces). Hosts are real OpenSSH servers started with
the test suite's fixtures (tests/infra): one on loopback, and a fleet of ``--fleet`` hosts in
namespaces. The project is the test suite's ``echo`` model plus ``weights.bin`` (random bytes,
``--weights-mb``), so a first deploy has real content to send.

Single host, each round on a fresh ``base_dir`` (a cold host):
  first deploy -> no-op redeploy -> redeploy after a one-file change (model.py).
Fleet: first deploy and one-file redeploy on 1 host, then on all ``--fleet`` hosts (fresh
``base_dir`` per round; max_parallel = fleet size, max_unavailable = 1), once per login in
``--fleet-users``: root (whose ~/.bashrc here runs ``pyenv init`` on every SSH exec, and whose
``python3`` is a pyenv shim; all its hosts share /root and so one object store) and plain
accounts (Debian's skeleton rc files, /usr/bin/python3), one per host (mlsvtest, mlsvtest2, ...,
created when missing) so that each host has its own home and store, as separate machines do.

Every fleet runs twice. First with the hosts sharing all of this machine's cores, as namespaces
do: ``machine CPU s`` then shows when a fleet run is bound by them rather than by the deploy's
own critical path. Then ("capped") with every host in a cgroup of its own limited to
``--host-cpus`` CPUs (default: this machine's cores / ``--fleet``, so four hosts together can
use the whole machine): every host, in the 1-host run as in the fleet, is then a machine of the
same size, which is what "a fleet of N hosts vs one host" means on real hardware. ``client CPU
s`` is mlserve's own share; the client is never capped.

Bytes are counted by the adapter itself: ``file_bytes_sent`` is file content, ``wire_bytes_sent``
everything written to the TCP sockets (SSH framing, encryption, requests). Wall time is the whole
``service.deploy`` call (journal, hashing, connect, upload, start, health and smoke checks,
switch). Figures are medians over rounds. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from mlserve import service  # noqa: E402
from tests.infra.fleet import running_fleet  # noqa: E402
from tests.infra.net import free_port  # noqa: E402
from tests.infra.sshd import TEST_USER, ensure_test_user, running_sshd  # noqa: E402
from tests.ssh_models import make, set_version  # noqa: E402


def project(work: Path, target: dict, weights_mb: int) -> Path:
    manifest = make(work, target, name="bench")
    rng = __import__("random").Random(7)
    (manifest.parent / "weights.bin").write_bytes(rng.randbytes(weights_mb << 20))
    return manifest


def machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine since boot (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def timed_deploy(manifest: Path, state: Path) -> dict:
    usage, busy = resource.getrusage(resource.RUSAGE_SELF), machine_busy_seconds()
    start = time.perf_counter()
    result = service.deploy(manifest, "box", state)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    client = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    statuses = {h["status"] for h in result.extra["hosts"]}
    return {"wall_s": wall, "client_cpu_s": client, "machine_cpu_s": machine_busy_seconds() - busy,
            **result.extra["transfer"], "statuses": sorted(statuses)}


def single_host(rounds: int, weights_mb: int, work: Path) -> dict:
    runs: dict[str, list[dict]] = {"first": [], "noop": [], "one_file": []}
    with running_sshd(user=getpass.getuser()) as host:
        for n in range(rounds):
            round_dir = work / f"single-{n}"
            target = {"hosts": [f"{host.user}@{host.host}:{host.port}"],
                      "identity_file": str(host.key_path), "known_hosts": str(host.known_hosts),
                      "base_dir": str(round_dir / "remote"), "port": free_port(),
                      "bind": "127.0.0.1"}
            manifest = project(round_dir, target, weights_mb)
            state = round_dir / "state"
            runs["first"].append(timed_deploy(manifest, state))
            runs["noop"].append(timed_deploy(manifest, state))
            set_version(manifest, f"v{n + 2}")
            runs["one_file"].append(timed_deploy(manifest, state))
            runs["one_file"][-1]["changed_file_bytes"] = (manifest.parent / "model.py").stat().st_size
            service.delete(manifest, "box", state)
    return runs


CGROUP_CPU_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def cpu_caps(pids: list[int], cpus: float | None) -> Iterator[None]:
    """Give each pid (a host's sshd: its sessions, helper, supervisor and runtimes inherit the
    group) a cgroup of its own capped at ``cpus`` CPUs, so every host is a machine of the same
    size. ``None``: no caps (the hosts share all cores). cgroup v1 ``cpu`` or cgroup2
    ``cpu.max``."""
    if cpus is None:
        yield
        return
    period = 100_000
    quota = max(1000, int(cpus * period))
    v1 = (CGROUP_CPU_V1 / "cpu.cfs_quota_us").exists()
    groups = []
    try:
        for n, pid in enumerate(pids):
            group = (CGROUP_CPU_V1 if v1 else CGROUP_V2) / f"mlsv-bench-{os.getpid()}-host{n}"
            group.mkdir()
            groups.append(group)
            if v1:
                (group / "cpu.cfs_period_us").write_text(str(period))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (group / "cpu.max").write_text(f"{quota} {period}")
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for group in groups:
            for line in (group / "cgroup.procs").read_text().split():    # back to the root
                with contextlib.suppress(OSError):
                    (group.parent / "cgroup.procs").write_text(line)
            with contextlib.suppress(OSError):
                group.rmdir()


def fleet_runs(rounds: int, weights_mb: int, size: int, work: Path, user: str,
               host_cpus: float | None = None) -> dict:
    runs: dict[str, list[dict]] = {}
    # a plain account per host (mlsvtest, mlsvtest2, ...): each has its own home, so each host
    # has its own store under ~ as separate machines would; root's hosts share /root
    logins = ([user] * size if user == "root"
              else [user] + [f"{user}{n}" for n in range(2, size + 1)])
    for login in set(logins) - {"root"}:
        ensure_test_user(login)
    tag = ("" if user == "root" else f"_{user}") + ("" if host_cpus is None else "_capped")
    with running_fleet(size, user=logins) as fleet, \
            cpu_caps([h.pid for h in fleet.hosts], host_cpus):
        for count in (1, size):
            first, again = [], []
            for n in range(rounds):
                round_dir = work / f"fleet{count}{tag}-{n}"
                # the namespaces share this machine's disk: a fresh base_dir per round keeps
                # every first deploy cold (the login's home for a non-root user)
                base = (str(round_dir / "remote") if user == "root"
                        else f"~/.mlsv-bench-{count}{tag}-{n}")
                target = {"hosts": [f"{h.user}@{h.host}" for h in fleet.hosts[:count]],
                          "identity_file": str(fleet.key_path),
                          "known_hosts": str(fleet.known_hosts),
                          "base_dir": base, "port": free_port(),
                          "max_parallel": size, "max_unavailable": 1}
                manifest = project(round_dir, target, weights_mb)
                state = round_dir / "state"
                first.append(timed_deploy(manifest, state))
                set_version(manifest, f"v{n + 2}")
                again.append(timed_deploy(manifest, state))
                service.delete(manifest, "box", state)
            runs[f"{count}_hosts{tag}_first"] = first
            runs[f"{count}_hosts{tag}_one_file"] = again
    return runs


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


KEYS = ("wall_s", "client_cpu_s", "machine_cpu_s", "files_sent", "file_bytes_sent",
        "wire_bytes_sent", "wire_bytes_received")


def report(single: dict, fleet: dict, args) -> tuple[dict, str]:
    rows = []
    summary = {}
    for name, runs in [*single.items(), *fleet.items()]:
        m = summary[name] = {k: median(runs, k) for k in KEYS}
        rows.append(f"| {name} | {m['wall_s']:.2f} | {m['client_cpu_s']:.2f} | "
                    f"{m['machine_cpu_s']:.2f} | {m['files_sent']:.0f} | "
                    f"{m['file_bytes_sent']:,.0f} | {m['wire_bytes_sent']:,.0f} |")
    changed = median(single["one_file"], "changed_file_bytes")
    goals = [
        f"- one-file redeploy: {summary['one_file']['file_bytes_sent']:,.0f} file bytes for a "
        f"{changed:,.0f}-byte file; {summary['one_file']['wire_bytes_sent']:,.0f} bytes on the wire",
        f"- no-op redeploy: {summary['noop']['file_bytes_sent']:,.0f} file bytes, "
        f"{summary['noop']['wire_bytes_sent']:,.0f} bytes on the wire (requests and SSH)",
    ]
    users = ["", *(f"_{u}" for u in args.fleet_users if u != "root")]
    for tag in [*users, *(f"{u}_capped" for u in users)]:
        ratios = []
        for kind in ("first", "one_file"):
            a = summary.get(f"1_hosts{tag}_{kind}", {}).get("wall_s")
            b = summary.get(f"{args.fleet}_hosts{tag}_{kind}", {}).get("wall_s")
            if a and b:
                ratios.append(f"{kind.replace('_', '-')} {b / a:.2f}x")
        if ratios:
            who = tag.removesuffix("_capped")[1:] or "root"
            cap = (f", every host capped at {args.host_cpus:g} CPU" if tag.endswith("_capped")
                   else ", hosts sharing all cores")
            goals.append(f"- {args.fleet} hosts vs 1 (login {who}{cap}): {', '.join(ratios)} "
                         "(goal <= 1.5x)")
    md = "\n".join([
        f"# ssh provider benchmark ({time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()})", "",
        f"{args.rounds} rounds, medians; project = echo model + {args.weights_mb} MiB weights.bin; "
        "hosts are real sshd on loopback / in network namespaces on this machine.", "",
        "| run | wall s | client CPU s | machine CPU s | files sent | file bytes sent | "
        "wire bytes sent |", "|---|---:|---:|---:|---:|---:|---:|", *rows, "", *goals, ""])
    return {"summary": summary, "runs": {**single, **fleet}, "args": vars(args)}, md


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--weights-mb", type=int, default=8)
    parser.add_argument("--fleet", type=int, default=4)
    parser.add_argument("--fleet-users", type=lambda t: t.split(","), default=["root", TEST_USER],
                        help="logins to measure the fleet with (comma-separated)")
    parser.add_argument("--host-cpus", type=float, default=None,
                        help="CPU cap of every fleet host in the capped runs (default: this "
                             "machine's cores divided by --fleet); 0 skips the capped runs")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.host_cpus is None:
        args.host_cpus = os.cpu_count() / args.fleet
    work = Path(tempfile.mkdtemp(prefix=f"mlsv-bench-{os.getpid()}-"))
    work.chmod(0o755)
    try:
        single = single_host(args.rounds, args.weights_mb, work)
        fleet = {}
        for user in args.fleet_users if os.geteuid() == 0 else []:
            fleet.update(fleet_runs(args.rounds, args.weights_mb, args.fleet, work, user))
            if args.host_cpus:
                fleet.update(fleet_runs(args.rounds, args.weights_mb, args.fleet, work, user,
                                        args.host_cpus))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data, md = report(single, fleet, args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (args.out_dir / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
