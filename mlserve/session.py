"""Opening one target for a command: its project, options, journal and adapter context, and
what its provider says about it (the ``status``/``list`` row).

``open_context`` gives the adapter ``Context`` (no journal inside: the service reads
``current``/``history`` into it) and the ``State`` beside it; read paths open the journal
read-only and create nothing. A journal that cannot be used fails the command with what the
provider still says about the target (``known``), asked without the journal if need be.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from . import adapters
from .adapters.base import Context
from .errors import InvalidInput, MissingCredentials, MlserveError
from .manifest import Project, load_project
from .report import Reporter
from .journal import Location, locate, open_state
from .state import DeploymentStatus, JournalError, State
from .vocab import DeployState

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


def journal_location(project: Project, state: str | Path | None) -> Location:
    """The journal: ``--state``, ``MLSERVE_STATE``, the manifest's ``state:``, else ``.mlserve``
    by the manifest (``mlserve.journal.locate``)."""
    return locate(project.root, project.manifest.state, state)


def _context(project: Project, name: str, options, where: Location, reporter: Reporter,
             state: State, secrets: dict | None = None) -> Context:
    ctx = Context(project=project, target_name=name, target=options, reporter=reporter,
                  state_dir=where.local_dir, secrets=secrets or {})
    _refresh(ctx, state)
    return ctx


def _refresh(ctx: Context, state: State) -> None:
    """What the adapter may know of the journal: the current release and the history."""
    ctx.current = state.current(ctx.target_name)
    ctx.history = state.releases(ctx.target_name, since_deletion=True)


@contextlib.contextmanager
def open_context(manifest: str | Path | None, target: str | None, state_dir: str | Path | None,
                 reporter: Reporter | None = None, *, need_secrets: bool = False,
                 writable: bool = True) -> Iterator[tuple[Context, State]]:
    """A target's context and its journal. Read paths pass ``writable=False``: the journal is
    opened read-only and nothing is created. A journal that cannot be used is reported with
    what the provider still says about the target."""
    project = load_project(manifest)
    name, options = project.target(target)
    reporter = reporter or Reporter()
    where = journal_location(project, state_dir)
    state = None
    try:
        # Secrets first: a deploy refused for a missing or unmaskable secret creates nothing.
        secrets = resolve_secrets(project.manifest.secrets) if need_secrets else {}
        state = open_state(where, read_only=not writable)
        yield _context(project, name, options, where, reporter, state, secrets), state
    except JournalError as exc:
        if exc.known is None:
            exc.known = _known(project, name, options, where)
            exc.details = f"what is still known: {_describe(exc.known)}"
        raise
    finally:
        if state is not None:
            for warning in state.warnings:
                reporter.warn(warning)
            state.close()


# -- the protocol, with the ssh adapter's older shape until it moves ------------------------
def _without_extra(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "extra"}     # list: one line per target


def _live_row(ctx: Context, state: State, journal: bool = True, raise_errors: bool = False) -> dict:
    """What the provider says about a target, beside the journal's current release (or none).
    A provider that cannot be asked is UNREACHABLE with its reason (raised instead with
    ``raise_errors``: ``status`` of one target gives the error's own fix and exit code).
    Without a ``journal`` (it is unreadable) the provider's answer is given as it is."""
    current = ctx.current
    dep = state.deployment(ctx.target_name)
    row = {"target": ctx.target_name, "provider": ctx.target.provider,
           "status": DeployState.NOT_DEPLOYED, "release": current.release_id if current else None,
           "url": None, "detail": "", "updated_at": dep.updated_at if dep else None, "extra": {}}
    try:
        live = adapters.get(ctx.target.provider).observe(ctx)
    except MlserveError as exc:
        if raise_errors and current is not None:
            raise
        if current is not None or not journal:
            row.update(status=DeployState.UNREACHABLE, detail=exc.message)
        live = None
    if live is not None:
        row.update(status=live.state, url=live.url, release=live.release or row["release"],
                   detail=live.detail, extra=live.extra)
        if live.state == DeployState.NOT_DEPLOYED and current is not None:
            row.update(status=DeployState.FAILED, detail=f"release {current.release_id} is not "
                       "running (nothing of this deployment was found)")
        elif live.state == DeployState.UNREACHABLE and journal and not ctx.history:
            # nothing recorded and nothing could be asked (an ssh host that is not up yet):
            # not deployed as far as anyone knows, which is what the user needs to read
            row.update(status=DeployState.NOT_DEPLOYED, detail=f"never deployed (the provider "
                       f"could not be asked: {live.detail})")
        elif live.release and journal and (current is None or current.release_id != live.release) \
                and "the journal names" not in live.detail:     # the adapter said it per host
            row["detail"] += (f"; the journal names {current.release_id if current else 'nothing'} "
                              "(an interrupted command; the next deploy records what serves)")
    if journal and current is None and row["status"] == DeployState.NOT_DEPLOYED:
        if dep is not None and dep.status == DeploymentStatus.DELETED:
            row.update(status=DeployState.DELETED, detail="not deployed")
        elif dep is not None:        # its release row was skipped (warned)
            row.update(status=DeployState.UNKNOWN, release=dep.release_id,
                       detail=f"the journal's record of release {dep.release_id} is unreadable")
        elif not row["detail"].startswith("never deployed"):
            row.update(detail="never deployed")
    if row["status"] in (DeployState.NOT_DEPLOYED, DeployState.DELETED):
        row["url"] = None                       # nothing answers there
    row["status"] = DeployState(row["status"]).value
    return row


def _known(project: Project, name: str, options, where: Location) -> dict:
    """What can still be said about a target when a command met a JournalError: with the
    journal if it can still be read (the problem was elsewhere, e.g. a lock), else without."""
    try:
        state = open_state(where, read_only=True)
    except JournalError:
        state = State.empty(where.local_dir)
        ctx = _context(project, name, options, where, Reporter(), state)
        return {**_live_row(ctx, state, journal=False), "journal": False}
    try:
        ctx = _context(project, name, options, where, Reporter(), state)
        return {**_live_row(ctx, state), "journal": True}
    finally:
        state.close()


def _describe(row: dict) -> str:
    """One line for an error message: what the provider says about one target."""
    where = " ".join(str(row[k]) for k in ("url", "release") if row.get(k))
    asked = "" if row.get("journal", True) else ", asked without the journal,"
    return (f"the {row['provider']} provider{asked} says target {row['target']!r} is "
            f"{row['status']}"
            + (f" ({where})" if where else "") + (f": {row['detail']}" if row["detail"] else ""))
