"""Processes mlserve started and may outlive it: identified by pid *and* start time.

A pid alone can be reused by an unrelated process after a reboot or a long time; the start time
(``/proc/PID/stat`` field 22) makes the reference exact, so ``stop`` never signals a stranger.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
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


#: The manifest's ``scaling`` fields the runtime takes, with their flags. A snapshot journaled
#: before a field existed lacks it: the runtime's own default (the manifest's) applies then.
SCALING_FLAGS = {"concurrency": "--concurrency", "max_batch_size": "--max-batch-size",
                 "max_batch_wait_ms": "--max-batch-wait-ms"}


def runtime_args(*, app_dir: str, entrypoint: str, name: str, host: str, port: int,
                 scaling: dict, release: str) -> list[str]:
    """The runtime's command-line flags (after ``python -m mlserve.runtime``, or the SSH
    helper's loader): the one place they are spelt. ``--app-dir`` and ``--release`` in a
    process's argv are what ``find_runners`` recognises as a runtime of ours. ``scaling`` is
    the manifest's ``scaling`` section (as JSON data)."""
    args = ["--app-dir", app_dir, "--entrypoint", entrypoint, "--name", name, "--host", host,
            "--port", str(port)]
    for key, flag in SCALING_FLAGS.items():
        if scaling.get(key) is not None:
            args += [flag, str(int(scaling[key]))]
    return args + ["--release", release]


def build_venv(build: Path, requirements, lines: list[str], app_dir: Path, log, *,
               layer_on: list[str] | None = None, preexec=None) -> str | None:
    """The one venv builder (the local target and the SSH hosts): create a venv in ``build``
    with this interpreter and install the model's requirements into it, pip's output in
    ``log`` (a binary file). ``requirements`` is the manifest's (a file name under ``app_dir``
    is installed with ``-r``, so its relative paths resolve; else ``lines``). With ``layer_on``
    (site-packages directories) the venv gets no pip of its own and sees those directories after
    its own packages (the local target's runtime comes from mlserve's environment): pip runs
    from this interpreter with ``--python``. Returns None, or which stage failed ("venv",
    "pip")."""
    layered = layer_on is not None
    made = subprocess.run([sys.executable, "-m", "venv", *(["--without-pip"] if layered else []),
                           str(build)], stdout=log, stderr=subprocess.STDOUT)
    if made.returncode:
        return "venv"
    python = str(build / "bin" / "python")
    if layered:
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                  "['purelib'])"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        Path(purelib, "_mlserve_parent.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in layer_on) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python] if layered else [python, "-m", "pip"]
    args = ["-r", str(app_dir / requirements)] if isinstance(requirements, str) else lines
    done = subprocess.run([*pip, "install", "--disable-pip-version-check", *args], stdout=log,
                          stderr=subprocess.STDOUT, cwd=app_dir, preexec_fn=preexec)
    return "pip" if done.returncode else None


def http_url(host: str, port: int) -> str:
    """The URL a runtime listening on ``host:port`` answers at from this machine: a wildcard
    address is reached on loopback, an IPv6 address in brackets."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def url_caller(url: str, target_name: str):
    """The adapters' ``caller`` for a runtime mlserve reaches over HTTP: one prediction sent to
    ``url``; no answer is a DeployError pointing at ``status`` and the logs."""
    from ..checks import predict_call
    from ..errors import DeployError
    ask = predict_call(url, timeout=300)

    def call(payload):
        try:
            return ask(payload)
        except OSError as exc:
            raise DeployError(f"{url} did not answer ({exc})",
                              fix=f"check `mlserve status {target_name}` and its logs") from None
    return call


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


class Runner(namedtuple("Runner", "ref role release parent")):
    """A process of one deployment found in /proc: ``role`` is "supervisor" or "runtime",
    ``release`` the release id its argv names, ``parent`` its parent pid."""

    __slots__ = ()


def find_runners(releases_dir: Path) -> list[Runner]:
    """Every supervisor and runtime whose argv names a release directory under
    ``releases_dir`` (a deployment's own: state directory + target, or base + deployment + host
    on SSH). That path in the argv, with the pid's start time, is what makes a process provably
    ours: nothing else runs ``mlserve.runtime --app-dir <it>/app`` or a supervisor of <it>."""
    root = str(releases_dir)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        role, release_dir = _role(argv)
        if role is None or os.path.dirname(release_dir.rstrip("/")) != root:
            continue
        ref = ProcessRef.of(int(entry))
        if ref.start is not None:
            found.append(Runner(ref, role, os.path.basename(release_dir.rstrip("/")),
                                _parent(ref.pid)))
    return found


def _role(argv: list[str]) -> tuple[str | None, str]:
    for i, arg in enumerate(argv[:-1]):
        if arg == "--app-dir" and "--release" in argv:
            return "runtime", os.path.dirname(argv[i + 1].rstrip("/"))
        if arg in ("mlserve.adapters.supervisor", "supervise") and i < 6:
            return "supervisor", argv[i + 1]
    return None, ""


def _parent(pid: int) -> int:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return int(raw[raw.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def listening_pids(pids: list[int], port: int) -> set[int]:
    """Those of ``pids`` holding a TCP socket that listens on ``port`` (any address): the
    release that was activated, as opposed to one only bound there or loading."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    out = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                out.add(pid)
                break
    return out


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


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it when its parent dies (a supervisor's runtime, a
    deployer's pip), so a killed parent never leaves it running."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: not Linux, or no libc
        pass


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) as a directory only its owner can read (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def open_private_log(path: Path):
    """``path`` opened for appending, unbuffered, created 0600 and made 0600 if it was not
    (a runtime's log can hold what a model printed about its inputs)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab", buffering=0)


def write_json(path: Path, data: dict) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
