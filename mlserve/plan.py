"""``mlserve plan``: what ``deploy`` would do to a target, and why, with no side effects.

``plan(manifest=None, target=None, state_dir=None, reporter=None) -> dict`` (the CLI and
``migrate --dry-run`` call it; the signature is stable). Keys: ``target``, ``provider``,
``action``, ``reasons``, ``release``, ``current``, ``changes``, ``drift``, ``live`` (what the
provider said: ``{state, release, url, detail}``), ``warnings`` (unreadable journal rows) and
``calls`` (the provider API calls a deploy would make, in order, for adapters that say:
``planned_calls(options, manifest, action, live)``; empty for the others):

- ``action``: ``Action.CREATE`` when neither the journal nor the provider knows a release of the
  target, ``Action.NONE`` when the project matches the journal's current release and the provider
  serves it, else ``Action.UPDATE``; ``reasons`` say why in words.
- ``changes``: ``[{kind, subject, before, after}]`` between the journal's current release and the
  project now (``ChangeKind``): files added, changed, removed (``{sha256: 12 hex, size,
  executable}``); requirement lines added or removed; every changed field of ``model``,
  ``resources``, ``scaling`` and the target's options (dotted paths); env names (values
  shortened) and secret names (never values: they are not read). A release recorded before the
  journal kept file lists (schema 1) gives one ``files-unknown`` change when its content differs.
  The manifest's ``smoke`` cases are checks, not behaviour, and are not compared.
- ``drift``: what the provider serves against what the journal says (``DriftKind``): nothing
  answers while the journal says a release serves, a release serves that is not the journal's
  current one, it serves but not everywhere (some hosts), or the provider could not be asked
  (its reason: the plan still exits 0).
- ``release``: the release id a deploy would create; ``current``: the journal's.

Read-only for real: the journal is opened for reading (absent: empty; damaged: the same
``JournalError`` as ``status``, exit 1), the project is only read, the provider only asked.
Invalid input (manifest errors, an unknown target, a provider that cannot deploy or a feature it
lacks) is the usual exit 2, raised before anything is asked of the provider.
"""

from __future__ import annotations

import enum
from collections import Counter
from pathlib import Path
from typing import Any

from . import adapters, service
from .bundle import Bundle, collect, state_ignores
from .errors import MlserveError
from .journal_file import JournalError
from .manifest import Manifest, Project, load_project
from .report import Reporter
from .journal import open_state
from .session import journal_location
from .state import Release, file_list, requirements_of
from .vocab import Action, DeployState

__all__ = ["plan", "ChangeKind", "DriftKind"]

#: Longest env value shown in a change (values are not secret, but a plan stays short).
SHOWN_VALUE = 40
#: Manifest sections compared field by field (dotted paths), and the change kind of each.
SECTIONS = ("model", "resources", "scaling")


class ChangeKind(str, enum.Enum):
    """One kind of difference between the journal's current release and the project."""

    FILE_ADDED = "file-added"
    FILE_CHANGED = "file-changed"
    FILE_REMOVED = "file-removed"
    FILES_UNKNOWN = "files-unknown"        # the release predates file lists: content differs
    REQUIREMENT_ADDED = "requirement-added"
    REQUIREMENT_REMOVED = "requirement-removed"
    MODEL = "model"
    RESOURCES = "resources"
    SCALING = "scaling"
    ENV = "env"
    SECRET_ADDED = "secret-added"
    SECRET_REMOVED = "secret-removed"
    TARGET = "target"
    NAME = "name"

    def __str__(self) -> str:
        return self.value


class DriftKind(str, enum.Enum):
    """How what the provider serves departs from the journal."""

    NOT_SERVING = "not-serving"            # the journal says a release serves; nothing answers
    UNKNOWN_RELEASE = "unknown-release"    # a release serves that the journal does not name
    DEGRADED = "degraded"                  # it serves, but not everywhere (some hosts)
    UNREACHABLE = "unreachable"            # the provider could not be asked

    def __str__(self) -> str:
        return self.value


def plan(manifest: str | Path | None = None, target: str | None = None,
         state_dir: str | Path | None = None, reporter: Reporter | None = None) -> dict:
    """What ``deploy`` would do to ``target`` (see the module docstring)."""
    project = load_project(manifest)
    name, options = project.target(target)
    adapter = adapters.get(options.provider)            # a build-only provider: exit 2
    where = journal_location(project, state_dir)
    current, history, warnings = _journal_side(manifest, target, state_dir, name, where)
    bundle = collect(project.root, extra_ignores=state_ignores(project.root, where.local_dir))
    release_id = _release_id(project, bundle)
    changes = (_created(project, bundle) if current is None
               else _changes(project, name, options, current, history, bundle))
    for warning in warnings:
        (reporter or Reporter()).warn(warning)
    live = _observe(manifest, target, state_dir)
    drift = _drift(current, live)
    action, reasons = _action(current, release_id, changes, drift, live)
    planned = getattr(adapter, "planned_calls", None)     # providers whose deploy is API calls
    return {"target": name, "provider": options.provider, "action": action.value,
            "reasons": reasons, "release": release_id,
            "current": current.release_id if current else None,
            "changes": changes, "drift": drift, "live": live, "warnings": warnings,
            "calls": planned(options, project.manifest, action, live) if planned else []}


def _journal_side(manifest, target, state_dir, name: str,
                  where) -> tuple[Release | None, list[Release], list[str]]:
    """The journal's current release of ``name``, its history and the journal's warnings. A
    journal that cannot be used fails as ``status`` fails (the same error, with what the
    provider still says)."""
    try:
        state = open_state(where, read_only=True)
    except JournalError:
        service.status(manifest, target, state_dir, Reporter())    # raises it, with `known`
        raise
    try:
        current = state.current(name)
        history = state.releases(name)
        return current, history, list(state.warnings)
    finally:
        state.close()


def _release_id(project, bundle: Bundle) -> str:
    """The model version's id, as deploy computes it (``mlserve.release`` once it exists)."""
    try:
        from .release import release_id
    except ImportError:
        return bundle.release_id
    return release_id(project, bundle)


# -- changes ------------------------------------------------------------------------------------

def _change(kind: ChangeKind, subject: str | None, before: Any, after: Any) -> dict:
    return {"kind": kind.value, "subject": subject, "before": before, "after": after}


def _changes(project: Project, name: str, options, current: Release, history: list[Release],
             bundle: Bundle) -> list[dict]:
    """Every change from ``current`` to the project now. The journal's snapshot is whatever the
    journal holds: a section of the wrong shape compares as empty, never crashes."""
    before = _normalised(current.manifest)
    after = project.manifest.model_dump(mode="json")
    changes = _file_changes(history, current, bundle)
    changes += _requirement_changes(project, current, before)
    if before.get("name") != after.get("name"):
        changes.append(_change(ChangeKind.NAME, "name", before.get("name"), after.get("name")))
    for section in SECTIONS:
        old, new = _dict(before.get(section)), after[section]
        if section == "model":      # requirements: compared as lines above
            old, new = _without(old, "requirements"), _without(new, "requirements")
        changes += [_change(ChangeKind(section), f"{section}.{path}", a, b)
                    for path, a, b in _field_diff(old, new)]
    changes += _env_changes(_dict(before.get("env")), after["env"])
    old_secrets, new_secrets = set(_strings(before.get("secrets"))), set(after["secrets"])
    changes += [_change(ChangeKind.SECRET_ADDED, n, None, n) for n in sorted(new_secrets - old_secrets)]
    changes += [_change(ChangeKind.SECRET_REMOVED, n, n, None) for n in sorted(old_secrets - new_secrets)]
    old_target = _dict(_dict(before.get("targets")).get(name))
    changes += [_change(ChangeKind.TARGET, f"target.{path}", a, b)
                for path, a, b in _field_diff(old_target, options.model_dump(mode="json"))]
    return changes


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _created(project: Project, bundle: Bundle) -> list[dict]:
    """A first deploy: every file and requirement line is added."""
    files = [_change(ChangeKind.FILE_ADDED, path, None, _file_view(entry))
             for path, entry in file_list(bundle).items()]
    lines = _meaningful(requirements_of(project.root, project.manifest.model.requirements) or [])
    return files + [_change(ChangeKind.REQUIREMENT_ADDED, line, None, line) for line in lines]


def _normalised(snapshot: dict) -> dict:
    """A journal snapshot with today's defaults filled in (a field added since it was recorded
    is not a change); as recorded when it no longer validates."""
    try:
        return Manifest.model_validate(snapshot).model_dump(mode="json")
    except (ValueError, TypeError):
        return snapshot


def _without(section: dict, key: str) -> dict:
    return {k: v for k, v in section.items() if k != key}


def _field_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, before, after) for every leaf that differs; lists are leaves."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _field_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _file_changes(history: list[Release], current: Release, bundle: Bundle) -> list[dict]:
    new = file_list(bundle)
    old = _recorded_files(history, current)
    if old is None:
        if current.bundle_hash == bundle.content_hash:
            return []
        return [_change(ChangeKind.FILES_UNKNOWN, None,
                        "unknown (release recorded before mlserve kept file lists)",
                        f"{len(new)} files")]
    changes = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        kind = (ChangeKind.FILE_ADDED if a is None else ChangeKind.FILE_REMOVED if b is None
                else ChangeKind.FILE_CHANGED)
        changes.append(_change(kind, path, _file_view(a), _file_view(b)))
    return changes


def _recorded_files(history: list[Release], current: Release) -> dict | None:
    """The current release's file list, or that of an earlier row of the same content (a
    rollback's row may not carry one)."""
    if current.files is not None:
        return current.files
    return next((r.files for r in reversed(history)
                 if r.files is not None and r.bundle_hash == current.bundle_hash), None)


def _file_view(entry: tuple[str, bool, int] | None) -> dict | None:
    if entry is None:
        return None
    digest, executable, size = entry
    return {"sha256": digest[:12], "size": size, "executable": executable}


def _requirement_changes(project: Project, current: Release, before: dict) -> list[dict]:
    old = current.requirements
    recorded = _dict(before.get("model")).get("requirements")
    if old is None and isinstance(recorded, list):     # a schema 1 row: the manifest's own list
        old = _strings(recorded)
    new = requirements_of(project.root, project.manifest.model.requirements)
    if old is None or new is None:
        return []          # unknown: a changed requirements file shows among the files
    old_count, new_count = Counter(_meaningful(old)), Counter(_meaningful(new))
    return ([_change(ChangeKind.REQUIREMENT_ADDED, line, None, line)
             for line in sorted((new_count - old_count).elements())]
            + [_change(ChangeKind.REQUIREMENT_REMOVED, line, line, None)
               for line in sorted((old_count - new_count).elements())])


def _meaningful(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _env_changes(old: dict, new: dict) -> list[dict]:
    return [_change(ChangeKind.ENV, name, _short(old.get(name)), _short(new.get(name)))
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > SHOWN_VALUE:
        return value[:SHOWN_VALUE - 1] + "…"
    return value


# -- live ---------------------------------------------------------------------------------------

def _observe(manifest, target, state_dir) -> dict:
    """What the provider says now: ``{state, release, url, detail}`` (read-only). A provider
    that cannot be asked is a finding of the plan, not its failure; a journal problem is."""
    try:
        seen = service.observe(manifest, target, state_dir)
    except JournalError:
        raise
    except MlserveError as exc:
        return {"state": DeployState.UNREACHABLE.value, "release": None, "url": None,
                "detail": exc.message}
    state = DeployState(seen.state)
    serving = state in (DeployState.READY, DeployState.DEGRADED)    # PENDING answers nothing yet
    hosts = [h for h in (seen.extra or {}).get("hosts", []) if isinstance(h, dict)
             and h.get("status") != DeployState.READY and h.get("reason")]
    why = "; ".join(f"{h['reason']}" for h in hosts[:3]) + ("; ..." if len(hosts) > 3 else "")
    return {"state": state.value, "release": seen.release if serving else None, "url": seen.url,
            "detail": "; ".join(filter(None, [seen.detail, why]))}


def _drift(current: Release | None, live: dict) -> list[dict]:
    state, serving = live["state"], live["release"]
    if state == DeployState.UNREACHABLE:
        return [{"kind": DriftKind.UNREACHABLE.value, "journal": _id(current), "live": None,
                 "detail": live["detail"]}]
    if current is not None and serving is None:
        return [{"kind": DriftKind.NOT_SERVING.value, "journal": current.release_id, "live": None,
                 "detail": f"the journal says {current.release_id} serves; the provider says "
                           f"{state}" + (f" ({live['detail']})" if live["detail"] else "")}]
    if state == DeployState.DEGRADED:
        return [{"kind": DriftKind.DEGRADED.value, "journal": _id(current), "live": serving,
                 "detail": live["detail"] or "some of the target's hosts do not serve"}]
    if serving is not None and serving != _id(current):
        known = f"the journal's current release is {current.release_id}" if current \
            else "the journal records no release"
        return [{"kind": DriftKind.UNKNOWN_RELEASE.value, "journal": _id(current),
                 "live": serving, "detail": f"{serving} serves; {known}"}]
    return []


def _id(release: Release | None) -> str | None:
    return release.release_id if release else None


_DRIFT_REASON = {DriftKind.NOT_SERVING: "nothing serves {journal} (drift)",
                 DriftKind.UNKNOWN_RELEASE: "{live} serves instead (drift)",
                 DriftKind.DEGRADED: "{journal} does not serve everywhere (drift)"}


def _action(current: Release | None, release_id: str, changes: list, drift: list,
            live: dict) -> tuple[Action, list[str]]:
    if current is None and live["release"] is None:
        return Action.CREATE, [f"nothing is deployed: {release_id} would be created"]
    reasons = []
    if current is None:             # something serves that the journal does not record
        reasons.append("the journal records no release of this target")
    elif changes:
        reasons.append(f"{len(changes)} change(s) since {current.release_id}")
    elif current is not None and current.release_id != release_id:
        reasons.append(f"the release id changes: {current.release_id} -> {release_id}")
    reasons += [_DRIFT_REASON[d["kind"]].format(**d) for d in drift
                if d["kind"] != DriftKind.UNREACHABLE]
    if not reasons:
        return Action.NONE, [f"{release_id} already serves"]
    return Action.UPDATE, reasons
