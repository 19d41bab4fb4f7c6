"""Orchestration: deploy, rollback, observe, status, list, logs, predict, delete.

Each function takes plain arguments (manifest path, target name, state directory) and returns
plain data, so the CLI stays a thin shell and tests drive exactly what users run.

The journal belongs to this module; adapters never open it. A deploy is: load the project,
secrets, journal lock, ``observe`` (what the provider has, found by the deployment's identity),
settle the journal with it (attempts a killed command left pending fail; a release the provider
serves but the journal does not name is adopted), the adapter's steps through
``adapters.phases.run``, then the outcome. While the steps run, the adapter's ``ctx.record``
writes the resources it creates into the attempt's row, so the next command can find them.
A deploy that changed nothing leaves no release row, only an event.

Read paths (``observe``, ``status``, ``list``, ``logs``, ``predict``, ``caller``, and a delete or
rollback with nothing to do) open the journal read-only and create nothing. Live truth comes from
the provider; a journal that cannot be used fails the command with what the provider still
says (``known``). ``delete`` removes what ``observe`` finds, so it works without the journal.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import adapters
from .adapters import phases
from .adapters.base import Adapter, Call, Context, Observed, ReleaseSpec
from .errors import DeployError, InvalidInput, MlserveError, NotFound
from .manifest import Project, load_project
from .release import release_id
from .report import Reporter
from .journal import open_state
from .session import (_context, _describe, _live_row, _refresh, journal_location,
                      _without_extra, open_context, resolve_secrets)
from .state import (FAILED, PENDING, SERVING, SUPERSEDED, DeploymentStatus, JournalError, Release,
                    State, file_list, requirements_of)
from .vocab import DeployState

__all__ = ["DeployResult", "deploy", "rollback", "observe", "caller", "status", "list_deployments",
           "logs", "predict", "delete", "project_for", "build", "resolve_secrets"]


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


def observe(manifest=None, target=None, state_dir=None) -> Observed:
    """What the target's provider has now (read-only; the journal is only read, if at all)."""
    with open_context(manifest, target, state_dir, writable=False) as (ctx, _):
        return adapters.get(ctx.target.provider).observe(ctx)



def caller(manifest=None, target=None, state_dir=None, reporter: Reporter | None = None) -> Call:
    """payload -> (HTTP status, body) against what serves the target now (read-only). Raises
    NotFound when nothing of the deployment is there."""
    with open_context(manifest, target, state_dir, reporter, writable=False) as (ctx, _):
        return _caller(ctx, adapters.get(ctx.target.provider))


def _caller(ctx: Context, adapter: Adapter) -> Call:
    observed = adapter.observe(ctx)
    if not observed.found and ctx.current is None:
        _current_or_fail(ctx)
    return adapter.caller(ctx, observed)


# -- changing a target ----------------------------------------------------------------------
def deploy(manifest: str | Path | None = None, target: str | None = None,
           state_dir: str | Path | None = None, reporter: Reporter | None = None, *,
           locked: bool = False, image: str | None = None) -> DeployResult:
    """``image``: run that image, built earlier (providers whose adapter has ``image_release``;
    the release id is the one the image carries, the journal records its digest)."""
    with open_context(manifest, target, state_dir, reporter, need_secrets=True) as (ctx, state):
        adapter = adapters.get(ctx.target.provider)
        if image is not None:
            if not hasattr(adapter, "image_release"):
                raise InvalidInput(f"--image: the {ctx.target.provider!r} provider does not run "
                                   "images", fix="deploy without --image, or to a docker target")
            adapter.check_image(image)          # a malformed REF: exit 2 before any engine
        adapter.check(ctx)
        with _lock(state, ctx.target_name, "deploy", locked):
            bundle = adapter.package(ctx)
            for warning in bundle.warnings:
                ctx.reporter.warn(warning)
            rid = release_id(ctx.project, bundle)
            snapshot = ctx.manifest.model_dump(mode="json")
            if image is not None:
                rid = adapter.image_release(ctx, image) or rid
                snapshot["image"] = image
            ctx.reporter.step(f"release {rid}: {len(bundle.files)} files, {bundle.total_size} bytes")
            spec = ReleaseSpec(rid, snapshot, bundle)
            kept = {"files": file_list(bundle), "requirements": requirements_of(
                ctx.project.root, ctx.manifest.model.requirements)}
            return _roll(ctx, state, adapter, spec, bundle.content_hash, {}, kept)


def rollback(manifest: str | Path | None = None, target: str | None = None,
             state_dir: str | Path | None = None, to: str | None = None,
             reporter: Reporter | None = None) -> DeployResult:
    with open_context(manifest, target, state_dir, reporter, writable=False) as (_, state):
        _rollback_to(state, _.target_name, to)   # nothing to roll back to: refused, nothing created
    with open_context(manifest, target, state_dir, reporter, need_secrets=True) as (ctx, state):
        adapter = adapters.get(ctx.target.provider)
        adapter.check(ctx)
        with state.lock(ctx.target_name, "rollback"):
            release = _rollback_to(state, ctx.target_name, to)
            ctx.reporter.step(f"rolling back to {release.release_id}")
            spec = ReleaseSpec(release.release_id, release.manifest, None)
            kept = {"files": getattr(release, "files", None),
                    "requirements": getattr(release, "requirements", None)}
            return _roll(ctx, state, adapter, spec, release.bundle_hash, release.extra, kept)


def _rollback_to(state: State, target: str, to: str | None) -> Release:
    if to:
        return state.find_release(target, to)
    release = state.previous(target)
    if release is None:
        raise NotFound(f"target {target!r} has no previous release to roll back to",
                       fix=f"see `mlserve status {target}`")
    return release


def _roll(ctx: Context, state: State, adapter, spec: ReleaseSpec, bundle_hash: str,
          extra: dict, kept: dict) -> DeployResult:
    """One attempt (caller holds the lock): journal it (with what ``plan`` compares: ``kept``
    files and requirements), settle what a killed command left, run the steps, record the
    outcome whatever happens."""
    seq = state.add_release(ctx.target_name, spec.release_id, ctx.target.provider, bundle_hash,
                            spec.snapshot, None, extra, **kept)
    recorded: dict[str, Any] = {}

    def record(kind: str, id: str, **data: Any) -> None:
        recorded.update(data)
        state.update_extra(seq, data)
    ctx.record = record
    try:
        url, extra, changed = _run_steps(ctx, state, adapter, spec, seq, recorded)
    except MlserveError as exc:       # refused or failed: the reason is the user's message
        state.finish_release(seq, FAILED, reason=exc.message)
        state.event(ctx.target_name, "deploy-failed", exc.message)
        raise
    except BaseException as exc:     # Ctrl-C, SIGTERM, --timeout (``deadline.Expired``)
        state.finish_release(seq, FAILED, reason=getattr(exc, "reason", None)
                             or f"interrupted: {type(exc).__name__}")
        raise
    if not changed:
        state.discard_release(seq)
        state.event(ctx.target_name, "unchanged", f"{spec.release_id} already serving at {url}")
    else:
        state.finish_release(seq, SERVING, extra=extra, url=url)
        state.event(ctx.target_name, "deployed", f"{spec.release_id} serving at {url}")
    return DeployResult(ctx.target_name, ctx.target.provider, spec.release_id, url,
                        DeployState.READY.value, changed, extra)


def _run_steps(ctx: Context, state: State, adapter: Adapter, spec: ReleaseSpec, seq: int,
               recorded: dict) -> tuple[str | None, dict, bool]:
    observed = adapter.observe(ctx)
    _settle(ctx, state, observed, seq)
    steps = adapter.steps(ctx, spec, observed)
    options = ctx.target
    results = phases.run(steps, spec.release_id, getattr(options, "max_parallel", 1),
                         getattr(options, "max_unavailable", 1))
    changed = phases.changed(results)
    outcome = adapter.outcome(ctx, steps, results)
    error = phases.failure(spec.release_id, results)
    if error is not None:       # where each step stands, and what this attempt started
        state.update_extra(seq, {**recorded, **outcome})
        raise error
    extra = dict(recorded) if changed else dict(ctx.current.extra if ctx.current else {})
    extra.update(outcome)
    if not changed:
        _smoke_unchanged(ctx, adapter, spec, observed)
    return observed.url, extra, changed


def _smoke_unchanged(ctx: Context, adapter: Adapter, spec: ReleaseSpec, observed: Observed) -> None:
    """Smoke cases are a check, not part of the release (``mlserve.release``): when they changed
    since the serving release was checked, a deploy that changes nothing else runs them against
    it, and fails (nothing changes) when one does not pass."""
    cases = spec.snapshot.get("smoke") or []
    if not cases or (ctx.current is not None and ctx.current.manifest.get("smoke") == cases):
        return
    from .checks import run_smoke
    from .manifest import SmokeCase
    ctx.reporter.step(f"running {len(cases)} changed smoke case(s) against {spec.release_id}")
    call = adapter.caller(ctx, observed)
    try:
        reason = run_smoke(call, [SmokeCase.model_validate(c) for c in cases])
    finally:
        getattr(call, "close", lambda: None)()
    if reason is not None:
        raise DeployError(f"release {spec.release_id} serves, but {reason}",
                          fix="fix the smoke case or the model; nothing was changed")


def _settle(ctx: Context, state: State, observed: Observed, seq: int | None) -> None:
    """Make the journal agree with what the provider has (caller holds the lock): attempts an
    interrupted command left pending are failed; a release that answers but that the journal
    does not name as current is recorded as serving (adopted) when the journal knows it."""
    for rel in state.releases(ctx.target_name):
        if rel.outcome == PENDING and rel.seq != seq:
            state.finish_release(rel.seq, FAILED, reason="interrupted: the command was killed")
    live = observed.release if observed.state in (DeployState.READY, DeployState.DEGRADED) else None
    current = state.current(ctx.target_name)
    if live and (current is None or current.release_id != live):
        rows = [r for r in state.releases(ctx.target_name, since_deletion=True)
                if r.release_id == live and r.seq != seq]
        if rows:
            ctx.reporter.warn(f"{live} answers at {observed.url} but the journal did not say so "
                              "(an interrupted command): recording it as serving")
            serving = next((r for r in observed.resources if r.serving), None)
            state.finish_release(rows[-1].seq, SERVING, url=observed.url,
                                 extra=serving_extra(serving))
            state.event(ctx.target_name, "adopted",
                        f"{live} was serving after an interrupted command")
        else:
            ctx.reporter.warn(f"{live} answers at {observed.url} but the journal has no record "
                              "of it (deployed with another state directory?)")
    _refresh(ctx, state)


def serving_extra(resource) -> dict:
    """The journal data of an adopted resource: the process it is, for a local release."""
    if resource is None or resource.kind != "process":
        return {}
    pid, _, start = resource.id.partition("@")
    return {"pid": int(pid), "pid_start": start or None}


def delete(manifest=None, target=None, state_dir=None, reporter: Reporter | None = None, *,
           locked: bool = False, purge: bool = False) -> dict:
    """Stop and remove what mlserve created for a target, found by the provider (``observe``),
    not by the journal: a lost journal leaks nothing. Nothing recorded and nothing found is
    "nothing to delete" (exit 0, no journal created): CI tears down blindly. ``purge``: the
    target's images too (adapters with ``purge``; refused, exit 2, for the others)."""
    with open_context(manifest, target, state_dir, reporter, writable=False) as (ctx, state):
        adapter = adapters.get(ctx.target.provider)
        if purge and not hasattr(adapter, "purge"):
            raise InvalidInput(f"--purge: the {ctx.target.provider!r} provider keeps no images",
                               fix="delete without --purge")
        if not _anything_to_delete(ctx, state, adapter):
            if purge:               # nothing runs: the images may still be there
                adapter.purge(ctx)
            return {"target": ctx.target_name, "provider": ctx.target.provider,
                    "status": DeployState.NOT_DEPLOYED.value, "detail": "nothing to delete"}
    with open_context(manifest, target, state_dir, reporter) as (ctx, state):
        with _lock(state, ctx.target_name, "delete", locked):
            observed = adapter.observe(ctx)
            adapter.delete(ctx, observed)
            if purge:               # after the containers: an image in use cannot be removed
                adapter.purge(ctx)
            count = len(observed.resources)
            for rel in state.releases(ctx.target_name):
                if rel.outcome == PENDING:
                    state.finish_release(rel.seq, FAILED, reason="interrupted: the command was killed")
            state.mark_deleted(ctx.target_name, ctx.target.provider, ctx.manifest.name)
            state.event(ctx.target_name, "deleted",
                        f"deleted by user ({count} resource(s) stopped or removed)")
            return {"target": ctx.target_name, "provider": ctx.target.provider,
                    "status": DeployState.DELETED.value, "detail": "deleted"}


def _lock(state: State, target: str, action: str, held: bool):
    """The target's journal lock, or nothing when the caller holds it already (``locked=True``:
    ``migrate`` holds both of its targets for the whole migration, and a second holder in one
    process is refused like any other)."""
    return contextlib.nullcontext() if held else state.lock(target, action)


def _anything_to_delete(ctx: Context, state: State, adapter) -> bool:
    """True when the journal records something since the last delete, or the provider has
    something of this deployment (found by its identity, e.g. after the journal was removed)."""
    if ctx.current is not None or any(r.outcome in (SERVING, SUPERSEDED, PENDING)
                                      for r in ctx.history):
        return True
    dep = state.deployment(ctx.target_name)
    if dep is not None and dep.status != DeploymentStatus.DELETED:
        return True
    try:
        return adapter.observe(ctx).found
    except MlserveError:
        return False


# -- reading --------------------------------------------------------------------------------
def status(manifest=None, target=None, state_dir=None, reporter: Reporter | None = None) -> dict:
    with open_context(manifest, target, state_dir, reporter, writable=False) as (ctx, state):
        row = _live_row(ctx, state, raise_errors=True)
        live = {r.seq for r in state.releases(ctx.target_name, since_deletion=True)}
        history = [{"release": r.release_id, "outcome": _outcome_shown(r, live),
                    "created_at": r.created_at, "reason": r.reason}
                   for r in state.releases(ctx.target_name)]
        history += [{"release": None, "outcome": "deleted", "created_at": e["at"],
                     "reason": e["message"]} for e in state.events(ctx.target_name, 1000)
                    if e["kind"] == "deleted"]
        history.sort(key=lambda h: h["created_at"], reverse=True)
        return {"target": row["target"], "provider": row["provider"], "status": row["status"],
                "url": row["url"], "release": row["release"], "detail": row["detail"],
                "extra": row["extra"], "releases": history[:10],
                "warnings": list(state.warnings)}


def _outcome_shown(rel, live: set[int]) -> str:
    """A release row keeps the outcome it had when a ``delete`` came; one that was serving (or
    being deployed) then is shown as deleted, not as serving."""
    if rel.seq not in live and rel.outcome in (SERVING, PENDING):
        return "deleted"
    return rel.outcome.value


def list_deployments(manifest=None, state_dir=None, reporter: Reporter | None = None) -> list[dict]:
    """Every target of the manifest with what its provider says is live (the journal supplies
    which release should be there; a provider that cannot be asked says so in its row)."""
    project = load_project(manifest)
    reporter = reporter or Reporter()
    where = journal_location(project, state_dir)

    def rows(state: State, journal: bool = True) -> list[dict]:
        return [_live_row(_context(project, name, options, where, Reporter(), state), state,
                          journal) for name, options in project.manifest.targets.items()]
    state = None
    try:
        state = open_state(where, read_only=True)
        return [_without_extra(r) for r in rows(state)]
    except JournalError as exc:
        if exc.known is None:
            exc.known = {"deployments": [{**_without_extra(r), "journal": False}
                                         for r in rows(State.empty(where.local_dir), journal=False)]}
            exc.details = "what is still known:\n" + "\n".join(
                f"  {_describe(r)}" for r in exc.known["deployments"])
        raise
    finally:
        if state is not None:
            for warning in state.warnings:
                reporter.warn(warning)
            state.close()



def _current_or_fail(ctx: Context) -> Release:
    if ctx.current is None:
        raise NotFound(f"target {ctx.target_name!r} is not deployed",
                       fix=f"mlserve deploy {ctx.target_name}")
    return ctx.current


def logs(manifest=None, target=None, state_dir=None, follow=False, lines=100) -> Iterator[str]:
    with open_context(manifest, target, state_dir, writable=False) as (ctx, _):
        adapter = adapters.get(ctx.target.provider)
        observed = adapter.observe(ctx)
        if not observed.found and ctx.current is None:
            _current_or_fail(ctx)
        yield from adapter.logs(ctx, observed, follow=follow, lines=lines)


def predict(manifest=None, target=None, state_dir=None, payload: Any = None,
            reporter: Reporter | None = None) -> tuple[int, Any]:
    with open_context(manifest, target, state_dir, reporter, writable=False) as (ctx, _):
        call = _caller(ctx, adapters.get(ctx.target.provider))
        try:
            return call(payload)
        finally:
            getattr(call, "close", lambda: None)()     # sessions an adapter kept for more calls


def project_for(manifest=None) -> Project:
    return load_project(manifest)


def build(manifest=None, target=None, fmt=None, output=None):
    """Render the build context of one target (``mlserve build``); see ``mlserve.packaging``."""
    from .packaging import build as build_context
    return build_context(manifest, target, fmt, output)
