"""The supervisor of one release's runtime, shared by the local target and the SSH host helper.

A supervisor is a small process in its own session that outlives the command that started it:

- it writes ``run.json`` in the release directory (its pid and start time, then the runtime's);
- it reads its spec (command, environment *including secret values*, log path, check port) once
  from the FIFO ``spec.fifo`` the deployer writes, so secrets live only in process memory, never
  on disk;
- it starts the runtime with ``--check-port``; SIGUSR1 is forwarded (the runtime takes the public
  port) and marks the release active; SIGTERM is forwarded and the supervisor exits once the
  runtime has drained;
- a runtime that exits while active is restarted on the public port with backoff; one that exits
  before activation (a failed load) ends the supervisor with its exit code.

The runtime dies with its supervisor (``PR_SET_PDEATHSIG``), so stopping or killing the
supervisor never leaves a runtime behind. The log file is private to the user (0600).

Local: ``python -m mlserve.adapters.supervisor RELEASE_DIR NONCE`` (started by ``start``). The SSH
helper forks into ``supervise`` instead (see ``mlserve_host.runner``); both hand the spec over with
``hand_over``. Stdlib only: the SSH host helper ships this module.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlserve.adapters.procs import (ENV_PASSTHROUGH, ProcessRef, die_with_parent, open_private_log,
                                    read_json, write_json)

FIFO_WAIT = 15.0
SPEC_FIFO = "spec.fifo"
RUN_JSON = "run.json"


class SupervisorError(Exception):
    """The supervisor did not start, or did not start the runtime."""


def make_fifo(release_dir: Path) -> Path:
    fifo = release_dir / SPEC_FIFO
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    return fifo


def start(release_dir: Path, spec: dict) -> dict:
    """Start a supervisor for ``release_dir`` as a new interpreter in its own session, hand it
    ``spec`` and return ``run.json`` once the runtime runs (the local target's launch)."""
    fifo = make_fifo(release_dir)
    nonce = secrets.token_hex(8)
    try:
        # Only a few of the deployer's variables: its credentials must not live on in a
        # long-lived process (the runtime gets its environment from the spec).
        env = {k: os.environ[k] for k in ENV_PASSTHROUGH if k in os.environ}
        subprocess.Popen([sys.executable, "-m", "mlserve.adapters.supervisor", str(release_dir),
                          nonce], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, env=env)
        hand_over(fifo, release_dir / RUN_JSON, nonce, spec)
    finally:
        fifo.unlink(missing_ok=True)
    return read_json(release_dir / RUN_JSON)


def hand_over(fifo: Path, run_json: Path, nonce: str, spec: dict) -> None:
    """Write ``spec`` into the FIFO once the supervisor reads it; wait until it runs the runtime."""
    deadline = time.monotonic() + FIFO_WAIT
    data = json.dumps(spec).encode()
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:                         # ENXIO: the supervisor has not opened it yet
            if time.monotonic() > deadline:
                raise SupervisorError("the supervisor did not start (see the log)") from None
            time.sleep(0.01)
    try:
        os.set_blocking(fd, True)
        os.write(fd, data)
    finally:
        os.close(fd)
    while read_json(run_json).get("nonce") != nonce or not read_json(run_json).get("runtime"):
        if time.monotonic() > deadline:
            raise SupervisorError("the supervisor did not start the runtime (see the log)")
        time.sleep(0.01)


class Supervisor:
    def __init__(self, release_dir: Path, nonce: str) -> None:
        self.dir, self.nonce = release_dir, nonce
        self.active = self.stopping = False
        self.child: subprocess.Popen | None = None
        self.log = None

    def _event(self, text: str) -> None:
        self.log.write(f"--- mlserve: {text} at {time.ctime()} ---\n".encode())
        self.log.flush()

    def _record(self, fresh: bool = False, **fields) -> None:
        me = ProcessRef.of(os.getpid())
        run = {"nonce": self.nonce, "supervisor": [me.pid, me.start], **fields}
        old = {} if fresh else read_json(self.dir / RUN_JSON)   # keeps mode/unit from launch
        write_json(self.dir / RUN_JSON, {**old, **run})

    def _signal(self, signum, frame) -> None:
        if signum == signal.SIGUSR1:
            self.active = True
        else:
            self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGUSR1 if signum == signal.SIGUSR1 else signal.SIGTERM)

    def _read_spec(self) -> dict:
        # Until the spec is read, signals keep their default action (SIGTERM ends the process
        # at once, even while blocked in open()), and an alarm ends a supervisor whose deployer
        # died before writing: nothing of it is left waiting for ever.
        signal.alarm(int(FIFO_WAIT) + 5)
        with open(self.dir / SPEC_FIFO, "rb") as fh:
            spec = json.loads(fh.read())
        signal.alarm(0)
        return spec

    def run(self) -> int:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._record(fresh=True)
        spec = self._read_spec()
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        self.log = open_private_log(Path(spec["log"]))
        backoff = 1.0
        while True:
            cmd = spec["cmd"] + ([] if self.active else ["--check-port", str(spec["check_port"])])
            self._event(f"starting {spec['release']}" + ("" if self.active else
                                                          f" (check port {spec['check_port']})"))
            self.child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                          stderr=self.log, env=spec["env"], cwd=spec["cwd"],
                                          preexec_fn=die_with_parent)
            child = ProcessRef.of(self.child.pid)
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


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1], sys.argv[2]))
