"""Orchestration: deploy, rollback, status, logs, predict, delete — used by the CLI and by tests.

Each function takes plain arguments (manifest path, target name, state directory) and returns
plain data, so the CLI stays a thin shell and tests drive exactly what users run. The journal
lock is held for every command that changes a target.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import adapters
from .adapters.base import Context, Status
from .errors import DeployError, MissingCredentials, NotFound
from .manifest import Project, load_project
from .report import Reporter
from .state import FAILED, SERVING, State, default_state_dir


@dataclass
class DeployResult:
    target: str
    provider: str
    release: str
    url: str | None
    status: str
    changed: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_secrets(names: list[str], environ: dict | None = None) -> dict[str, str]:
    """Secret values from the environment; every missing one is named in one error."""
    environ = os.environ if environ is None else environ
    missing = [n for n in names if not environ.get(n)]
    if missing:
        raise MissingCredentials(
            f"secret{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not set in the environment",
            fix="export " + " ".join(f"{n}=..." for n in missing) + " before deploying "
                "(in CI, from the CI system's secret store)")
    return {n: environ[n] for n in names}


def _open_state(project: Project, state_dir: str | Path | None) -> State:
    """The journal: ``--state``/``MLSERVE_STATE``, else ``.mlserve`` beside the manifest."""
    return State(Path(state_dir).absolute() if state_dir else default_state_dir(project.root))


@contextlib.contextmanager
def open_context(manifest: str | Path | None, target: str | None, state_dir: str | Path | None,
                 reporter: Reporter | None = None, *, need_secrets: bool = False) -> Iterator[Context]:
    project = load_project(manifest)
    name, options = project.target(target)
    state = _open_state(project, state_dir)
    try:
        secrets = resolve_secrets(project.manifest.secrets) if need_secrets else {}
        yield Context(project=project, target_name=name, target=options, state=state,
                      reporter=reporter or Reporter(), secrets=secrets)
    finally:
        state.close()


def deploy(manifest: str | Path | None = None, target: str | None = None,
           state_dir: str | Path | None = None, reporter: Reporter | None = None) -> DeployResult:
    with open_context(manifest, target, state_dir, reporter, need_secrets=True) as ctx:
        provider = adapters.get(ctx.target.provider)
        provider.check(ctx)
        with ctx.state.lock(ctx.target_name, "deploy"):
            bundle = provider.package(ctx)
            for warning in bundle.warnings:
                ctx.reporter.warn(warning)
            ctx.reporter.step(f"release {bundle.release_id}: {len(bundle.files)} files, "
                              f"{bundle.total_size} bytes")
            seq = ctx.state.add_release(ctx.target_name, bundle.release_id, ctx.target.provider,
                                        bundle.content_hash, ctx.manifest.model_dump(mode="json"), None)
            outcome = _run(ctx, seq, lambda: provider.deploy(ctx, bundle, seq))
            return DeployResult(ctx.target_name, ctx.target.provider, bundle.release_id,
                                outcome.url, "READY", outcome.changed, outcome.extra)


def rollback(manifest: str | Path | None = None, target: str | None = None,
             state_dir: str | Path | None = None, to: str | None = None,
             reporter: Reporter | None = None) -> DeployResult:
    with open_context(manifest, target, state_dir, reporter, need_secrets=True) as ctx:
        provider = adapters.get(ctx.target.provider)
        provider.check(ctx)
        with ctx.state.lock(ctx.target_name, "rollback"):
            if to:
                release = ctx.state.find_release(ctx.target_name, to)
            else:
                release = ctx.state.previous(ctx.target_name)
                if release is None:
                    raise NotFound(f"target {ctx.target_name!r} has no previous release to roll "
                                   "back to", fix=f"see `mlserve status {ctx.target_name}`")
            ctx.reporter.step(f"rolling back to {release.release_id}")
            seq = ctx.state.add_release(ctx.target_name, release.release_id, release.provider,
                                        release.bundle_hash, release.manifest, None, release.extra)
            outcome = _run(ctx, seq, lambda: provider.rollback(ctx, release, seq))
            return DeployResult(ctx.target_name, release.provider, release.release_id,
                                outcome.url, "READY", outcome.changed, outcome.extra)


def _run(ctx: Context, seq: int, action) -> Any:
    """Run a deploy-like action and record its outcome in the journal, whatever happens."""
    try:
        outcome = action()
    except DeployError as exc:
        ctx.state.finish_release(seq, FAILED, reason=exc.message)
        ctx.state.event(ctx.target_name, "deploy-failed", exc.message)
        raise
    except BaseException as exc:
        ctx.state.finish_release(seq, FAILED, reason=f"interrupted: {type(exc).__name__}")
        raise
    ctx.state.finish_release(seq, SERVING, extra=outcome.extra, url=outcome.url)
    ctx.state.event(ctx.target_name, "deployed", f"serving at {outcome.url}")
    return outcome


def status(manifest=None, target=None, state_dir=None) -> dict:
    with open_context(manifest, target, state_dir) as ctx:
        current = ctx.state.current(ctx.target_name)
        live: Status = adapters.get(ctx.target.provider).status(ctx, current)
        releases = ctx.state.releases(ctx.target_name)[-10:]
        state = live.state
        if current is None and ctx.state.deployment(ctx.target_name) is None:
            state = "NOT DEPLOYED"      # never served (failed attempts are listed in releases)
        return {"target": ctx.target_name, "provider": ctx.target.provider, "status": state,
                "url": live.url, "release": live.release_id, "detail": live.detail,
                "extra": live.extra,
                "releases": [{"release": r.release_id, "outcome": r.outcome, "created_at": r.created_at,
                              "reason": r.reason} for r in reversed(releases)]}


def list_deployments(manifest=None, state_dir=None) -> list[dict]:
    project = load_project(manifest)
    state = _open_state(project, state_dir)
    try:
        known = {d.target: d for d in state.deployments()}
        rows = []
        for name, options in project.manifest.targets.items():
            dep = known.get(name)
            rows.append({"target": name, "provider": options.provider,
                         "status": dep.status if dep else "NOT DEPLOYED",
                         "release": dep.release_id if dep else None, "url": dep.url if dep else None,
                         "updated_at": dep.updated_at if dep else None})
        return rows
    finally:
        state.close()


def _current_or_fail(ctx: Context):
    current = ctx.state.current(ctx.target_name)
    if current is None:
        raise NotFound(f"target {ctx.target_name!r} is not deployed",
                       fix=f"mlserve deploy {ctx.target_name}")
    return current


def logs(manifest=None, target=None, state_dir=None, follow=False, lines=100) -> Iterator[str]:
    with open_context(manifest, target, state_dir) as ctx:
        current = _current_or_fail(ctx)
        yield from adapters.get(ctx.target.provider).logs(ctx, current, follow=follow, lines=lines)


def predict(manifest=None, target=None, state_dir=None, payload: Any = None,
            reporter: Reporter | None = None) -> tuple[int, Any]:
    with open_context(manifest, target, state_dir, reporter) as ctx:
        current = _current_or_fail(ctx)
        return adapters.get(ctx.target.provider).predict(ctx, current, payload)


def delete(manifest=None, target=None, state_dir=None, reporter: Reporter | None = None) -> dict:
    with open_context(manifest, target, state_dir, reporter) as ctx:
        provider = adapters.get(ctx.target.provider)
        with ctx.state.lock(ctx.target_name, "delete"):
            releases = [r for r in ctx.state.releases(ctx.target_name)
                        if r.outcome in ("serving", "superseded", "pending")]
            if ctx.state.deployment(ctx.target_name) is None and not releases:
                raise NotFound(f"target {ctx.target_name!r} is not deployed", fix="nothing to delete")
            provider.delete(ctx, releases)
            ctx.state.mark_deleted(ctx.target_name)
            ctx.state.event(ctx.target_name, "deleted", "deleted by user")
            return {"target": ctx.target_name, "provider": ctx.target.provider, "status": "DELETED"}


def project_for(manifest=None) -> Project:
    return load_project(manifest)


def build(manifest=None, target=None, fmt=None, output=None):
    """Render the build context of one target (``mlserve build``); see ``mlserve.packaging``."""
    from .packaging import build as build_context
    return build_context(manifest, target, fmt, output)
