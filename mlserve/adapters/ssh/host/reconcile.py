"""What of one deployment really runs on this host, and making ``current`` agree with it (runs
on the host).

A deploy killed half-way (kill -9 of ``mlserve deploy``, a dropped connection) can leave: a
release switched onto the public port while ``current`` or the client's journal still names the
old one, an old release never told to drain, or a release started beside the old one on its
check port and never switched. ``reconcile`` runs first in every command that changes the host
(``probe`` of deploy and rollback, ``prepare``, ``delete``); ``observe`` is its read-only half,
for ``status``.

Which processes are this deployment's, provably (pid *and* start time, so never a stranger):

- every runtime: its argv names its release's app directory under this deployment's
  ``releases/`` (``procs.find_runners``), as does a supervisor started by systemd (``supervise
  <release dir>``);
- a supervisor forked from the helper (setsid mode) carries the helper's argv, so it is found by
  the record it writes before anything else, ``run.json``'s ``supervisor`` [pid, start time],
  and as the parent of a runtime of ours (the runtime dies with its supervisor, so its parent is
  always its supervisor). A supervisor killed before it wrote that record never got its spec and
  ends itself (``supervisor.FIFO_WAIT``).

Which release serves: the one with a runtime *listening* on the public port (an unactivated
release only binds it); if several do (a handover cut short), the one ``/health`` names.
"""

from __future__ import annotations

import time

from mlserve.adapters.procs import ProcessRef, find_runners, listening_pids, stop_process
from mlserve.checks import http_json

from .store import read_json


def processes(dep) -> dict[str, dict[str, list[ProcessRef]]]:
    """release id -> {"supervisors": [...], "runtimes": [...]}, live processes only."""
    found: dict[str, dict[str, dict[int, ProcessRef]]] = {}

    def add(release: str, role: str, ref: ProcessRef) -> None:
        found.setdefault(release, {"supervisors": {}, "runtimes": {}})[role][ref.pid] = ref

    if not dep.releases.is_dir():
        return {}
    for runner in find_runners(dep.releases):
        if runner.role == "supervisor":
            add(runner.release, "supervisors", runner.ref)
            continue
        add(runner.release, "runtimes", runner.ref)
        parent = ProcessRef.of(runner.parent)
        if runner.parent > 1 and parent.start is not None:
            add(runner.release, "supervisors", parent)
    for rel in dep.releases.iterdir():
        record = read_json(rel / "run.json").get("supervisor")
        if record and (ref := ProcessRef(*record)).alive():
            add(rel.name, "supervisors", ref)
    return {rid: {role: list(refs.values()) for role, refs in roles.items()}
            for rid, roles in found.items()}


def answering(url: str) -> str | None:
    """The release ``/health`` on the public port names (None: nothing, or not an mlserve runtime)."""
    try:
        code, body = http_json("GET", url + "/health", timeout=2)
    except OSError:
        return None
    return body.get("release") if code == 200 and isinstance(body, dict) else None


def observe(dep, url: str, port: int) -> dict:
    """Read-only: what runs, what listens on ``port``, what ``/health`` names, which serves."""
    procs = processes(dep)
    listening = {rid for rid, roles in procs.items()
                 if listening_pids([r.pid for r in roles["runtimes"]], port)}
    live = answering(url)
    current = dep.current()
    if current in listening:
        serving = current
    elif listening:
        serving = live if live in listening else max(listening, key=lambda r: _activated(dep, r))
    else:
        serving = None
    return {"processes": procs, "listening": sorted(listening), "answering": live,
            "ours": live in listening, "serving": serving, "current": current}


def reconcile(dep, url: str, port: int) -> dict:
    """Adopt the release of ours that serves on ``port`` as ``current`` when it is not, and
    stop every other process of the deployment (unactivated leftovers, old releases that were
    never told to drain). A ``current`` that runs but does not listen (restarting, loading) is
    kept when nothing else of ours serves. Returns what was adopted and stopped."""
    seen = observe(dep, url, port)
    current, serving = seen["current"], seen["serving"]
    adopted = None
    if serving is not None and serving != current:
        dep.set_current(serving)
        adopted = serving
    keep = serving or current
    stopped = []
    for rid, roles in seen["processes"].items():
        if rid == keep:
            continue
        stop_refs(roles, grace=10)
        stopped.append(rid)
    return {"adopted": adopted, "stopped": stopped, "serving": serving,
            "answering": seen["answering"]}


def stop_refs(roles: dict[str, list[ProcessRef]], grace: float) -> None:
    """Supervisors first (each passes SIGTERM on to its runtime, which drains), then any
    runtime still there."""
    for ref in roles["supervisors"] + roles["runtimes"]:
        stop_process(ref, None, grace)


def _activated(dep, release: str) -> float:
    path = dep.release(release)
    return read_json(path / "release.json").get("activated") or _mtime(path / "runtime.log")


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
