"""The ``ssh`` provider: any Linux host (or fleet) reached over SSH becomes a model endpoint.

Modules: ``connection`` (paramiko: strict host keys, agent or key, bastion, byte counts),
``sync`` (content-addressed files: bundle, runtime library, helper archive), ``remote`` (one
SSH exec per helper operation), ``host/`` (the helper that runs on the host: store, releases,
supervisor, reconciliation) and ``rollout`` (one host's step: ``HostDeploy``). Paramiko is
imported only when an SSH target is used.

Identity: each host keeps this deployment's releases under ``<base_dir>/deployments/<name.target>``
(``ctx.identity``), so ``observe`` asks every host's store and needs no journal; ``delete``
removes that directory on every host, whatever the journal says.

Deploy (``phases.run`` over one ``HostDeploy`` per host): the host is asked which objects it
lacks (one round trip), only those are sent (resuming a partial upload at its size), the release
is assembled from hard links, started beside the old one on a private check port under a
supervisor (systemd when present), checked for health and smoke on the host, then switched onto
the public port (SO_REUSEPORT handover) while the old one drains. Per-host results go to the
result's ``extra["hosts"]``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

from ...errors import MlserveError, ProviderError, missing_extra
from ...vocab import DeployState
from ..base import Adapter, Call, Context, Observed, ReleaseSpec, Resource

READY, PENDING, FAILED, UNREACHABLE = (DeployState.READY, DeployState.PENDING, DeployState.FAILED,
                                       DeployState.UNREACHABLE)


class SSHAdapter(Adapter):
    name = "ssh"

    def check(self, ctx: Context) -> None:
        try:
            import paramiko  # noqa: F401
        except ImportError:
            raise missing_extra("ssh", "paramiko") from None

    # -- deploy ----------------------------------------------------------------------------
    def steps(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> list:
        from .connection import HostSpec
        from .rollout import HostDeploy
        from .sync import plan_for
        plan = plan_for(release.bundle)
        # What each host serves, as observed; a host that could not be asked is taken to serve
        # the journal's current release until it says otherwise (its probe, in prepare).
        fallback = ctx.current.release_id if ctx.current else None
        before = {row["host"]: row["release"] if row["status"] != UNREACHABLE else fallback
                  for row in observed.extra.get("hosts", [])}
        return [HostDeploy(ctx, spec, plan, release.release_id, release.snapshot,
                           release.bundle is not None, before.get(spec.label, fallback))
                for spec in map(HostSpec.parse, ctx.target.hosts)]

    def outcome(self, ctx: Context, steps: list, results: list) -> dict:
        """Per host: the step's result with what the host said and what was sent; in total."""
        transfers = [s.transfer() for s in steps]
        for res, step, transfer in zip(results, steps, transfers):
            res.info.update(step.info, transfer=transfer)
        total = {k: sum(t[k] for t in transfers) for k in transfers[0]}
        return {"hosts": [r.to_dict() for r in results], "transfer": total,
                "deployment": ctx.identity}

    # -- what is there -----------------------------------------------------------------------
    def _each_host(self, ctx: Context, op: str, request: dict) -> list[tuple[str, Any]]:
        """``(host, result or MlserveError)`` for ``op`` on every host, in parallel."""
        from ..phases import parallel
        from .connection import HostSpec
        from .rollout import base_request, session

        def one(host: str):
            spec = HostSpec.parse(host)
            try:
                with session(ctx, spec) as agent:
                    return spec.label, agent.call(op, {**base_request(ctx, spec), **request})
            except MlserveError as exc:
                return spec.label, exc
        return parallel(one, ctx.target.hosts, ctx.target.max_parallel)

    def observe(self, ctx: Context) -> Observed:
        """Per host, read-only: the release of this deployment that answers ``/health`` on the
        port from a process of ours, found in the host's store (flagged when the journal's
        current release, ``ctx.current``, is another: an interrupted command)."""
        from .connection import HostSpec
        from .rollout import host_url
        url = host_url(ctx, HostSpec.parse(ctx.target.hosts[0]))
        rows = [_host_row(host, result, ctx.current)
                for host, result in self._each_host(ctx, "status", {})]
        present = [r for r in rows if r.pop("present", False) or r["release"]]
        if all(r["status"] == UNREACHABLE for r in rows):
            return Observed(UNREACHABLE, None, url, [], rows[0]["reason"], extra={"hosts": rows})
        if not present:
            return Observed(DeployState.NOT_DEPLOYED, None, url, [], "not deployed",
                            extra={"hosts": rows})
        resources = [Resource("host-release", f"{r['host']}:{r['release'] or '-'}", r["release"],
                              r["status"], r["status"] == READY, r["reason"] or "")
                     for r in present]
        states = [r["status"] for r in rows]
        ready = states.count(READY)
        overall = READY if ready == len(states) else (FAILED if FAILED in states else PENDING)
        releases = {r["release"] for r in rows if r["release"]}
        mismatch = sorted({r["host"] for r in rows if r.get("journal_differs")})
        current = ctx.current.release_id if ctx.current else None
        detail = (f"{ready}/{len(states)} host(s) ready"
                  + ("" if len(releases) <= 1 else "; hosts serve different releases")
                  + ("" if not mismatch else
                     f"; the journal names {current or 'nothing'} but {', '.join(mismatch)} "
                     "serve(s) another release (an interrupted command; the next deploy records "
                     "what serves)"))
        return Observed(overall, releases.pop() if len(releases) == 1 else None, url, resources,
                        detail, extra={"hosts": rows})

    def caller(self, ctx: Context, observed: Observed) -> Call:
        """Ask the hosts in order; one that cannot be reached, or whose model does not answer,
        is skipped with a warning. Credential and host-key problems are not skipped. A host's
        session (one SSH connection, one helper process) is kept for the next call, so a
        caller sending many inputs (``migrate``) pays the SSH handshake once; ``call.close()``
        ends the sessions (else they end with the process)."""
        from .connection import HostSpec
        from .remote import Agent, HostFailure
        from .rollout import base_request, open_connection
        from .sync import helper_archive
        specs = [HostSpec.parse(h) for h in ctx.target.hosts]
        agents: dict[str, Agent] = {}

        def agent(spec) -> Agent:
            if spec.label not in agents:
                agents[spec.label] = Agent(open_connection(ctx, spec), ctx.target,
                                           ctx.target_name, helper_archive())
            return agents[spec.label]

        def close() -> None:
            while agents:
                agents.popitem()[1].conn.close()

        def call(payload):
            for n, spec in enumerate(specs):
                try:
                    result = agent(spec).call("predict", {**base_request(ctx, spec), "input": payload},
                                              timeout=330)
                    return result["status"], result["body"]
                except (ProviderError, HostFailure) as exc:
                    dropped = agents.pop(spec.label, None)
                    if dropped is not None:
                        dropped.conn.close()
                    if n == len(specs) - 1:
                        raise
                    ctx.reporter.warn(f"{exc.message}; asking {specs[n + 1].label}")
            raise AssertionError("unreachable: a target has at least one host")
        call.close = close
        return call

    def logs(self, ctx: Context, observed: Observed, *, follow: bool, lines: int) -> Iterator[str]:
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
    def delete(self, ctx: Context, observed: Observed) -> None:
        """Remove the deployment's store directory (and every process of it) on every host,
        whatever ``observed`` found there: a host that was down when observed is cleaned too."""
        failures = [(h, r) for h, r in self._each_host(ctx, "delete", {})
                    if isinstance(r, MlserveError)]
        if failures:
            raise ProviderError(
                f"could not clean up {len(failures)} of {len(ctx.target.hosts)} host(s)",
                fix="fix the connection and run `mlserve delete` again (hosts already cleaned are "
                    "skipped quickly)",
                details="\n".join(f"  {h}: {r.message}" for h, r in failures))


def _host_row(host: str, result, release) -> dict:
    """One host's status row: ``release`` is what /health answers from a process of ours
    (``answering``: what /health names, whoever answers), else the host's ``current``."""
    if isinstance(result, MlserveError):
        return {"host": host, "status": "UNREACHABLE", "release": None, "reason": result.message}
    cur = result["current"]
    present = bool(result.get("present"))
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
           "current": cur["release"], "pid": cur.get("pid"), "reason": reason, "log": cur.get("log"),
           "present": present}
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
