"""The journal's side of reconciling SSH hosts after a command was killed half-way.

The hosts reconcile themselves (``host/reconcile.py``: the release of ours that serves on the
public port becomes ``current``; every other process of the deployment is stopped) and report
what serves. Here, on the client, under the journal lock: attempts a killed command left
``pending`` are marked failed, and a release every host serves but the journal does not name
(the deploy was killed after the switch, before the journal heard of it) is recorded as serving
(adopted), so ``rollback`` and ``status`` start from the truth.
"""

from __future__ import annotations

from ...state import FAILED, PENDING, SERVING
from ..base import Context


def settle_pending(ctx: Context, seq: int | None) -> None:
    """Fail the attempts an interrupted command left pending (all but this command's ``seq``)."""
    for rel in ctx.state.releases(ctx.target_name):
        if rel.outcome == PENDING and rel.seq != seq:
            ctx.state.finish_release(rel.seq, FAILED, reason="interrupted: the command was killed")


def adopt(ctx: Context, serving: dict[str, str | None], url: str, seq: int | None) -> None:
    """Record the release every host in ``serving`` (host -> release, as the hosts found after
    reconciling) serves as the journal's current one when the journal names another. Hosts
    that disagree are left as they are (the journal holds one release per target): the deploy
    under way brings them together, and ``status`` shows each host's."""
    found = set(serving.values())
    if len(found) != 1 or None in found:
        return
    live = found.pop()
    current = ctx.state.current(ctx.target_name)
    if current is not None and current.release_id == live:
        return
    rows = [r for r in ctx.state.releases(ctx.target_name, since_deletion=True)
            if r.release_id == live and r.seq != seq]
    if not rows:
        ctx.reporter.warn(f"{live} serves on {', '.join(serving)} but the journal has no record "
                          "of it (deployed with another state directory?)")
        return
    ctx.reporter.warn(f"{live} serves on {', '.join(serving)} but the journal did not say so (an "
                      "interrupted command): recording it as serving")
    ctx.state.finish_release(rows[-1].seq, SERVING, url=url)
    ctx.state.event(ctx.target_name, "adopted", f"{live} was serving after an interrupted command")
