"""``mlserve cost``: what serving the model costs on each catalogued target, per policy.

The figures come from ``mlserve.cost`` (one JSON object: ``--json``; its schema is
``mlserve/schemas/output/cost.json``); here they are drawn: a table of every target and policy,
then one bar chart per policy of the monthly cost, on stdout. Exit 0, or 2 for a broken profile,
an unknown target or a broken catalogue file; 1 when a price list cannot be fetched (--refresh).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .app import JsonOpt, ManifestOpt, StateOpt, app
from .output import RichReporter, emit_json, out, plain, result_line, say, table

_BAR_WIDTH = 40
_POLICY_TITLES = {"always_on": "always on, sized for the peak",
                  "fixed": "fixed conservative capacity",
                  "autoscale": "autoscaling / scale to zero"}


@app.command()
def cost(targets: Annotated[Optional[list[str]], typer.Argument(
            metavar="TARGET", show_default=False,
            help="Catalogue (`aws-ec2`), price row id (`aws-ec2/g5.xlarge/us-east-1`), "
                 "provider (`vm`) or manifest target (priced as its provider). Default: every "
                 "catalogued target.")] = None,
         profile: Annotated[Optional[Path], typer.Option(
            "--profile", metavar="FILE",
            help="Traffic profile (YAML): requests_per_hour (24 or 168 values), "
                 "weekday_factors, seconds_per_request (or `measured`), concurrency, "
                 "fixed_replicas, prices. Default: a small business-hours API.")] = None,
         refresh: Annotated[bool, typer.Option(
            "--refresh", help="First update the catalogues that have a machine-readable price "
                              "list (AWS, Azure, Runpod, Lambda) into MLSERVE_PRICES_DIR.")] = False,
         file: ManifestOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """What serving the model costs on each catalogued target: three policies per target
    (always on for the peak; fixed capacity, with the share of requests it cannot serve;
    autoscaling or scale to zero where the provider can, cold starts counted), every figure
    with the price row (id, date, source) it comes from."""
    from .. import cost as costing
    refreshed: list[dict] = []
    with RichReporter(quiet=as_json) as reporter:
        if refresh:
            from ..cost.refresh import refresh as do_refresh
            refreshed = do_refresh(targets or [], reporter)
        result = costing.estimate(targets or [], profile, file, state, reporter)
    result["refreshed"] = refreshed
    if as_json:
        emit_json(result)
        return
    _show(result)


def _money(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 1 else f"{value:.4f}"


def _show(result: dict[str, Any]) -> None:
    p = result["profile"]
    result_line(f"profile: {plain(p['source'])}; {p['requests_per_week']:,.0f} requests a week, "
                f"peak {p['peak_requests_per_hour']:,.0f}/h, {p['seconds_per_request']:g} s per "
                f"request ({plain(p['seconds_from'])}), {p['concurrency']} at once per replica")
    for target in result["targets"]:
        _target_table(target)
    for policy in _POLICY_TITLES:
        _chart(policy, result["targets"])
    for refreshed in result.get("refreshed", []):
        say(f"refreshed {plain(refreshed['id'])}: {refreshed['before']} -> {refreshed['after']}")
    result_line("[dim]USD; * = price not checked against a stored copy of its source; "
                "`mlserve cost --json` gives every row's date and source URL[/dim]")


def _target_table(target: dict[str, Any]) -> None:
    """One table per target: a row per policy, the price row it all comes from in the title."""
    price = target["price"]
    shown = ("no price" if price["usd"] is None else
             f"{price['usd']:g} USD/{price['per']}" + ("*" if price["unverified"] else "")
             + f" ({price['date']}" + (", from the profile)" if price["from"] == "profile"
                                      else ")"))
    rows = [[f["policy"], _cell(f, "replicas"), _cell(f, "billed_hours", "{:,.1f}"),
             _money(f["weekly_usd"]), _money(f["monthly_usd"]),
             f"{f['unserved_share']:.1%}" if f["available"] else "-",
             _cell(f, "cold_starts", "{:,.1f}")] for f in target["policies"]]
    table(f"{target['id']}: {target['hardware']}, {shown}",
          ["policy", "replicas", "h/week", "week", "month", "unserved", "cold/week"], rows)
    reasons: dict[str, list[str]] = {}
    for fig in target["policies"]:
        if not fig["available"]:
            reasons.setdefault(fig["reason"], []).append(fig["policy"])
    for reason, policies in reasons.items():
        result_line(f"  [dim]{', '.join(policies)}: {plain(reason)}[/dim]")


def _cell(fig: dict, key: str, fmt: str = "{}") -> str:
    value = fig.get(key)
    return "-" if value is None else fmt.format(value)


def _chart(policy: str, targets: list[dict]) -> None:
    """One bar per target of its monthly cost under ``policy``, cheapest first."""
    bars = sorted(((t["id"], f) for t in targets for f in t["policies"]
                   if f["policy"] == policy and f["available"]), key=lambda b: b[1]["monthly_usd"])
    if not bars:
        return
    top = max(f["monthly_usd"] for _, f in bars) or 1.0
    width = max(len(name) for name, _ in bars)
    console = out()
    console.print(f"\n[bold]{_POLICY_TITLES[policy]}[/bold] (USD a month)")
    for name, fig in bars:
        length = fig["monthly_usd"] / top * _BAR_WIDTH
        bar = "█" * int(length) + ("▌" if length - int(length) >= 0.5 else "")
        unserved = (f" [red]{fig['unserved_share']:.0%} unserved[/red]"
                    if fig["unserved_share"] else "")
        console.print(f"{plain(name.ljust(width))} [cyan]{bar or '▏'}[/cyan] "
                      f"{_money(fig['monthly_usd'])}{unserved}")
