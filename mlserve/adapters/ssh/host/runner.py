"""Starting, supervising and stopping a release's runtime on an SSH host (runs on the host).

Every release runs under a small supervisor (``supervise``) that survives the SSH session:

- under systemd when the host has it (a transient unit from ``systemd-run``: system units as
  root, user units when the user's manager lingers), which adds cgroup limits from the
  manifest's resources and a clean ``systemctl stop``;
- otherwise as a double-forked process in its own session (``setsid``), reparented to init.

The supervisor writes ``run.json`` (its pid and start time, then the runtime's), reads its spec
(command, environment *including secret values*) from a FIFO the deployer writes once — so
secrets live only in process memory, never on the host's disk — and starts the runtime with
``--check-port``. SIGUSR1 is forwarded (the runtime takes the public port) and marks the
release active; SIGTERM is forwarded and the supervisor exits once the runtime has drained. A
runtime that exits while active is restarted on the public port with backoff; one that exits
before activation (failed load) ends the supervisor with its exit code.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .store import HostError, read_json, write_json

FIFO_WAIT = 15.0


def systemd_booted() -> bool:
    """The host runs systemd as its init (sd_booted's test)."""
    return os.path.isdir("/run/systemd/system")


def systemd_mode() -> str | None:
    """"system", "user" or None (no usable systemd: fall back to a setsid process)."""
    if not systemd_booted() or not shutil.which("systemd-run"):
        return None
    if os.geteuid() == 0:
        return "system"
    user = os.environ.get("USER") or ""
    lingers = user and os.path.exists(f"/var/lib/systemd/linger/{user}")
    if lingers and os.environ.get("XDG_RUNTIME_DIR"):
        return "user"       # without linger the user's manager (and the model) dies at logout
    return None


def unit_name(deployment: str, hostkey: str, release: str) -> str:
    tag = secrets.token_hex(3)
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{deployment}-{release}")
    return f"mlserve-{safe}-{tag}.service"


def systemd_argv(mode: str, unit: str, resources: dict, argv: list[str]) -> list[str]:
    """The ``systemd-run`` command that starts ``argv`` as a transient service."""
    cmd = ["systemd-run", "--quiet", "--collect", f"--unit={unit}",
           "--property=KillMode=mixed", "--property=TimeoutStopSec=60"]
    if mode == "user":
        cmd.insert(1, "--user")
    memory = resources.get("memory")
    if memory:
        cmd.append(f"--property=MemoryMax={_systemd_size(memory)}")
    cpu = resources.get("cpu")
    if cpu:
        cmd.append(f"--property=CPUQuota={int(float(cpu) * 100)}%")
    return [*cmd, "--", *argv]


def _systemd_size(memory: str) -> str:
    """Kubernetes quantities (512Mi, 2Gi, 1G) as systemd sizes (512M, 2G, 1G)."""
    for suffix, unit in (("Ki", "K"), ("Mi", "M"), ("Gi", "G"), ("Ti", "T")):
        if memory.endswith(suffix):
            return memory[:-2] + unit
    return memory


def launch(release_dir: Path, helper: str, base: str, spec: dict, resources: dict) -> dict:
    """Start a supervisor for ``release_dir`` and hand it ``spec``; return run.json's content."""
    fifo = release_dir / "spec.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    nonce = secrets.token_hex(8)
    argv = [sys.executable, "-I", helper, base, "supervise", str(release_dir), nonce]
    mode = systemd_mode()
    unit = None
    try:
        if mode:
            unit = unit_name(spec["deployment"], spec["hostkey"], spec["release"])
            done = subprocess.run(systemd_argv(mode, unit, resources, argv), capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL)
            if done.returncode:
                raise HostError(f"systemd-run failed: {done.stderr.strip()}")
        else:
            _spawn_detached(release_dir, nonce)
        _hand_over(fifo, release_dir / "run.json", nonce, spec)
    finally:
        fifo.unlink(missing_ok=True)
    run = read_json(release_dir / "run.json")
    run.update(mode=mode or "setsid", unit=unit)
    write_json(release_dir / "run.json", run)
    return run


def _spawn_detached(release_dir: Path, nonce: str) -> None:
    """Double fork: the supervisor gets its own session and init as parent at once, so it is
    no descendant of sshd and survives the SSH session.

    The grandchild runs ``supervise`` itself rather than exec'ing a new interpreter: the helper
    has everything the supervisor needs loaded already, and a fresh interpreter would cost each
    deploy about 60 ms of the host's CPU. Forking is safe here because the helper runs no other
    thread when it launches (only ``logs --follow`` starts one, and that request never ends),
    holds no lock (``prepare`` releases the store lock first) and keeps no file object open
    beyond stdin, stdout and stderr; systemd mode still execs, as ``systemd-run`` must."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setsid()
            if os.fork() == 0:
                code = 1                        # an exception in the supervisor: exit 1
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, 1024)          # the SSH pipes and the store lock stay behind
                code = supervise(str(release_dir), nonce)
        finally:
            os._exit(code)
    os.waitpid(pid, 0)


def _hand_over(fifo: Path, run_json: Path, nonce: str, spec: dict) -> None:
    deadline = time.monotonic() + FIFO_WAIT
    data = json.dumps(spec).encode()
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:                         # ENXIO: the supervisor has not opened it yet
            if time.monotonic() > deadline:
                raise HostError("the supervisor did not start (see the log)") from None
            time.sleep(0.01)
    try:
        os.set_blocking(fd, True)
        os.write(fd, data)
    finally:
        os.close(fd)
    while read_json(run_json).get("nonce") != nonce or not read_json(run_json).get("runtime"):
        if time.monotonic() > deadline:
            raise HostError("the supervisor did not start the runtime (see the log)")
        time.sleep(0.01)


# -- the supervisor process ------------------------------------------------------------------

def _die_with_parent() -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: not Linux, or no libc
        pass


class Supervisor:
    def __init__(self, release_dir: Path, nonce: str) -> None:
        from mlserve.adapters.procs import ProcessRef  # shipped in the helper
        self.ref = ProcessRef
        self.dir, self.nonce = release_dir, nonce
        self.active = self.stopping = False
        self.child: subprocess.Popen | None = None
        self.log = None

    def _event(self, text: str) -> None:
        self.log.write(f"--- mlserve: {text} at {time.ctime()} ---\n".encode())
        self.log.flush()

    def _record(self, fresh: bool = False, **fields) -> None:
        me = self.ref.of(os.getpid())
        run = {"nonce": self.nonce, "supervisor": [me.pid, me.start], **fields}
        old = {} if fresh else read_json(self.dir / "run.json")   # keeps mode/unit from launch
        write_json(self.dir / "run.json", {**old, **run})

    def _signal(self, signum, frame) -> None:
        if signum == signal.SIGUSR1:
            self.active = True
        else:
            self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGUSR1 if signum == signal.SIGUSR1 else signal.SIGTERM)

    def run(self) -> int:
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._record(fresh=True)
        with open(self.dir / "spec.fifo", "rb") as fh:
            spec = json.loads(fh.read())
        self.log = open(spec["log"], "ab", buffering=0)
        backoff = 1.0
        while True:
            cmd = spec["cmd"] + ([] if self.active else ["--check-port", str(spec["check_port"])])
            self._event(f"starting {spec['release']}" + ("" if self.active else
                                                          f" (check port {spec['check_port']})"))
            self.child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                          stderr=self.log, env=spec["env"], cwd=spec["cwd"],
                                          preexec_fn=_die_with_parent)
            child = self.ref.of(self.child.pid)
            self._record(runtime=[child.pid, child.start])
            if self.stopping:
                self.child.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = self.child.wait()
            if self.stopping:
                self._event(f"stopped (runtime exit {code})")
                return 0
            if not self.active:
                self._event(f"runtime exited with {code} before taking traffic")
                return code or 1
            if time.monotonic() - started > 60:
                backoff = 1.0
            delay, backoff = backoff, min(backoff * 2, 30.0)
            self._event(f"runtime exited with {code} while serving; restarting in {delay:g}s")
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.1)
            if self.stopping:
                return 0


def supervise(release_dir: str, nonce: str) -> int:
    return Supervisor(Path(release_dir), nonce).run()
