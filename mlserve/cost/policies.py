"""Three ways to provision a target for a traffic profile, and what each costs a week.

Inputs per hour ``h`` of the week: ``d`` requests, ``busy = d * s / c`` replica-seconds of work
(``s`` seconds per request, ``c`` requests a replica serves at once) and ``need = ceil(busy /
3600)`` replicas. A row's price is per hour, per second or per request (``Kind``).

- **always_on**: ``peak = max(1, max(need))`` replicas all week; nothing is refused.
- **fixed**: ``n`` replicas (the profile's ``fixed_replicas``) all week; an hour's requests beyond
  ``n * 3600 * c / s`` are not served (``unserved_share`` of the week's requests).
- **autoscale** (where the catalogue says the provider scales):
  per-hour rows run ``max(floor, need)`` replicas each hour (``floor`` 0 with scale to zero,
  else 1); each replica added since the hour before (the week wraps) is a cold start billed
  ``cold_start_seconds``. Per-second rows with scale to zero follow Poisson arrivals
  (``rate = d / 3600``) and an idle timeout ``T``: a replica is warm ``3600 * (1 - exp(-rate*T))``
  seconds of the hour, ``d * exp(-rate*T)`` requests find none warm (cold starts, each billed
  ``cold_start_seconds``), and the hour bills ``max(busy, warm) + cold starts``; without scale
  to zero they bill like per-hour rows, by the second. Per-request rows bill ``d * price``.
  Per-request rows have no always_on or fixed policy: the provider owns the capacity.

A model of the bill, not the bill: data transfer, storage, taxes and minimum charges are left out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from .catalogue import Kind, Scaling
from .profile import WEEKS_PER_MONTH

POLICIES = ("always_on", "fixed", "autoscale")


@dataclass
class Figure:
    policy: str
    available: bool
    reason: Optional[str] = None
    weekly_usd: Optional[float] = None
    monthly_usd: Optional[float] = None
    replicas: Optional[int] = None          # always_on / fixed: replicas; autoscale: the most
    billed_hours: Optional[float] = None    # replica-hours billed a week (None: per request)
    unserved_share: float = 0.0             # share of the week's requests not served
    cold_starts: Optional[float] = None     # a week

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Load:
    """The profile reduced to what pricing needs."""

    week: tuple[float, ...]                 # requests per hour, 168 values
    seconds: float                          # per request, one replica
    concurrency: int
    fixed_replicas: int

    def busy(self, requests: float) -> float:
        return requests * self.seconds / self.concurrency

    def need(self, requests: float) -> int:
        return math.ceil(self.busy(requests) / 3600 - 1e-9)


def _priced(policy: str, usd_per_unit: float, units: float, **fields) -> Figure:
    weekly = usd_per_unit * units
    return Figure(policy, True, weekly_usd=round(weekly, 6),
                  monthly_usd=round(weekly * WEEKS_PER_MONTH, 6), **fields)


def _per_hour(kind: Kind, usd: float) -> float:
    return usd if kind is Kind.HOUR else usd * 3600


def always_on(load: Load, kind: Kind, usd: float) -> Figure:
    if kind is Kind.REQUEST:
        return Figure("always_on", False, "billed per request: the provider owns the capacity")
    peak = max(1, max(load.need(d) for d in load.week))
    hours = peak * len(load.week)
    return _priced("always_on", _per_hour(kind, usd), hours, replicas=peak,
                   billed_hours=float(hours), cold_starts=0.0)


def fixed(load: Load, kind: Kind, usd: float) -> Figure:
    if kind is Kind.REQUEST:
        return Figure("fixed", False, "billed per request: the provider owns the capacity")
    n = load.fixed_replicas
    capacity = n * 3600 * load.concurrency / load.seconds
    total = sum(load.week)
    unserved = sum(max(0.0, d - capacity) for d in load.week)
    hours = n * len(load.week)
    return _priced("fixed", _per_hour(kind, usd), hours, replicas=n, billed_hours=float(hours),
                   unserved_share=round(unserved / total, 6) if total else 0.0, cold_starts=0.0)


def autoscale(load: Load, kind: Kind, usd: float, scaling: Scaling) -> Figure:
    if not scaling.autoscale:
        return Figure("autoscale", False, scaling.why_not)
    if kind is Kind.REQUEST:
        return _priced("autoscale", usd, sum(load.week))
    if kind is Kind.SECOND and scaling.scale_to_zero:
        return _poisson(load, usd, scaling)
    floor = 0 if scaling.scale_to_zero else 1
    replicas = [max(floor, load.need(d)) for d in load.week]
    starts = sum(max(0, r - replicas[h - 1]) for h, r in enumerate(replicas))
    seconds = sum(replicas) * 3600 + starts * scaling.cold_start_seconds
    if kind is Kind.SECOND:
        # billed by the second: an hour bills the work or the floor, not whole replicas
        seconds = (sum(max(load.busy(d), floor * 3600) for d in load.week)
                   + starts * scaling.cold_start_seconds)
    return _priced("autoscale", _per_hour(kind, usd) / 3600, seconds, replicas=max(replicas),
                   billed_hours=round(seconds / 3600, 6), cold_starts=float(starts))


def _poisson(load: Load, usd_per_second: float, scaling: Scaling) -> Figure:
    seconds = cold = 0.0
    for d in load.week:
        rate_t = d / 3600 * scaling.idle_timeout_seconds
        warm = 3600 * (1 - math.exp(-rate_t))
        starts = d * math.exp(-rate_t)
        seconds += max(load.busy(d), warm) + starts * scaling.cold_start_seconds
        cold += starts
    return _priced("autoscale", usd_per_second, seconds,
                   replicas=max(load.need(d) for d in load.week),
                   billed_hours=round(seconds / 3600, 6), cold_starts=round(cold, 6))


def figures(load: Load, kind: Kind, usd: float, scaling: Scaling) -> list[Figure]:
    return [always_on(load, kind, usd), fixed(load, kind, usd),
            autoscale(load, kind, usd, scaling)]
