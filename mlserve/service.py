"""Orchestration: deploy, rollback, status, list, logs, predict, delete (for the CLI and tests).

Each function takes plain arguments (manifest path, target name, state directory) and returns
plain data, so the CLI stays a thin shell and tests drive exactly what users run. The journal
lock is held for every command that changes a target. Read paths (status, list, logs, predict,
and a delete or rollback with nothing to do) open the journal read-only and create nothing.
Live truth comes from the provider: ``status`` and ``list`` ask each target's adapter, and a
journal that cannot be used fails the command with what the provider still says (``known``).
A deploy that changed nothing leaves no release row, only an event.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import adapters
from .adapters.base import DELETED as DELETED_STATE
from .adapters.base import Context, Status
from .errors import InvalidInput, MissingCredentials, MlserveError, NotFound
from .manifest import Project, load_project
from .report import Reporter
from .state import (DELETED, FAILED, PENDING, SERVING, SUPERSEDED, Deployment, DeploymentStatus,
                    JournalError, Release, State, default_state_dir)

#: Status words beyond the provider states: nothing recorded and nothing live; a provider that
#: could not be asked about a target the journal says is deployed; a deployment whose current
#: release the journal can no longer read.
NOT_DEPLOYED, UNREACHABLE, UNKNOWN = "NOT DEPLOYED", "UNREACHABLE", "UNKNOWN"


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
    from .runtime.config import MIN_SECRET_CHARS
    short = [n for n in names if len(environ[n]) < MIN_SECRET_CHARS]
    if short:   # the runtime could not mask it: "ab" would be starred out of every log line
        raise InvalidInput(
            f"secret{'s' if len(short) > 1 else ''} {', '.join(short)} "
            f"{'are' if len(short) > 1 else 'is'} shorter than {MIN_SECRET_CHARS} characters, too "
            "short to be masked in logs and error messages",
            fix="use a real secret value (tokens and passwords are longer), or, if the value is not "
                "secret, move it from `secrets:` to `env:` in the manifest")
    return {n: environ[n] for n in names}


def _state_dir(project: Project, state_dir: str | Path | None) -> Path:
    """The journal's directory: ``--state``/``MLSERVE_STATE``, else ``.mlserve`` by the manifest."""
    return Path(state_dir).absolute() if state_dir else default_state_dir(project.root)


@contextlib.contextmanager
def open_context(manifest: str | Path | None, target: str | None, state_dir: str | Path | None,
                 reporter: Reporter | None = None, *, need_secrets: bool = False,
                 writable: bool = True) -> Iterator[Context]:
    """A target's context. Read paths pass ``writable=False``: the journal is opened read-only
    and nothing is created. A journal that cannot be used is reported with what the provider
    still says about the target."""
    project = load_project(manifest)
    name, options = project.target(target)
    reporter = reporter or Reporter()
    directory = _state_dir(project, state_dir)
    state = None
    try:
        # Secrets first: a deploy refused for a missing or unmaskable secret creates nothing.
        secrets = resolve_secrets(project.manifest.secrets) if need_secrets else {}
        state = State(directory) if writable else State.for_reading(directory)
        yield Context(project=project, target_name=name, target=options, state=state,
                      reporter=reporter, secrets=secrets)
    except JournalError as exc:
        if exc.known is None:
            exc.known = _known(Context(project=project, target_name=name, target=options,
                                       state=State.empty(directory), reporter=Reporter()))
            exc.details = f"what is still known: {_describe(exc.known)}"
        raise
    finally:
        if state is not None:
            for warning in state.warnings:
                reporter.warn(warning)
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
            outcome = _run(ctx, seq, bundle.release_id, lambda: provider.deploy(ctx, bundle, seq))
            return DeployResult(ctx.target_name, ctx.target.provider, bundle.release_id,
                                outcome.url, "READY", outcome.changed, outcome.extra)


def rollback(manifest: str | Path | None = None, target: str | None = None,
             state_dir: str | Path | None = None, to: str | None = None,
             reporter: Reporter | None = None) -> DeployResult:
    with open_context(manifest, target, state_dir, reporter, writable=False) as ctx:
        _rollback_to(ctx, to)             # nothing to roll back to: refused, nothing created
    with open_context(manifest, target, state_dir, reporter, need_secrets=True) as ctx:
        provider = adapters.get(ctx.target.provider)
        provider.check(ctx)
        with ctx.state.lock(ctx.target_name, "rollback"):
            release = _rollback_to(ctx, to)
            ctx.reporter.step(f"rolling back to {release.release_id}")
            seq = ctx.state.add_release(ctx.target_name, release.release_id, release.provider,
                                        release.bundle_hash, release.manifest, None, release.extra)
            outcome = _run(ctx, seq, release.release_id,
                           lambda: provider.rollback(ctx, release, seq))
            return DeployResult(ctx.target_name, release.provider, release.release_id,
                                outcome.url, "READY", outcome.changed, outcome.extra)


def _rollback_to(ctx: Context, to: str | None) -> Release:
    if to:
        return ctx.state.find_release(ctx.target_name, to)
    release = ctx.state.previous(ctx.target_name)
    if release is None:
        raise NotFound(f"target {ctx.target_name!r} has no previous release to roll back to",
                       fix=f"see `mlserve status {ctx.target_name}`")
    return release


def _run(ctx: Context, seq: int, release_id: str, action) -> Any:
    """Run a deploy-like action and record its outcome in the journal, whatever happens.
    An action that changed nothing leaves no release row, only an event."""
    try:
        outcome = action()
    except MlserveError as exc:       # refused or failed: the reason is the user's message
        ctx.state.finish_release(seq, FAILED, reason=exc.message)
        ctx.state.event(ctx.target_name, "deploy-failed", exc.message)
        raise
    except BaseException as exc:
        ctx.state.finish_release(seq, FAILED, reason=f"interrupted: {type(exc).__name__}")
        raise
    if not outcome.changed:
        ctx.state.discard_release(seq)
        ctx.state.event(ctx.target_name, "unchanged",
                        f"{release_id} already serving at {outcome.url}")
        return outcome
    ctx.state.finish_release(seq, SERVING, extra=outcome.extra, url=outcome.url)
    ctx.state.event(ctx.target_name, "deployed", f"{release_id} serving at {outcome.url}")
    return outcome


def status(manifest=None, target=None, state_dir=None, reporter: Reporter | None = None) -> dict:
    with open_context(manifest, target, state_dir, reporter, writable=False) as ctx:
        row = _live_row(ctx, ctx.state.deployment(ctx.target_name), raise_errors=True)
        history = [{"release": r.release_id, "outcome": r.outcome.value, "created_at": r.created_at,
                    "reason": r.reason} for r in ctx.state.releases(ctx.target_name)]
        history += [{"release": None, "outcome": DELETED.value, "created_at": e["at"],
                     "reason": e["message"]} for e in ctx.state.events(ctx.target_name, 1000)
                    if e["kind"] == "deleted"]
        history.sort(key=lambda h: h["created_at"], reverse=True)
        return {"target": row["target"], "provider": row["provider"], "status": row["status"],
                "url": row["url"], "release": row["release"], "detail": row["detail"],
                "extra": row["extra"], "releases": history[:10],
                "warnings": list(ctx.state.warnings)}


def list_deployments(manifest=None, state_dir=None, reporter: Reporter | None = None) -> list[dict]:
    """Every target of the manifest with what its provider says is live (the journal supplies
    which release should be there; a provider that cannot be asked says so in its row)."""
    project = load_project(manifest)
    reporter = reporter or Reporter()
    directory = _state_dir(project, state_dir)

    def rows(state: State, journal: bool = True) -> list[dict]:
        known = {d.target: d for d in state.deployments()}
        return [_live_row(Context(project=project, target_name=name, target=options, state=state,
                                  reporter=Reporter()), known.get(name), journal)
                for name, options in project.manifest.targets.items()]
    state = None
    try:
        state = State.for_reading(directory)
        return [_without_extra(r) for r in rows(state)]
    except JournalError as exc:
        if exc.known is None:
            exc.known = {"deployments": [{**_without_extra(r), "journal": False}
                                         for r in rows(State.empty(directory), journal=False)]}
            exc.details = "what is still known:\n" + "\n".join(
                f"  {_describe(r)}" for r in exc.known["deployments"])
        raise
    finally:
        if state is not None:
            for warning in state.warnings:
                reporter.warn(warning)
            state.close()


def _without_extra(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "extra"}     # list: one line per target


def _live_row(ctx: Context, dep: Deployment | None, journal: bool = True,
              raise_errors: bool = False) -> dict:
    """What the provider says about a target, given the journal's current release (or none).
    A provider that cannot be asked is reported as UNREACHABLE with its reason (raised instead
    with ``raise_errors``: ``status`` of one target gives the error's own fix and exit code).
    Without a ``journal`` (it is unreadable) the provider's answer is given as it is."""
    current = ctx.state.current(ctx.target_name)
    row = {"target": ctx.target_name, "provider": ctx.target.provider, "status": DELETED_STATE,
           "release": current.release_id if current else None, "url": None, "detail": "",
           "updated_at": dep.updated_at if dep else None, "extra": {}}
    try:
        live: Status = adapters.get(ctx.target.provider).status(ctx, current)
    except MlserveError as exc:
        if raise_errors and current is not None:
            raise
        if current is not None or not journal:
            row.update(status=UNREACHABLE, detail=exc.message)
    else:
        row.update(status=live.state, url=live.url, release=live.release_id or row["release"],
                   detail=live.detail, extra=live.extra)
    if journal and current is None and row["status"] == DELETED_STATE:   # nothing live or recorded
        if dep is None:
            row.update(status=NOT_DEPLOYED, detail="never deployed")
        elif dep.status != DeploymentStatus.DELETED:     # its release row was skipped (warned)
            row.update(status=UNKNOWN, release=dep.release_id,
                       detail=f"the journal's record of release {dep.release_id} is unreadable")
    return row


def _known(ctx: Context) -> dict:
    """What can still be said about a target when a command met a JournalError: with the
    journal if it can still be read (the problem was elsewhere, e.g. a lock), else without."""
    try:
        state = State.for_reading(ctx.state.dir)
    except JournalError:
        return {**_live_row(ctx, None, journal=False), "journal": False}
    try:
        ctx.state = state
        return {**_live_row(ctx, state.deployment(ctx.target_name)), "journal": True}
    finally:
        state.close()


def _describe(row: dict) -> str:
    """One line for an error message: what the provider says about one target."""
    where = " ".join(str(row[k]) for k in ("url", "release") if row.get(k))
    asked = "" if row.get("journal", True) else ", asked without the journal,"
    return (f"the {row['provider']} provider{asked} says target {row['target']!r} is "
            f"{row['status']}"
            + (f" ({where})" if where else "") + (f": {row['detail']}" if row["detail"] else ""))


def _current_or_fail(ctx: Context):
    current = ctx.state.current(ctx.target_name)
    if current is None:
        raise NotFound(f"target {ctx.target_name!r} is not deployed",
                       fix=f"mlserve deploy {ctx.target_name}")
    return current


def logs(manifest=None, target=None, state_dir=None, follow=False, lines=100) -> Iterator[str]:
    with open_context(manifest, target, state_dir, writable=False) as ctx:
        current = _current_or_fail(ctx)
        yield from adapters.get(ctx.target.provider).logs(ctx, current, follow=follow, lines=lines)


def predict(manifest=None, target=None, state_dir=None, payload: Any = None,
            reporter: Reporter | None = None) -> tuple[int, Any]:
    with open_context(manifest, target, state_dir, reporter, writable=False) as ctx:
        current = _current_or_fail(ctx)
        return adapters.get(ctx.target.provider).predict(ctx, current, payload)


def delete(manifest=None, target=None, state_dir=None, reporter: Reporter | None = None) -> dict:
    """Stop and remove what mlserve created for a target. A target with nothing recorded and
    nothing live is "nothing to delete" (exit 0, no journal created): CI tears down blindly."""
    with open_context(manifest, target, state_dir, reporter, writable=False) as ctx:
        if not _anything_to_delete(ctx):
            return {"target": ctx.target_name, "provider": ctx.target.provider,
                    "status": NOT_DEPLOYED, "detail": "nothing to delete"}
    with open_context(manifest, target, state_dir, reporter) as ctx:
        provider = adapters.get(ctx.target.provider)
        with ctx.state.lock(ctx.target_name, "delete"):
            releases = [r for r in ctx.state.releases(ctx.target_name, since_deletion=True)
                        if r.outcome in (SERVING, SUPERSEDED, PENDING)]
            provider.delete(ctx, releases)
            ctx.state.mark_deleted(ctx.target_name, ctx.target.provider, ctx.manifest.name)
            ctx.state.event(ctx.target_name, "deleted",
                            f"deleted by user ({len(releases)} release(s) stopped or removed)")
            return {"target": ctx.target_name, "provider": ctx.target.provider,
                    "status": DELETED_STATE, "detail": "deleted"}


def _anything_to_delete(ctx: Context) -> bool:
    """True when the journal records something since the last delete, or the provider reports
    something live without it (e.g. after the journal was moved aside)."""
    dep = ctx.state.deployment(ctx.target_name)
    if dep is not None and dep.status != DeploymentStatus.DELETED:
        return True
    if any(r.outcome in (SERVING, SUPERSEDED, PENDING)
           for r in ctx.state.releases(ctx.target_name, since_deletion=True)):
        return True
    return _live_row(ctx, dep)["status"] not in (DELETED_STATE, NOT_DEPLOYED, UNREACHABLE, UNKNOWN)


def project_for(manifest=None) -> Project:
    return load_project(manifest)


def build(manifest=None, target=None, fmt=None, output=None):
    """Render the build context of one target (``mlserve build``); see ``mlserve.packaging``."""
    from .packaging import build as build_context
    return build_context(manifest, target, fmt, output)
