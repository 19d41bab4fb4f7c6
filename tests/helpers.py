"""Small helpers shared by the foundation tests (no fakes: they run the real CLI and processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
MLSERVE = [sys.executable, "-m", "mlserve.cli"]


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> Result:
    """Run the real CLI entry point in-process, as the console script does."""
    from mlserve.cli.main import run
    with pytest.raises(SystemExit) as exc:
        run(list(args))
    captured = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 0
    return Result(code, captured.out, captured.err)


def run_process(*args: str, env: dict | None = None, cwd: Path | None = None,
                timeout: float = 180) -> Result:
    """Run ``python -m mlserve.cli ARGS`` in a child process (what users and CI run)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([*MLSERVE, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def kill_at_point(argv: list[str], reached, name: str, timeout: float, also=lambda: None) -> None:
    """Start ``argv``, SIGKILL it as soon as ``reached()`` is true (then run ``also``, e.g. to
    kill its helpers too), and fail if it finished first or never got there."""
    import signal
    import time
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not reached() and time.monotonic() < deadline:
            time.sleep(0.002)                   # kill as soon as the point is reached
        assert proc.poll() is None, f"the deploy finished before the kill point {name!r}"
        assert time.monotonic() < deadline, f"the deploy never reached the kill point {name!r}"
        proc.send_signal(signal.SIGKILL)
        also()
    finally:
        proc.kill()
        proc.wait()


class Poller:
    """Calls ``call()`` every ``interval`` seconds in a thread while the ``with`` block runs:
    ``answers`` holds what it returned, ``failures`` every exception (repr) — the zero-downtime
    tests' witness. ``len(answers) + len(failures)`` is the number of calls made."""

    def __init__(self, call, interval: float = 0.01) -> None:
        import threading
        self.call, self.interval = call, interval
        self.answers: list = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self.call())
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(exc))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


#: The model of the cloud endpoint tests (sagemaker, azureml): doubles ``x``, says its
#: ``VERSION`` (which release answered) and prints each prediction (what ``logs`` must show).
ENDPOINT_MODEL = '''
VERSION = "{version}"


class Model:
    def load(self):
        {load}

    def predict(self, payload):
        print("predicting", payload, flush=True)
        return {{"y": [2 * v for v in payload["x"]], "version": VERSION}}
'''
#: ``load`` of a release whose model cannot load (its server never gets ready).
MUST_NOT_LOAD = 'raise RuntimeError("weights missing: cannot load")'


def write_model(project: Path, version: str, load: str = "pass") -> None:
    """``project/model.py``: ``ENDPOINT_MODEL`` at ``version``."""
    (project / "model.py").write_text(ENDPOINT_MODEL.format(version=version, load=load))


def read_until(proc: subprocess.Popen, word: str, timeout: float) -> str:
    """What ``proc`` (stdout a text pipe) printed until a line holds ``word``, or ``timeout``
    seconds passed (``logs --follow`` tests)."""
    import selectors
    import time
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    text, deadline = "", time.monotonic() + timeout
    while word not in text and time.monotonic() < deadline and proc.poll() is None:
        if selector.select(timeout=0.5):
            text += proc.stdout.readline()
    return text


def delete_targets(manifest: Path, state: Path | None, *targets: str) -> None:
    """A test's clean-up: delete each target's deployment, whatever is left of it (mlserve's
    own errors, such as nothing to delete, are not the test's failure)."""
    from mlserve import service
    from mlserve.errors import MlserveError
    for target in targets:
        try:
            service.delete(manifest, target, state)
        except MlserveError:
            pass


def migrate_json(capsys: pytest.CaptureFixture, manifest: Path, state: Path, source: str,
                 dest: str) -> dict:
    """``mlserve migrate --from SOURCE --to DEST --json --yes``, in-process: it must succeed."""
    result = run_cli(capsys, "migrate", "--from", source, "--to", dest, "-f", str(manifest),
                     "--state", str(state), "--json", "--yes")
    assert result.code == 0, result.err
    return json.loads(result.out)


def assert_secret_hidden(capsys: pytest.CaptureFixture, manifest: Path, state: Path, secret: str,
                         shown: list[str], *commands: tuple[str, ...]) -> None:
    """Each command (``mlserve CMD... -f MANIFEST --state STATE``) succeeds, and ``secret`` is in
    none of their output, in none of ``shown`` (earlier output) and in no file under ``state``."""
    shown = list(shown)
    for command in commands:
        result = run_cli(capsys, *command, "-f", str(manifest), "--state", str(state))
        assert result.code == 0, result.err
        shown += [result.out, result.err]
    assert not any(secret in text for text in shown)
    for path in state.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
