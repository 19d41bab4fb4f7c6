"""The local target (embedded default): releases as directories and supervised processes here.

Layout under the state directory (directories 0700, logs 0600)::

    local/<target>/releases/<release-id>/app/      the bundle's files (content-addressed, reused)
    local/<target>/releases/<release-id>/runtime.log
    local/<target>/releases/<release-id>/run.json  the supervisor's and the runtime's pid + start time
    venvs/<requirements-hash>/                     one venv per distinct requirement set

Each release runs under the supervisor the SSH hosts use (``mlserve.adapters.supervisor``): a
process in its own session that restarts a crashed runtime of the active release with backoff,
and reads the runtime's environment (with secret values) from a FIFO, never from disk.

Identity: every process of a deployment carries its release directory (state directory +
target) in its argv, so ``observe`` finds them in /proc (``procs.find_runners``) with no journal;
the one serving is the one listening on the public port whose release ``/health`` names.

One step (``LocalStep``, run by ``phases``): prepare stops what an interrupted command left (any
process of ours except the serving one and the journal's current one), then starts the new
release beside the old: its runtime listens on a private check port, where health and smoke are
checked, with its public socket bound (SO_REUSEPORT) but not listening. Activate sends SIGUSR1
(it starts accepting on the public port beside the old release); finish sends the old one
SIGTERM (it drains) and prunes; abort stops the new one. The old one is never touched before.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Iterator

from ..checks import http_json, load_headline, predict_call, run_smoke, wait_healthy
from ..errors import DeployError, InvalidInput
from ..state import SERVING, SUPERSEDED
from ..vocab import DeployState
from .base import Adapter, Call, Context, Observed, ReleaseSpec, Resource
from .procs import (LOG_TAIL, ProcessRef, Runner, find_runners, free_port, http_url,
                    listening_pids, log_tail, port_taken, private_dir, runtime_args, runtime_env,
                    stop_process, url_caller)
from .supervisor import SupervisorError, start
from .venvs import collect_venvs, python_for


def _releases(ctx: Context) -> Path:
    """Where this target's releases live (not created here: read paths write nothing)."""
    return ctx.target_dir / "releases"


def _url(ctx: Context) -> str:
    return http_url(ctx.target.host, ctx.target.port)


def _groups(runners: list[Runner]) -> dict[int, list[Runner]]:
    """Runners by supervisor pid (a runtime whose supervisor is gone: by its own pid)."""
    sups = {r.ref.pid for r in runners if r.role == "supervisor"}
    groups: dict[int, list[Runner]] = {}
    for r in runners:
        key = r.parent if r.role == "runtime" and r.parent in sups else r.ref.pid
        groups.setdefault(key, []).append(r)
    return groups


def _stop_group(ctx: Context, group: list[Runner], why: str) -> None:
    ctx.reporter.step(f"stopping {group[0].release} (pid {group[0].ref.pid}), {why}")
    for runner in sorted(group, key=lambda r: r.role != "supervisor"):
        stop_process(runner.ref, None, 10)


class LocalAdapter(Adapter):
    name = "local"

    def observe(self, ctx: Context) -> Observed:
        """This deployment's processes (found in /proc by their argv) and which one serves
        (listening on the public port, named by ``/health``). Read-only."""
        url = _url(ctx)
        runners = find_runners(_releases(ctx))
        listening = listening_pids([r.ref.pid for r in runners if r.role == "runtime"],
                                   ctx.target.port)
        try:
            code, body = http_json("GET", url + "/health", timeout=2)
            live = body.get("release") if code == 200 and isinstance(body, dict) else None
        except OSError:
            live = None
        resources = []
        for key, group in _groups(runners).items():
            serving = live is not None and any(r.release == live and r.ref.pid in listening
                                               for r in group)
            head = next((r for r in group if r.ref.pid == key), group[0])
            resources.append(Resource(
                "process", f"{head.ref.pid}@{head.ref.start}", group[0].release,
                DeployState.READY if serving else DeployState.PENDING, serving,
                "/health 200" if serving else "not serving on the public port"))
        serving = next((r for r in resources if r.serving), None)
        if serving is not None:
            return Observed(DeployState.READY, serving.release, url, resources, "/health 200",
                            extra=self._extra(ctx, serving))
        if not resources:
            return Observed(DeployState.NOT_DEPLOYED, None, url, [], "nothing running")
        detail = ("the public port answers for another program" if live else
                  "not answering on the public port (restarting or loading)")
        return Observed(DeployState.PENDING, None, url, resources, detail,
                        extra=self._extra(ctx, resources[-1]))

    @staticmethod
    def _extra(ctx: Context, resource: Resource) -> dict:
        return {"pid": int(resource.id.partition("@")[0]),
                "log": str(_releases(ctx) / resource.release / "runtime.log")}

    def steps(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> list["LocalStep"]:
        return [LocalStep(ctx, release, observed)]

    def caller(self, ctx: Context, observed: Observed) -> Call:
        return url_caller(observed.url or _url(ctx), ctx.target_name)

    def logs(self, ctx: Context, observed: Observed, *, follow: bool, lines: int) -> Iterator[str]:
        from .procs import follow_file
        log = observed.extra.get("log") or (ctx.current and ctx.current.extra.get("log"))
        return follow_file(Path(log), lines=lines, follow=follow) if log else iter(())

    def delete(self, ctx: Context, observed: Observed) -> None:
        """Stop every process of this deployment (found again: one may have started since
        ``observed``), then remove its files and the venvs nothing uses any more."""
        for group in _groups(find_runners(_releases(ctx))).values():
            _stop_group(ctx, group, "deleting")
        shutil.rmtree(ctx.target_dir, ignore_errors=True)
        collect_venvs(ctx.state_dir)


class LocalStep:
    """The one step of a local deploy or rollback (see the module docstring)."""

    label = "local"

    def __init__(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> None:
        self.ctx, self.release, self.observed = ctx, release, observed
        self.previous = observed.release
        self.new: ProcessRef | None = None
        self.log: Path | None = None
        self.kept: set[int] = set()     # processes of ours left running by ``_stop_strays``

    # -- prepare -----------------------------------------------------------------------------
    def prepare(self) -> bool:
        ctx, rid = self.ctx, self.release.release_id
        self._stop_strays()
        if self.previous == rid:
            ctx.reporter.step(f"{rid} is already serving at {_url(ctx)}: nothing to do")
            return False
        release_dir = self._materialise()
        self._launch(release_dir)
        return True

    def _stop_strays(self) -> None:
        """Stop what an interrupted command left running: every process of ours except the one
        serving and the journal's current one (it may be restarting)."""
        keep = {int(r.id.partition("@")[0]) for r in self.observed.resources if r.serving}
        current = self.ctx.current
        if current is not None and ProcessRef.from_extra(current.extra).alive():
            keep.add(current.extra["pid"])
        for key, group in _groups(find_runners(_releases(self.ctx))).items():
            if key not in keep:
                _stop_group(self.ctx, group, "left running by an interrupted command")
            else:
                self.kept.add(key)
        collect_venvs(self.ctx.state_dir, only_stale=True)

    def _materialise(self) -> Path:
        """The release directory with its files: copied from the bundle (atomically: a killed
        copy is never taken for a release), or already there for a rollback."""
        ctx, rid, bundle = self.ctx, self.release.release_id, self.release.bundle
        private_dir(ctx.target_dir)
        release_dir = private_dir(_releases(ctx) / rid)
        app_dir = release_dir / "app"
        if bundle is None:
            if not app_dir.is_dir():
                raise InvalidInput(f"release {rid} is no longer on disk (pruned)",
                                   fix="raise targets.<name>.keep_releases, or deploy that code again")
            return release_dir
        if not app_dir.is_dir():
            for stale in release_dir.glob("app.tmp-*"):     # a killed deploy's copy (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = release_dir / f"app.tmp-{os.getpid()}"
            bundle.copy_to(tmp)
            tmp.rename(app_dir)
        return release_dir

    def _launch(self, release_dir: Path) -> None:
        ctx, target, rid, snapshot = self.ctx, self.ctx.target, self.release.release_id, \
            self.release.snapshot
        if not self.kept and port_taken(target.host, target.port):
            raise DeployError(f"port {target.port} on {target.host} is used by another program",
                              fix=f"stop that program, or set targets.{ctx.target_name}.port to a "
                                  "free port")
        python = python_for(ctx, snapshot, release_dir)
        check_port = free_port("127.0.0.1")
        self.log = release_dir / "runtime.log"
        args = runtime_args(app_dir=str(release_dir / "app"), entrypoint=snapshot["model"]["entrypoint"],
                            name=snapshot["name"], host=target.host, port=target.port,
                            scaling=snapshot["scaling"], release=rid)
        spec = {"cmd": [python, "-m", "mlserve.runtime", *args],
                "env": runtime_env(snapshot.get("env", {}), ctx.secrets),
                "cwd": str(release_dir / "app"), "check_port": check_port, "log": str(self.log),
                "release": rid}
        ctx.reporter.step(f"starting {rid} beside the current release")
        try:
            run = start(release_dir, spec)
        except SupervisorError as exc:
            raise DeployError(f"release {rid} did not start: {exc}",
                              details=f"last lines of {self.log}:\n{log_tail(self.log, LOG_TAIL)}") from None
        self.new = ProcessRef(*run["supervisor"])
        ctx.record("process", f"{self.new.pid}@{self.new.start}", dir=str(release_dir),
                   log=str(self.log), pid=self.new.pid, pid_start=self.new.start,
                   runtime_pid=run["runtime"][0], port=target.port, check_port=check_port)
        try:
            reason = self._check(snapshot, http_url("127.0.0.1", check_port))
        except BaseException:
            self.abort()
            raise
        if reason is not None:
            self.abort()
            raise self._failure(reason)

    def _check(self, snapshot: dict, check_url: str) -> str | None:
        """Health, then the smoke cases, on the private check port; the reason for a failure."""
        ctx, rid = self.ctx, self.release.release_id
        with ctx.reporter.progress(f"waiting for {rid} to load") as step:
            reason = wait_healthy(check_url, ctx.target.health_timeout, alive=self.new.alive,
                                  max_delay=0.1)
            if reason is not None:
                step.failed()       # the reporter must not say "done" before the deploy fails
        if reason is None and snapshot.get("smoke"):
            ctx.reporter.step(f"running {len(snapshot['smoke'])} smoke case(s)")
            from ..manifest import SmokeCase
            cases = [SmokeCase.model_validate(c) for c in snapshot["smoke"]]
            reason = run_smoke(predict_call(check_url), cases)
        return reason

    def _failure(self, reason: str) -> DeployError:
        rid = self.release.release_id
        tail = log_tail(self.log, LOG_TAIL)
        headline = load_headline(reason, tail)
        message = (f"release {rid} failed to load: {headline}" if headline
                   else f"release {rid} failed: {reason}")
        return DeployError(message, fix="fix the model or manifest and deploy again; the previous "
                           "release is still serving" if self.previous else
                           "fix the model and deploy again",
                           details=f"last lines of {self.log}:\n{tail}")

    # -- activate, finish, abort --------------------------------------------------------------
    def activate(self) -> None:
        """Tell the runtime (through its supervisor) to take traffic on the public port; wait
        until it says it does."""
        offset = self.log.stat().st_size
        os.kill(self.new.pid, signal.SIGUSR1)
        deadline = time.monotonic() + min(self.ctx.target.health_timeout, 30)
        reason = "the release did not start listening on the public port"
        while time.monotonic() < deadline:
            if not self.new.alive():
                reason = "the release exited while taking over the public port"
                break
            with open(self.log, "rb") as fh:
                fh.seek(offset)
                if b"activated on" in fh.read():
                    return
            time.sleep(0.02)
        self.abort()
        raise self._failure(reason)

    def finish(self) -> None:
        """Drain the releases that served before (SIGTERM), then prune old release directories."""
        for res in self.observed.resources:
            if res.serving or (self.ctx.current is not None
                               and res.release == self.ctx.current.release_id):
                pid, _, start = res.id.partition("@")
                ref = ProcessRef(int(pid), start)
                if ref != self.new:
                    self.ctx.reporter.step(f"draining the previous release {res.release}")
                    stop_process(ref, None)
        current = self.ctx.current
        if current is not None and current.extra.get("pid"):
            ref = ProcessRef.from_extra(current.extra)
            if ref != self.new:
                stop_process(ref, None)
        self._prune()

    def abort(self) -> None:
        if self.new is not None:
            stop_process(self.new, None, 10)

    def _prune(self) -> None:
        """Keep the newest ``keep_releases`` release directories that once served; remove the
        rest (failed attempts too), then venvs no kept release uses."""
        ctx = self.ctx
        served = [r.release_id for r in reversed(ctx.history)
                  if r.outcome in (SERVING, SUPERSEDED)]
        wanted = {self.release.release_id}
        for rid in served:
            if len(wanted) >= ctx.target.keep_releases:
                break
            wanted.add(rid)
        running = {r.release for r in find_runners(_releases(ctx))}
        for path in _releases(ctx).iterdir():
            if path.name not in wanted and path.name not in running:
                shutil.rmtree(path, ignore_errors=True)
        collect_venvs(ctx.state_dir)
