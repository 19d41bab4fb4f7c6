"""Processes mlserve started and may outlive it: identified by pid *and* start time.

A pid alone can be reused by an unrelated process after a reboot or a long time; the start time
(``/proc/PID/stat`` field 22) makes the reference exact, so ``stop`` never signals a stranger.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import deque, namedtuple
from collections.abc import Iterator
from pathlib import Path

LOG_TAIL = 40
#: What a release's runtime inherits from the deployer's environment; the rest comes from the
#: manifest's env and secrets, so a model sees the same variables on every target.
ENV_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "TZ")


def runtime_env(env: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """The runtime's environment: a few of ours, the manifest's env, the secrets, and the
    secret names the runtime redacts from its logs."""
    out = {k: os.environ[k] for k in ENV_PASSTHROUGH if k in os.environ}
    out.update(env)
    out.update(secrets)
    out["MLSERVE_SECRET_NAMES"] = ",".join(sorted(secrets))
    out["PYTHONUNBUFFERED"] = "1"
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for a release's private check port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_taken(host: str, port: int) -> bool:
    """True when something else holds ``host:port`` (binding with SO_REUSEADDR fails)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _start_time(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":        # a zombie has finished; only its parent's wait() is missing
        return None
    return fields[19]


class ProcessRef(namedtuple("ProcessRef", "pid start")):
    """``pid`` and its start time (``str | None``). A named tuple rather than a dataclass: the
    SSH host helper imports this module, and ``dataclasses`` (with ``inspect``) would cost
    every SSH exec ~7 ms of the host's CPU."""

    __slots__ = ()

    @classmethod
    def of(cls, pid: int) -> "ProcessRef":
        return cls(pid, _start_time(pid))

    @classmethod
    def from_extra(cls, extra: dict) -> "ProcessRef":
        return cls(int(extra.get("pid") or 0), extra.get("pid_start"))

    def alive(self) -> bool:
        return self.pid > 0 and self.start is not None and _start_time(self.pid) == self.start


def stop_process(ref: ProcessRef, proc: subprocess.Popen | None, grace: float = 30.0) -> None:
    """SIGTERM (the runtime drains in-flight requests), then SIGKILL after ``grace`` seconds."""
    if not ref.alive():
        if proc is not None:
            proc.poll()
        return
    try:
        os.kill(ref.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not ref.alive():
            return
        time.sleep(0.02)
    if ref.alive():
        os.kill(ref.pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(5)


def log_tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        with open(path, "rb") as fh:
            return "".join(l.decode(errors="replace") for l in deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return "(no log)"


def follow_file(path: Path, *, lines: int, follow: bool) -> Iterator[str]:
    """The last ``lines`` lines, then (with ``follow``) new lines as they are written."""
    try:
        fh = open(path, "rb")
    except OSError:
        return
    with fh:
        for line in deque(fh, maxlen=lines):
            yield line.decode(errors="replace").rstrip("\n")
        while follow:
            line = fh.readline()
            if line:
                yield line.decode(errors="replace").rstrip("\n")
            else:
                time.sleep(0.2)
