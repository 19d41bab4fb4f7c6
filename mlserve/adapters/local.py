"""The local target (embedded default): releases as directories and supervised processes here.

Layout under the state directory (directories 0700, logs 0600)::

    local/<target>/releases/<release-id>/app/      the bundle's files (content-addressed, reused)
    local/<target>/releases/<release-id>/runtime.log
    local/<target>/releases/<release-id>/run.json  the supervisor's and the runtime's pid + start time
    venvs/<requirements-hash>/                     one venv per distinct requirement set

Each release runs under the supervisor the SSH hosts use (``mlserve.adapters.supervisor``): a
process in its own session that restarts a crashed runtime of the active release with backoff,
and reads the runtime's environment (with secret values) from a FIFO, never from disk.

Zero-downtime switch: the new release's runtime listens first on a private check port, where
health and smoke are checked; its public socket is bound with SO_REUSEPORT but not listening.
Only when both pass is it sent SIGUSR1 (it starts accepting on the public port beside the old
release), then the old one is sent SIGTERM and drains. On any failure the new process is stopped
and the old one was never touched.

A command killed half-way (kill -9) leaves processes the journal may not name. Every process
of a deployment carries its release directory in its argv, so ``deploy``, ``rollback`` and
``delete`` first reconcile (``_reconcile``, under the journal lock): the release that answers
``/health`` on the public port from a process of ours is adopted into the journal as serving,
every other process of ours is stopped, and attempts left pending are marked failed. ``status``
reports what answers, read-only.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Iterator

from ..bundle import Bundle, collect, state_ignores
from ..checks import http_json, load_headline, predict_call, run_smoke, wait_healthy
from ..errors import DeployError, InvalidInput
from ..state import FAILED as JOURNAL_FAILED, PENDING as JOURNAL_PENDING, SERVING, Release
from .base import DELETED, FAILED, PENDING, READY, Context, Outcome, Provider, Status
from .procs import (LOG_TAIL, ProcessRef, Runner, find_runners, free_port, listening_pids, log_tail,
                    port_taken, private_dir, runtime_env, stop_process)
from .supervisor import SupervisorError, start
from .venvs import collect_venvs, python_for


class LocalProvider(Provider):
    name = "local"
    unsupported = {}

    # -- packaging -------------------------------------------------------------------------
    def package(self, ctx: Context) -> Bundle:
        return collect(ctx.project.root, extra_ignores=state_ignores(ctx.project.root, ctx.state.dir))

    # -- deploy ----------------------------------------------------------------------------
    def deploy(self, ctx: Context, bundle: Bundle, seq: int) -> Outcome:
        current = self._reconcile(ctx, seq)
        url = self._url(ctx)
        if current and current.release_id == bundle.release_id and self._serving(ctx, current):
            ctx.reporter.step(f"{bundle.release_id} is already serving at {url}: nothing to do")
            return Outcome(url=url, extra=current.extra, changed=False)
        release_dir = private_dir(self._releases(ctx) / bundle.release_id)
        private_dir(self._releases(ctx).parent)
        app_dir = release_dir / "app"
        if not app_dir.is_dir():
            for stale in release_dir.glob("app.tmp-*"):     # a killed deploy's copy (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = release_dir / f"app.tmp-{os.getpid()}"
            bundle.copy_to(tmp)
            tmp.rename(app_dir)
        snapshot = ctx.manifest.model_dump(mode="json")
        return self._launch(ctx, release_dir, snapshot, bundle.release_id, seq, current)

    def rollback(self, ctx: Context, release: Release, seq: int) -> Outcome:
        current = self._reconcile(ctx, seq)
        release_dir = Path(release.extra.get("dir", ""))
        if not (release_dir / "app").is_dir():
            raise InvalidInput(f"release {release.release_id} is no longer on disk (pruned)",
                               fix="raise targets.<name>.keep_releases, or deploy that code again")
        return self._launch(ctx, release_dir, release.manifest, release.release_id, seq, current)

    def _launch(self, ctx: Context, release_dir: Path, snapshot: dict, release_id: str, seq: int,
                current: Release | None) -> Outcome:
        target = ctx.target
        if (current is None or not self._alive(current)) and port_taken(target.host, target.port):
            raise DeployError(f"port {target.port} on {target.host} is used by another program",
                              fix=f"stop that program, or set targets.{ctx.target_name}.port to a "
                                  "free port")
        python = python_for(ctx, snapshot, release_dir)
        check_port = free_port("127.0.0.1")
        log_path = release_dir / "runtime.log"
        model = snapshot["model"]
        cmd = [python, "-m", "mlserve.runtime", "--app-dir", str(release_dir / "app"),
               "--entrypoint", model["entrypoint"], "--name", snapshot["name"],
               "--host", target.host, "--port", str(target.port),
               "--concurrency", str(snapshot["scaling"]["concurrency"]), "--release", release_id]
        spec = {"cmd": cmd, "env": runtime_env(snapshot.get("env", {}), ctx.secrets),
                "cwd": str(release_dir / "app"), "check_port": check_port, "log": str(log_path),
                "release": release_id}
        ctx.reporter.step(f"starting {release_id} beside the current release")
        try:
            run = start(release_dir, spec)
        except SupervisorError as exc:
            raise DeployError(f"release {release_id} did not start: {exc}",
                              details=f"last lines of {log_path}:\n{log_tail(log_path, LOG_TAIL)}") from None
        sup = ProcessRef(*run["supervisor"])
        extra = {"dir": str(release_dir), "log": str(log_path), "pid": sup.pid,
                 "pid_start": sup.start, "runtime_pid": run["runtime"][0], "port": target.port,
                 "check_port": check_port}
        ctx.state.update_extra(seq, extra)
        try:
            reason = self._check(ctx, release_id, snapshot, f"http://127.0.0.1:{check_port}", sup)
            if reason is None:
                reason = self._activate(sup, log_path, target.health_timeout)
        except BaseException:
            stop_process(sup, None, 10)
            raise
        if reason is not None:
            stop_process(sup, None, 10)
            raise self._failure(release_id, reason, log_path, current)
        if current is not None and current.extra.get("pid"):
            ctx.reporter.step(f"draining the previous release {current.release_id}")
            stop_process(ProcessRef.from_extra(current.extra), None)
        self._prune(ctx, keep={release_id})
        return Outcome(url=self._url(ctx), extra=extra)

    @staticmethod
    def _check(ctx: Context, release_id: str, snapshot: dict, check_url: str,
               sup: ProcessRef) -> str | None:
        """Health, then the smoke cases, on the private check port; the reason for a failure."""
        with ctx.reporter.progress(f"waiting for {release_id} to load") as step:
            reason = wait_healthy(check_url, ctx.target.health_timeout, alive=sup.alive,
                                  max_delay=0.1)
            if reason is not None:
                step.failed()       # the reporter must not say "done" before the deploy fails
        if reason is None and snapshot.get("smoke"):
            ctx.reporter.step(f"running {len(snapshot['smoke'])} smoke case(s)")
            from ..manifest import SmokeCase
            cases = [SmokeCase.model_validate(c) for c in snapshot["smoke"]]
            reason = run_smoke(predict_call(check_url), cases)
        return reason

    @staticmethod
    def _failure(release_id: str, reason: str, log_path: Path,
                 current: Release | None) -> DeployError:
        tail = log_tail(log_path, LOG_TAIL)
        headline = load_headline(reason, tail)
        message = (f"release {release_id} failed to load: {headline}" if headline
                   else f"release {release_id} failed: {reason}")
        return DeployError(message, fix="fix the model or manifest and deploy again; the previous "
                           "release is still serving" if current else "fix the model and deploy again",
                           details=f"last lines of {log_path}:\n{tail}")

    @staticmethod
    def _activate(sup: ProcessRef, log_path: Path, timeout: float) -> str | None:
        """Tell the runtime (through its supervisor) to take traffic on the public port; wait
        until it says it does."""
        offset = log_path.stat().st_size
        os.kill(sup.pid, signal.SIGUSR1)
        deadline = time.monotonic() + min(timeout, 30)
        while time.monotonic() < deadline:
            if not sup.alive():
                return "the release exited while taking over the public port"
            with open(log_path, "rb") as fh:
                fh.seek(offset)
                if b"activated on" in fh.read():
                    return None
            time.sleep(0.02)
        return "the release did not start listening on the public port"

    # -- what runs -------------------------------------------------------------------------
    @staticmethod
    def _releases(ctx: Context) -> Path:
        """Where this target's releases live (not created here: read paths write nothing)."""
        return ctx.state.dir / ctx.target.provider / ctx.target_name / "releases"

    def _live(self, ctx: Context) -> tuple[str | None, list[Runner], set[int]]:
        """(release id /health answers on the public port, this deployment's processes, the
        pids among them listening on the public port)."""
        runners = find_runners(self._releases(ctx))
        listening = listening_pids([r.ref.pid for r in runners if r.role == "runtime"],
                                   ctx.target.port)
        try:
            code, body = http_json("GET", self._url(ctx) + "/health", timeout=2)
        except OSError:
            return None, runners, listening
        live = body.get("release") if code == 200 and isinstance(body, dict) else None
        return live, runners, listening

    @staticmethod
    def _groups(runners: list[Runner]) -> dict[int, list[Runner]]:
        """Runners by supervisor pid (a runtime whose supervisor is gone: by its own pid)."""
        sups = {r.ref.pid for r in runners if r.role == "supervisor"}
        groups: dict[int, list[Runner]] = {}
        for r in runners:
            key = r.parent if r.role == "runtime" and r.parent in sups else r.ref.pid
            groups.setdefault(key, []).append(r)
        return groups

    def _reconcile(self, ctx: Context, seq: int | None) -> Release | None:
        """Make the journal and the processes agree (caller holds the journal lock): adopt the
        release of ours that answers on the public port, stop every other process of ours
        except the journal's current one, and fail attempts an interrupted command left
        pending. Returns the journal's current release afterwards."""
        live, runners, listening = self._live(ctx)
        current = ctx.state.current(ctx.target_name)
        groups = self._groups(runners)
        answering = {key for key, group in groups.items()
                     if live and any(r.release == live and r.ref.pid in listening for r in group)}
        keep: set[int | None] = set()
        if answering and current and current.release_id == live \
                and self._group_of(current, groups) in answering:
            keep = set(answering)
        elif answering:
            adopted = self._adopt(ctx, live, answering, seq)
            current, keep = (adopted, set(answering)) if adopted else (current, set())
        if current is not None:
            keep.add(self._group_of(current, groups))
        for key, group in groups.items():
            if key not in keep:
                self._stop_group(ctx, group)
        for rel in ctx.state.releases(ctx.target_name):
            if rel.outcome == JOURNAL_PENDING and rel.seq != seq:
                ctx.state.finish_release(rel.seq, JOURNAL_FAILED,
                                         reason="interrupted: the command was killed")
        collect_venvs(ctx.state.dir, only_stale=True)
        return ctx.state.current(ctx.target_name)

    @staticmethod
    def _group_of(release: Release, groups: dict[int, list[Runner]]) -> int | None:
        ref = ProcessRef.from_extra(release.extra)
        return ref.pid if ref.pid in groups and ref.alive() else None

    def _adopt(self, ctx: Context, live: str, answering: set[int], seq: int | None) -> Release | None:
        rows = [r for r in ctx.state.releases(ctx.target_name)
                if r.release_id == live and r.seq != seq]
        row = next((r for r in reversed(rows) if r.extra.get("pid") in answering), None)
        row = row or (rows[-1] if rows else None)
        if row is None:
            return None
        ctx.reporter.warn(f"{live} answers on the public port but the journal did not say so "
                          "(an interrupted command): recording it as serving")
        key = next((k for k in answering if k == row.extra.get("pid")), min(answering))
        ref = ProcessRef.of(key)
        ctx.state.finish_release(row.seq, SERVING, extra={"pid": ref.pid, "pid_start": ref.start},
                                 url=self._url(ctx))
        ctx.state.event(ctx.target_name, "adopted", f"{live} was serving after an interrupted command")
        return ctx.state.current(ctx.target_name)

    @staticmethod
    def _stop_group(ctx: Context, group: list[Runner]) -> None:
        ctx.reporter.step(f"stopping {group[0].release} (pid {group[0].ref.pid}), left running by "
                          "an interrupted command")
        for runner in sorted(group, key=lambda r: r.role != "supervisor"):
            stop_process(runner.ref, None, 10)

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
        """What answers on the public port, from a process of this deployment (read-only)."""
        url = self._url(ctx)
        live, runners, listening = self._live(ctx)
        ours = live is not None and any(r.release == live and r.ref.pid in listening
                                        for r in runners)
        extra = {"pid": release.extra.get("pid"), "log": release.extra.get("log")} if release else {}
        if ours:
            detail = "/health 200"
            if release is None or release.release_id != live:
                journal = release.release_id if release else "nothing"
                detail += (f"; the journal names {journal} (an interrupted command; the next "
                           "deploy records what serves)")
            return Status(READY, url=url, release_id=live, detail=detail, extra=extra)
        if release is None:
            return Status(DELETED, detail="not deployed")
        if not self._alive(release):
            return Status(FAILED, url=url, release_id=release.release_id,
                          detail=f"process {release.extra.get('pid')} is not running", extra=extra)
        detail = ("the public port answers for another program" if live else
                  "not answering on the public port (restarting or loading)")
        return Status(PENDING, url=url, release_id=release.release_id, detail=detail, extra=extra)

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
        for group in self._groups(find_runners(self._releases(ctx))).values():
            self._stop_group(ctx, group)
        shutil.rmtree(self._releases(ctx).parent, ignore_errors=True)
        collect_venvs(ctx.state.dir)

    def _prune(self, ctx: Context, keep: set[str]) -> None:
        """Keep the newest ``keep_releases`` release directories that once served; remove the
        rest (failed attempts too), then venvs no kept release uses."""
        served = [r.release_id for r in reversed(ctx.state.releases(ctx.target_name))
                  if r.outcome in ("serving", "superseded")]
        wanted = set(keep)
        for rid in served:
            if len(wanted) >= ctx.target.keep_releases:
                break
            wanted.add(rid)
        running = {r.release for r in find_runners(self._releases(ctx))}
        if not self._releases(ctx).is_dir():
            return
        for path in self._releases(ctx).iterdir():
            if path.name not in wanted and path.name not in running:
                shutil.rmtree(path, ignore_errors=True)
        collect_venvs(ctx.state.dir)
