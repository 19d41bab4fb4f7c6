"""The local target (embedded default): releases as directories and background processes here.

Layout under the state directory::

    local/<target>/releases/<release-id>/app/      the bundle's files (content-addressed, reused)
    local/<target>/releases/<release-id>/runtime.log
    venvs/<requirements-hash>/                     one venv per distinct requirement set

Zero-downtime switch: the new release's runtime listens first on a private check port, where
health and smoke are checked; its public socket is bound with SO_REUSEPORT but not listening.
Only when both pass is it sent SIGUSR1 (it starts accepting on the public port beside the old
release), then the old one is sent SIGTERM and drains. On any failure the new process is stopped
and the old one was never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from ..bundle import Bundle, collect, state_ignores
from ..checks import http_json, predict_call, run_smoke, wait_healthy
from ..errors import DeployError, InvalidInput
from ..state import Release
from .base import DELETED, FAILED, PENDING, READY, Context, Outcome, Provider, Status
from .procs import LOG_TAIL, ProcessRef, free_port, log_tail, port_taken, runtime_env, stop_process
from .venvs import python_for


class LocalProvider(Provider):
    name = "local"
    unsupported = {}

    # -- packaging -------------------------------------------------------------------------
    def package(self, ctx: Context) -> Bundle:
        return collect(ctx.project.root, extra_ignores=state_ignores(ctx.project.root, ctx.state.dir))

    # -- deploy ----------------------------------------------------------------------------
    def deploy(self, ctx: Context, bundle: Bundle, seq: int) -> Outcome:
        current = ctx.state.current(ctx.target_name)
        url = self._url(ctx)
        if current and current.release_id == bundle.release_id and self._serving(ctx, current):
            ctx.reporter.step(f"{bundle.release_id} is already serving at {url}: nothing to do")
            return Outcome(url=url, extra=current.extra, changed=False)
        release_dir = ctx.work_dir / "releases" / bundle.release_id
        app_dir = release_dir / "app"
        if not app_dir.is_dir():
            tmp = release_dir / f"app.tmp-{os.getpid()}"
            bundle.copy_to(tmp)
            tmp.rename(app_dir)
        snapshot = ctx.manifest.model_dump(mode="json")
        return self._launch(ctx, release_dir, snapshot, bundle.release_id, seq, current)

    def rollback(self, ctx: Context, release: Release, seq: int) -> Outcome:
        release_dir = Path(release.extra.get("dir", ""))
        if not (release_dir / "app").is_dir():
            raise InvalidInput(f"release {release.release_id} is no longer on disk (pruned)",
                               fix="raise targets.<name>.keep_releases, or deploy that code again")
        current = ctx.state.current(ctx.target_name)
        return self._launch(ctx, release_dir, release.manifest, release.release_id, seq, current)

    def _launch(self, ctx: Context, release_dir: Path, snapshot: dict, release_id: str, seq: int,
                current: Release | None) -> Outcome:
        target = ctx.target
        if (current is None or not self._alive(current)) and port_taken(target.host, target.port):
            raise DeployError(f"port {target.port} on {target.host} is used by another program",
                              fix=f"stop that program, or set targets.{ctx.target_name}.port to a "
                                  "free port")
        python = python_for(ctx, snapshot, release_dir / "app")
        check_port = free_port("127.0.0.1")
        log_path = release_dir / "runtime.log"
        model = snapshot["model"]
        cmd = [python, "-m", "mlserve.runtime", "--app-dir", str(release_dir / "app"),
               "--entrypoint", model["entrypoint"], "--name", snapshot["name"],
               "--host", target.host, "--port", str(target.port), "--check-port", str(check_port),
               "--concurrency", str(snapshot["scaling"]["concurrency"]), "--release", release_id]
        env = runtime_env(snapshot.get("env", {}), ctx.secrets)
        ctx.reporter.step(f"starting {release_id} beside the current release")
        with open(log_path, "ab") as log:
            log.write(f"--- mlserve: starting {release_id} at {time.ctime()} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    cwd=release_dir / "app", env=env, start_new_session=True)
        ref = ProcessRef.of(proc.pid)
        extra = {"dir": str(release_dir), "log": str(log_path), "pid": proc.pid,
                 "pid_start": ref.start, "port": target.port, "check_port": check_port}
        ctx.state.update_extra(seq, extra)
        check_url = f"http://127.0.0.1:{check_port}"
        try:
            with ctx.reporter.progress(f"waiting for {release_id} to load"):
                reason = wait_healthy(check_url, target.health_timeout,
                                      alive=lambda: proc.poll() is None, max_delay=0.1)
            if reason is None and snapshot.get("smoke"):
                ctx.reporter.step(f"running {len(snapshot['smoke'])} smoke case(s)")
                from ..manifest import SmokeCase
                cases = [SmokeCase.model_validate(c) for c in snapshot["smoke"]]
                reason = run_smoke(predict_call(check_url), cases)
            if reason is None:
                reason = self._activate(proc, log_path, target.health_timeout)
        except BaseException:
            stop_process(ref, proc)
            raise
        if reason is not None:
            stop_process(ref, proc)
            raise DeployError(f"release {release_id} failed: {reason}",
                              fix="fix the model or manifest and deploy again; the previous release "
                                  "is still serving" if current else "fix the model and deploy again",
                              details=f"last lines of {log_path}:\n{log_tail(log_path, LOG_TAIL)}")
        if current is not None and current.extra.get("pid"):
            ctx.reporter.step(f"draining the previous release {current.release_id}")
            stop_process(ProcessRef.from_extra(current.extra), None)
        self._prune(ctx, keep={release_id})
        return Outcome(url=self._url(ctx), extra=extra)

    @staticmethod
    def _activate(proc: subprocess.Popen, log_path: Path, timeout: float) -> str | None:
        """Tell the runtime to take traffic on the public port; wait until it says it does."""
        offset = log_path.stat().st_size
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + min(timeout, 30)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return "the release exited while taking over the public port"
            with open(log_path, "rb") as fh:
                fh.seek(offset)
                if b"activated on" in fh.read():
                    return None
            time.sleep(0.02)
        return "the release did not start listening on the public port"

    # -- inspection ------------------------------------------------------------------------
    def _url(self, ctx: Context) -> str:
        host = ctx.target.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{ctx.target.port}"

    @staticmethod
    def _alive(release: Release) -> bool:
        return ProcessRef.from_extra(release.extra).alive()

    def _serving(self, ctx: Context, release: Release) -> bool:
        if not self._alive(release):
            return False
        try:
            status, body = http_json("GET", self._url(ctx) + "/health", timeout=2)
        except OSError:
            return False
        return status == 200 and isinstance(body, dict) and body.get("release") == release.release_id

    def status(self, ctx: Context, release: Release | None) -> Status:
        if release is None:
            return Status(DELETED, detail="not deployed")
        url = self._url(ctx)
        if not self._alive(release):
            return Status(FAILED, url=url, release_id=release.release_id,
                          detail=f"process {release.extra.get('pid')} is not running",
                          extra={"log": release.extra.get("log")})
        try:
            code, body = http_json("GET", url + "/health", timeout=2)
        except OSError as exc:
            return Status(PENDING, url=url, release_id=release.release_id, detail=str(exc))
        state = READY if code == 200 else PENDING
        return Status(state, url=url, release_id=release.release_id,
                      detail=f"/health {code}", extra={"pid": release.extra.get("pid"),
                                                       "log": release.extra.get("log")})

    def logs(self, ctx: Context, release: Release, *, follow: bool, lines: int) -> Iterator[str]:
        from .procs import follow_file
        return follow_file(Path(release.extra["log"]), lines=lines, follow=follow)

    def predict(self, ctx: Context, release: Release, payload: Any) -> Any:
        try:
            return http_json("POST", self._url(ctx) + "/predict", {"input": payload}, timeout=300)
        except OSError as exc:
            raise DeployError(f"{self._url(ctx)} did not answer ({exc})",
                              fix=f"check `mlserve status {ctx.target_name}` and its logs") from None

    # -- removal ---------------------------------------------------------------------------
    def delete(self, ctx: Context, releases: list[Release]) -> None:
        for rel in releases:
            if rel.extra.get("pid"):
                stop_process(ProcessRef.from_extra(rel.extra), None)
        import shutil
        shutil.rmtree(ctx.work_dir, ignore_errors=True)

    def _prune(self, ctx: Context, keep: set[str]) -> None:
        """Keep the newest ``keep_releases`` release directories that once served."""
        import shutil
        served = [r.release_id for r in reversed(ctx.state.releases(ctx.target_name))
                  if r.outcome in ("serving", "superseded")]
        wanted = set(keep)
        for rid in served:
            if len(wanted) >= ctx.target.keep_releases:
                break
            wanted.add(rid)
        releases_dir = ctx.work_dir / "releases"
        for path in releases_dir.iterdir():
            if path.name not in wanted:
                shutil.rmtree(path, ignore_errors=True)
