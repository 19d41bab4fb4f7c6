"""``mlserve cost``: what serving this model costs on each catalogued target, per policy.

``estimate(...)`` joins the traffic profile (``profile``) with the price rows TARGETs name
(``catalogue``) through the three policies (``policies``) and returns one JSON-ready object
(its JSON Schema: ``mlserve/schemas/output/cost.json``). Every figure carries the id, date and
source of the price row it came from (or the profile, for a price the profile gives).
Read only: nothing is written (``--refresh`` is ``refresh.refresh``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import InvalidInput
from . import catalogue, profile as profiles
from .policies import Load, figures, Figure, POLICIES

__all__ = ["estimate", "POLICIES"]


def estimate(targets: list[str], profile_path: Optional[Path] = None, manifest=None,
             state_dir=None, reporter=None) -> dict[str, Any]:
    traffic, shown_as = profiles.load(profile_path)
    files = catalogue.load()
    _check_prices(traffic, shown_as, files)
    rows = catalogue.select(files, _manifest_targets(files, targets, manifest))
    seconds, seconds_from = _seconds(traffic, manifest, state_dir, reporter)
    load = Load(tuple(traffic.week()), seconds, traffic.concurrency, traffic.fixed_replicas)
    used = {f.catalogue: f for f, _ in rows}
    return {
        "currency": "USD",
        "month_hours": 730,
        "profile": {
            "source": shown_as, "requests_per_week": round(sum(load.week), 6),
            "peak_requests_per_hour": max(load.week), "seconds_per_request": seconds,
            "seconds_from": seconds_from, "concurrency": load.concurrency,
            "fixed_replicas": load.fixed_replicas,
        },
        "targets": [_target(f, row, load, traffic) for f, row in rows],
        "catalogues": [{"name": f.catalogue, "title": f.title, "checked": f.checked,
                        "refresh": f.refresh} for f in used.values()],
    }


def _check_prices(traffic: profiles.Profile, shown_as: str, files: dict) -> None:
    """A price the profile gives for nothing catalogued is a typo that would silently not apply."""
    names = set(files) | {r.id for f in files.values() for r in f.rows}
    unknown = sorted(set(traffic.prices) - names)
    if unknown:
        from ..strict import shown
        raise InvalidInput(f"{shown_as}: prices names {', '.join(shown(u) for u in unknown)}, "
                           "which is no catalogued row or catalogue",
                           fix="use a row id or a catalogue name (`mlserve cost --json` lists "
                               "them), e.g. `prices: {local/this-machine: 0.05}`")


def _manifest_targets(files: dict, targets: list[str], manifest) -> list[str]:
    """TARGETs with each manifest target name the catalogue does not know replaced by its
    provider (a target `gpu-box` of provider `ssh` is priced as `ssh`). The manifest is read only
    when a name is unknown; without `-f` and with no manifest around, names stay as given."""
    known = ({f.catalogue for f in files.values()} | {r.id for f in files.values() for r in f.rows}
             | {f.provider for f in files.values() if f.provider})
    if all(t in known or any(r.startswith(f"{t}/") for r in known) for t in targets):
        return targets
    from ..errors import MlserveError
    from ..manifest import load_project
    try:
        declared = load_project(manifest).manifest.targets
    except MlserveError:
        if manifest is not None:
            raise
        return targets
    return [declared[t].provider if t not in known and t in declared else t for t in targets]


def _target(file: catalogue.PriceFile, row: catalogue.PriceRow, load: Load,
            traffic: profiles.Profile) -> dict[str, Any]:
    given = traffic.prices.get(row.id, traffic.prices.get(file.catalogue))
    usd = given if given is not None else row.usd
    price = {"id": row.id, "usd": usd, "per": row.kind.value, "date": row.date,
             "source": row.source, "unverified": row.unverified,
             "from": "profile" if given is not None else "catalogue"}
    if usd is None:
        reason = (f"your own hardware has no catalogue price: add `prices: {{{row.id}: USD per "
                  f"{row.kind.value}}}` to the profile")
        results = [Figure(p, False, reason) for p in POLICIES]
    else:
        results = figures(load, row.kind, usd, file.scaling)
    return {"id": row.id, "catalogue": file.catalogue, "title": file.title, "layer": file.layer,
            "offering": row.offering, "hardware": row.hardware, "region": row.region,
            "kind": row.kind.value, "price": price,
            "scaling": file.scaling.model_dump(exclude={"why_not"}),
            "policies": [r.to_dict() for r in results]}


def _seconds(traffic: profiles.Profile, manifest, state_dir, reporter) -> tuple[float, str]:
    if traffic.seconds_per_request != "measured":
        return traffic.seconds_per_request, "profile"
    return measure(traffic.measure or profiles.Measure(), manifest, state_dir, reporter)


def measure(spec: profiles.Measure, manifest, state_dir, reporter) -> tuple[float, str]:
    """The median wall time of the manifest's smoke cases against the deployed target."""
    from .. import service
    project = service.project_for(manifest)
    cases = project.manifest.smoke
    if not cases:
        raise InvalidInput("seconds_per_request: measured needs smoke cases to time, and the "
                           "manifest has none", fix="add `smoke:` cases to the manifest, or give "
                           "seconds_per_request as a number")
    call = service.caller(manifest, spec.target, state_dir, reporter)
    times = []
    try:
        for case in cases:
            for _ in range(spec.repeat):
                started = time.perf_counter()
                status, _body = call(case.input)
                times.append(time.perf_counter() - started)
                if status != 200:
                    raise InvalidInput(f"a smoke case answered HTTP {status} while being timed",
                                       fix="fix the model or the smoke case (mlserve predict "
                                       "shows the answer)")
    finally:
        getattr(call, "close", lambda: None)()
    median = round(statistics.median(times), 6)
    return max(median, 1e-6), (f"measured: median of {len(times)} smoke calls to "
                                f"{spec.target or 'the default target'}")
