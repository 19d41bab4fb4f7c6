"""Starting, supervising and stopping a release's runtime on an SSH host (runs on the host).

Every release runs under the supervisor the local target uses too (``mlserve.adapters.supervisor``:
it reads its spec from a FIFO, so secrets never touch the disk, and restarts a crashed active
runtime with backoff), started so that it survives the SSH session:

- under systemd when the host has it (a transient unit from ``systemd-run``: system units as
  root, user units when the user's manager lingers), which adds cgroup limits from the
  manifest's resources and a clean ``systemctl stop``;
- otherwise as a double-forked process in its own session (``setsid``), reparented to init.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from mlserve.adapters.procs import read_json, write_json
from mlserve.adapters.supervisor import SupervisorError, hand_over, make_fifo, supervise

from .store import HostError


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
    fifo = make_fifo(release_dir)
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
        hand_over(fifo, release_dir / "run.json", nonce, spec)
    except SupervisorError as exc:
        raise HostError(str(exc)) from None
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
    beyond stdin, stdout and stderr; systemd mode still execs, as ``systemd-run`` must.

    The forked supervisor keeps the helper's argv, which names no release: ``reconcile`` finds
    it by the pid and start time it records in ``run.json`` and as its runtime's parent."""
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
