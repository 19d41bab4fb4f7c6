"""The ``ssh`` provider: any Linux host (or fleet) reached over SSH becomes a model endpoint.

Modules: ``connection`` (paramiko: strict host keys, agent or key, bastion, byte counts),
``sync`` (content-addressed files: bundle, runtime library, helper archive), ``remote`` (one
SSH exec per helper operation), ``host/`` (the helper that runs on the host: store, releases,
supervisor), ``rollout`` (one host's deploy) and ``fleet`` (checked everywhere, then switched
in waves). Paramiko is imported only when an SSH target is used.

Deploy: the host is asked which objects it lacks (one round trip), only those are sent
(resuming a partial upload at its size), the release is assembled from hard links, started
beside the old one on a private check port under a supervisor (systemd when present), checked
for health and smoke on the host, then switched onto the public port (SO_REUSEPORT handover)
while the old one drains. Per-host results go to ``Outcome.extra["hosts"]``.

A command killed half-way: ``deploy``, ``rollback`` and ``delete`` first reconcile every host
(``host/reconcile.py``: the release of ours listening on the port becomes ``current``, every other
process of the deployment is stopped) and the journal (``journal``: pending attempts fail, what
every host serves is adopted). ``status`` is read-only and reports, per host, the release whose
process answers ``/health`` on the port, flagging a difference from the journal.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

from ...errors import MlserveError, ProviderError, missing_extra
from ...state import Release
from ..base import DELETED, FAILED, PENDING, READY, Context, Outcome, Provider, Status


class SSHProvider(Provider):
    name = "ssh"
    unsupported = {}

    def check(self, ctx: Context) -> None:
        try:
            import paramiko  # noqa: F401
        except ImportError:
            raise missing_extra("ssh", "paramiko") from None

    def package(self, ctx: Context):
        from ...bundle import collect, state_ignores
        return collect(ctx.project.root, extra_ignores=state_ignores(ctx.project.root, ctx.state.dir))

    def deploy(self, ctx: Context, bundle, seq: int) -> Outcome:
        from .journal import settle_pending
        from .rollout import rollout
        from .sync import plan_for
        settle_pending(ctx, seq)
        snapshot = ctx.manifest.model_dump(mode="json")
        return rollout(ctx, plan_for(bundle), bundle.release_id, snapshot, True, seq)

    def rollback(self, ctx: Context, release: Release, seq: int) -> Outcome:
        from .journal import settle_pending
        from .rollout import rollout
        from .sync import plan_for
        settle_pending(ctx, seq)
        return rollout(ctx, plan_for(None), release.release_id, release.manifest, False, seq)

    # -- inspection ------------------------------------------------------------------------
    def _each_host(self, ctx: Context, op: str, request: dict) -> list[tuple[str, Any]]:
        """``(host, result or MlserveError)`` for ``op`` on every host, in parallel."""
        from .connection import HostSpec
        from .fleet import parallel
        from .rollout import base_request, session

        def one(host: str):
            spec = HostSpec.parse(host)
            try:
                with session(ctx, spec) as agent:
                    return spec.label, agent.call(op, {**base_request(ctx, spec), **request})
            except MlserveError as exc:
                return spec.label, exc
        return parallel(one, ctx.target.hosts, ctx.target.max_parallel)

    def status(self, ctx: Context, release: Release | None) -> Status:
        """Per host, read-only: the release that answers ``/health`` on the port from a process
        of this deployment (not only that something answers), flagged when the journal names
        another (an interrupted command; the next deploy adopts it)."""
        from .connection import HostSpec
        from .rollout import host_url
        if release is None and not ctx.state.releases(ctx.target_name, since_deletion=True):
            return Status(DELETED, detail="not deployed")   # no attempt since: nothing to ask
        rows = [_host_row(host, result, release)
                for host, result in self._each_host(ctx, "status", {})]
        if release is None and not any(r["release"] for r in rows):
            return Status(DELETED, detail="not deployed")
        states = [r["status"] for r in rows]
        ready = states.count(READY)
        overall = READY if ready == len(states) else (FAILED if FAILED in states else PENDING)
        releases = {r["release"] for r in rows if r["release"]}
        mismatch = sorted({r["host"] for r in rows if r.get("journal_differs")})
        detail = (f"{ready}/{len(states)} host(s) ready"
                  + ("" if len(releases) <= 1 else "; hosts serve different releases")
                  + ("" if not mismatch else
                     f"; the journal names {release.release_id if release else 'nothing'} but "
                     f"{', '.join(mismatch)} serve(s) another release (an interrupted command; "
                     "the next deploy records what serves)"))
        return Status(overall, url=host_url(ctx, HostSpec.parse(ctx.target.hosts[0])),
                      release_id=releases.pop() if len(releases) == 1 else
                      (release.release_id if release else None),
                      detail=detail, extra={"hosts": rows})

    def predict(self, ctx: Context, release: Release, payload: Any) -> Any:
        """Ask the hosts in order; one that cannot be reached, or whose model does not answer,
        is skipped with a warning. Credential and host-key problems are not skipped."""
        from .connection import HostSpec
        from .remote import HostFailure
        from .rollout import base_request, session
        specs = [HostSpec.parse(h) for h in ctx.target.hosts]
        for n, spec in enumerate(specs):
            try:
                with session(ctx, spec) as agent:
                    result = agent.call("predict", {**base_request(ctx, spec), "input": payload},
                                        timeout=330)
                return result["status"], result["body"]
            except (ProviderError, HostFailure) as exc:
                if n == len(specs) - 1:
                    raise
                ctx.reporter.warn(f"{exc.message}; asking {specs[n + 1].label}")
        raise AssertionError("unreachable: a target has at least one host")

    def logs(self, ctx: Context, release: Release, *, follow: bool, lines: int) -> Iterator[str]:
        from .connection import HostSpec
        from .rollout import base_request, session
        specs = [HostSpec.parse(h) for h in ctx.target.hosts]
        request = {"lines": lines, "follow": follow}
        if len(specs) == 1:
            with session(ctx, specs[0]) as agent:
                yield from agent.lines("logs", {**base_request(ctx, specs[0]), **request})
            return
        yield from _merged(ctx, specs, request)

    # -- removal ---------------------------------------------------------------------------
    def delete(self, ctx: Context, releases: list[Release]) -> None:
        from .journal import settle_pending
        settle_pending(ctx, None)
        failures = [(h, r) for h, r in self._each_host(ctx, "delete", {})
                    if isinstance(r, MlserveError)]
        if failures:
            raise ProviderError(
                f"could not clean up {len(failures)} of {len(ctx.target.hosts)} host(s)",
                fix="fix the connection and run `mlserve delete` again (hosts already cleaned are "
                    "skipped quickly)",
                details="\n".join(f"  {h}: {r.message}" for h, r in failures))


def _host_row(host: str, result, release: Release | None) -> dict:
    """One host's status row: ``release`` is what /health answers from a process of ours
    (``answering``: what /health names, whoever answers), else the host's ``current``."""
    if isinstance(result, MlserveError):
        return {"host": host, "status": "UNREACHABLE", "release": None, "reason": result.message}
    cur = result["current"]
    serving = cur.get("serving")
    if cur.get("ours") or cur.get("healthy"):
        state, reason = READY, None
    else:
        state = PENDING if cur["alive"] else FAILED
        reason = "not answering /health" if cur["alive"] else "not running"
        if cur.get("answering"):
            reason = f"/health on the port names {cur['answering']}, not a release of this deployment"
    # Two releases of ours listen while a handover is cut short: /health says which answered.
    shown = cur["answering"] if cur.get("ours") else (serving or cur["release"])
    row = {"host": host, "status": state, "release": shown, "answering": cur.get("answering"),
           "current": cur["release"], "pid": cur.get("pid"), "reason": reason, "log": cur.get("log")}
    if shown and (release is None or release.release_id != shown):
        row["journal_differs"] = True
    return row


def _merged(ctx: Context, specs, request: dict) -> Iterator[str]:
    """Every host's log lines, prefixed with the host, as they arrive."""
    from .rollout import base_request, session
    lines: queue.Queue = queue.Queue()
    done = object()

    def pump(spec) -> None:
        try:
            with session(ctx, spec) as agent:
                for line in agent.lines("logs", {**base_request(ctx, spec), **request}):
                    lines.put(f"[{spec.label}] {line}")
        except MlserveError as exc:
            lines.put(f"[{spec.label}] mlserve: {exc.message}")
        finally:
            lines.put(done)

    for spec in specs:
        threading.Thread(target=pump, args=(spec,), daemon=True).start()
    remaining = len(specs)
    while remaining:
        item = lines.get()
        if item is done:
            remaining -= 1
        else:
            yield item
