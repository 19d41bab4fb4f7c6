"""Start server processes for tests, wait until they are ready, stop them by PID.

Every component fixture starts its server in the foreground (no daemonising), so the PID we
hold is the server's own and teardown never has to search by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.infra.net import free_port

WORKDIR_ROOT = Path(tempfile.gettempdir())


class ComponentError(RuntimeError):
    """A component was present but did not come up; the message quotes its log."""


def new_workdir(kind: str, mode: int = 0o700) -> Path:
    """A fresh temp dir ``mlsv-<kind>-<pytest pid>-XXXX``: the PID lets ``tests.infra.cleanup``
    recognise directories (and servers) left behind by a test run that was killed."""
    workdir = Path(tempfile.mkdtemp(prefix=f"mlsv-{kind}-{os.getpid()}-", dir=WORKDIR_ROOT))
    workdir.chmod(mode)
    return workdir


def start_on_free_port(start: Callable[[int], subprocess.Popen],
                       attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """``start(port)`` with a free loopback port, and again with another when it raises
    ``ComponentError``: a free port can be taken before the server binds it. (process, port)."""
    for attempt in range(attempts):
        port = free_port()
        try:
            return start(port), port
        except ComponentError:
            if attempt == attempts - 1:
                raise
    raise ValueError("attempts must be at least 1")


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_process(
    argv: Sequence[str],
    log: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 20.0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``argv`` with output to ``log`` and wait until ``ready()`` is true.

    Raises ``ComponentError`` with the log's tail when the process exits or is not ready in
    time (the process is stopped first).
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if proc.poll() is not None:
            raise ComponentError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if ready():
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise ComponentError(f"{what} not ready after {timeout:.0f} s:\n{tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process by PID, wait, then SIGKILL; reaps it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: fields follow the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def descendants_of(pid: int) -> list[int]:
    """All PIDs below ``pid`` in the process tree, parents before children."""
    result, frontier = [], [pid]
    while frontier:
        kids = [kid for parent in frontier for kid in children_of(parent)]
        result.extend(kids)
        frontier = kids
    return result


def kill_pids(pids: Sequence[int], sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to each PID that still exists; return those signalled."""
    hit = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            hit.append(pid)
        except ProcessLookupError:
            pass
    return hit


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo)."""
    root = os.path.realpath(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(path: Path) -> list[str]:
    """Lazily unmount everything still mounted below ``path`` (e.g. dockerd's EXEC/netns/default)."""
    points = mounts_under(path)
    for point in points:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return points
