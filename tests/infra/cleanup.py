"""Remove what a killed test run left behind: ``python -m tests.infra.cleanup``.

Fixtures tear down by PID, but a run killed with SIGKILL cannot. Everything they create is
named after the pytest process (``/tmp/mlsv-<kind>-<pid>-*``, namespaces ``mlsv-<pid>-*``,
bridges ``mlsvbr<pid><letter>``, the systemd host's cgroups ``mlsv-<pid>-sd``), so leftovers
are exactly those whose owner PID is dead.
Their servers are found as processes whose command line names the dead run's directory, or
that live in its namespaces, and are stopped by PID. Live runs are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.infra.procs import WORKDIR_ROOT, kill_pids, unmount_under
from tests.infra.systemd import STALE_CGROUP, cgroup_parents, remove_cgroups

WORKDIR = re.compile(r"^mlsv-[a-z]+-(\d+)-")
NETNS = re.compile(r"^mlsv-(\d+)-")
BRIDGE = re.compile(r"^mlsvbr(\d+)[a-z]$")


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def pids_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (a dead run's unique directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text in Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def terminate(pids: list[int]) -> None:
    """SIGTERM (dockerd then stops its containers), wait a little, SIGKILL the rest."""
    kill_pids(pids, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill_pids([pid for pid in pids if alive(pid)])


def stale(names: list[str], pattern: re.Pattern) -> list[str]:
    return [n for n in names if (m := pattern.match(n)) and not alive(int(m.group(1)))]


def remove_stale() -> list[str]:
    """Stop and delete leftovers of dead runs; return what was removed."""
    removed = []
    for name in stale(sorted(os.listdir(WORKDIR_ROOT)), WORKDIR):
        path = WORKDIR_ROOT / name
        terminate(pids_mentioning(str(path)))
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    if shutil.which("ip") and os.geteuid() == 0:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for ns in stale([line.split()[0] for line in out.splitlines() if line], NETNS):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
            terminate([int(p) for p in pids.split()])
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            removed.append(f"netns {ns}")
        out = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"],
                             capture_output=True, text=True).stdout
        links = [line.split(":")[1].strip() for line in out.splitlines() if ":" in line]
        for bridge in stale(links, BRIDGE):
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
            removed.append(f"bridge {bridge}")
    for parent in cgroup_parents():           # where the fixture makes them (same cgroup here)
        for name in stale(sorted(os.listdir(parent)), STALE_CGROUP):
            remove_cgroups([parent / name])      # after its machine was stopped above
            removed.append(f"cgroup {parent / name}")
    return removed


if __name__ == "__main__":
    for item in remove_stale():
        print(f"removed stale {item}")
