"""The price catalogue: ``providers/prices/<catalogue>.yaml``, one file per provider offering.

Each file names one way of buying serving capacity (AWS EC2, SageMaker endpoints, Runpod
serverless, your own hardware ...), how it scales (``scaling``: autoscaling, scale to zero, cold
start and idle timeout) and its price rows. A row is one thing you pay for, billed one way:

- ``hour``: an instance (a VM, a dedicated endpoint replica, a GPU box) per hour it runs;
- ``second``: a replica per second it is up (serverless GPUs, per-minute endpoints as /60);
- ``request``: per request served (the provider owns the capacity).

Every row carries its date and public source, and ``unverified: true`` when the figure could not
be checked against a stored copy of that page. A row with ``user_price: true`` has no price of its
own (your own hardware: ``local``, ``ssh``): the traffic profile gives it (``prices:``).

``mlserve cost --refresh`` writes refreshed copies to the user's price directory
(``MLSERVE_PRICES_DIR``, default ``~/.cache/mlserve/prices``); ``load()`` prefers such a copy over
the shipped file when it was checked later.
"""

from __future__ import annotations

import datetime as dt
import os
from enum import Enum
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..errors import InvalidInput, NotFound
from ..strict import Strict, problem_text, shown
from ..yamlpos import invalid, read_located

ID_RE = r"^[a-z0-9][a-z0-9.\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)+$"
NAME_RE = r"^[a-z0-9][a-z0-9\-]*$"
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
URL_RE = r"^https?://\S+$"


class Kind(str, Enum):
    """How a row bills."""

    HOUR = "hour"
    SECOND = "second"
    REQUEST = "request"


class Scaling(Strict):
    autoscale: bool = Field(description="Replicas follow the load (the provider or its "
                            "autoscaler adds and removes them).")
    scale_to_zero: bool = Field(False, description="No replica (and no bill) while idle.")
    cold_start_seconds: float = Field(0, ge=0, le=3600, description="Billed seconds before a new "
                                      "replica serves (boot, image pull, load()).")
    idle_timeout_seconds: float = Field(0, ge=0, le=86400, description="Seconds an idle replica "
                                        "is kept (and billed) before scaling to zero.")
    why_not: Optional[str] = Field(None, description="Why it cannot autoscale (shown).")

    @model_validator(mode="after")
    def _consistent(self) -> "Scaling":
        if self.scale_to_zero and not self.autoscale:
            raise PydanticCustomError("scaling", "scale_to_zero needs autoscale", {})
        if not self.autoscale and not (self.why_not or "").strip():
            raise PydanticCustomError("scaling", "say why it cannot autoscale (why_not)", {})
        return self


class PriceRow(Strict):
    id: str = Field(pattern=ID_RE, description="CATALOGUE/OFFERING[/REGION]; what TARGET names.")
    offering: str = Field(min_length=1, description="Instance type, hardware or plan name.")
    sku: Optional[str] = Field(None, description="Key in the machine-readable price list "
                               "(default: offering).")
    region: Optional[str] = None
    hardware: str = Field(min_length=1, description="What a replica is (GPU, vCPU, memory).")
    kind: Kind
    usd: Optional[float] = Field(None, gt=0, lt=1e6, description="USD per hour, second or "
                                 "request (kind).")
    user_price: bool = Field(False, description="Priced by the profile (`prices:`).")
    concurrency: int = Field(1, ge=1, le=1024, description="Requests one replica serves at once "
                             "when the profile does not say (kept 1: the profile decides).")
    date: str = Field(pattern=DATE_RE, description="When the figure was read.")
    source: Optional[str] = Field(None, pattern=URL_RE, description="The public page or document "
                                  "it was read from (none for a user-priced row).")
    unverified: bool = Field(False, description="Not checked against a stored copy of source.")
    note: Optional[str] = None

    @model_validator(mode="after")
    def _priced(self) -> "PriceRow":
        if (self.usd is None) != self.user_price:
            raise PydanticCustomError("price", "give usd, or user_price: true (not both)", {})
        if self.source is None and not self.user_price:
            raise PydanticCustomError("price", "a priced row needs its public source", {})
        return self

    @property
    def key(self) -> str:
        return self.sku or self.offering


class PriceFile(Strict):
    catalogue: str = Field(pattern=NAME_RE)
    title: str
    layer: str
    provider: Optional[str] = Field(None, description="The mlserve provider (registry name) "
                                    "that deploys or builds for it, if any.")
    checked: str = Field(pattern=DATE_RE, description="When the catalogue was last checked.")
    refresh: Optional[Literal["aws", "azure", "runpod", "lambda"]] = Field(
        None, description="Machine-readable price list `mlserve cost --refresh` reads.")
    refresh_service: Optional[str] = Field(None, description="AWS offer code (AmazonEC2...).")
    scaling: Scaling
    rows: list[PriceRow] = Field(min_length=1)


def shipped_dir() -> Path:
    from ..resources import providers_dir
    return providers_dir() / "prices"


def user_dir() -> Path:
    configured = os.environ.get("MLSERVE_PRICES_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlserve" / "prices"


def read_file(path: Path) -> PriceFile:
    """One catalogue file, validated; ``ManifestError`` (exit 2) located at file:line:col."""
    located = read_located(path, str(path))
    try:
        parsed = PriceFile.model_validate(located.data)
    except ValidationError as exc:
        raise invalid(located.file, [problem_text(e, located) for e in exc.errors()]) from None
    if parsed.catalogue != path.stem:
        raise InvalidInput(f"{path}: catalogue is {shown(parsed.catalogue)}, the file name says "
                           f"{shown(path.stem)}", fix="make them the same")
    return parsed


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return dt.date.min


def load() -> dict[str, PriceFile]:
    """Every catalogue, by name: the shipped files, each replaced by the user's refreshed copy
    when that was checked later."""
    files = {p.stem: read_file(p) for p in sorted(shipped_dir().glob("*.yaml"))}
    refreshed = user_dir()
    if refreshed.is_dir():
        for path in sorted(refreshed.glob("*.yaml")):
            copy = read_file(path)
            if path.stem not in files or _date(copy.checked) >= _date(files[path.stem].checked):
                files[path.stem] = copy
    return files


def select(files: dict[str, PriceFile], targets: list[str]) -> list[tuple[PriceFile, PriceRow]]:
    """The rows TARGETs name: a catalogue (every row), a row id, or an mlserve provider (every
    catalogue it serves); no TARGET: every row. ``NotFound`` (exit 2) for anything else."""
    everything = [(f, r) for f in files.values() for r in f.rows]
    if not targets:
        return everything
    chosen: list[tuple[PriceFile, PriceRow]] = []
    for target in targets:
        hits = [(f, r) for f, r in everything
                if target in (f.catalogue, r.id, f.provider) or r.id.startswith(f"{target}/")]
        if not hits:
            raise NotFound(f"no catalogued target {shown(target)}", fix=_did_you_mean(
                target, files))
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _did_you_mean(target: str, files: dict[str, PriceFile]) -> str:
    import difflib
    names = sorted(files) + sorted(r.id for f in files.values() for r in f.rows)
    close = difflib.get_close_matches(str(target), names, n=3, cutoff=0.5)
    head = f"did you mean {', '.join(close)}? " if close else ""
    return (f"{head}name a catalogue ({', '.join(sorted(files))}) or a row id "
            "(`mlserve cost --json` lists them)")
