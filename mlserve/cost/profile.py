"""The traffic profile (``--profile FILE``): how much the model is asked, and how long it takes.

```yaml
requests_per_hour: [20, 10, 5, ..., 40]   # 24 values (a day, repeated) or 168 (a week, Mon 00:00 first)
weekday_factors: [1, 1, 1, 1, 1, 0.5, 0.3] # optional with 24 values: Monday..Sunday multipliers
seconds_per_request: 0.25                  # compute per request on one replica, or `measured`
concurrency: 1                             # requests one replica serves at once
fixed_replicas: 1                          # the fixed conservative policy's capacity
measure: {target: local, repeat: 5}        # with `measured`: time the smoke cases there
prices: {local/this-machine: 0.05}         # USD for user-priced rows (your hardware) or overrides
```

Read with the manifest's reader (``mlserve.yamlpos``): every problem is reported at its
file:line:col with the fix, as ``ManifestError`` (exit 2), never a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..errors import ManifestError
from ..strict import Strict, problem_text
from ..yamlpos import invalid, read_located

#: No profile given: a small business-hours API, stated in the output so nobody mistakes it.
DEFAULT = {
    "requests_per_hour": [5, 2, 2, 2, 2, 5, 20, 60, 120, 180, 200, 200,
                          180, 200, 200, 180, 150, 120, 80, 50, 30, 20, 10, 5],
    "weekday_factors": [1, 1, 1, 1, 1, 0.4, 0.3],
    "seconds_per_request": 0.5,
}
HOURS_PER_WEEK = 168
WEEKS_PER_MONTH = 730 / HOURS_PER_WEEK        # 730 h: the month cloud price pages use
MAX_RATE = 1e9
_SCHEMA_FIX = "see `mlserve schema` for what this field accepts"
_PROFILE_FIX = "see `mlserve cost --help` for the profile's form"


def _finite_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("number", "expected a number, got {got}", {"got": repr(value)[:40]})
    if not math.isfinite(value) or value < 0 or value > MAX_RATE:
        raise PydanticCustomError("number", "{v} is not a number from 0 to 1e9", {"v": value})
    return float(value)


class Measure(Strict):
    target: Optional[str] = Field(None, description="Manifest target to time (default: the only "
                                  "one, or `local`).")
    repeat: int = Field(3, ge=1, le=1000, description="Calls per smoke case.")


class Profile(Strict):
    requests_per_hour: list[float] = Field(description="24 values (one day, every day) or 168 "
                                           "(Monday 00:00 to Sunday 23:00).")
    weekday_factors: Optional[list[float]] = Field(None, description="Monday..Sunday multipliers "
                                                   "of the 24-hour day.")
    seconds_per_request: Union[float, Literal["measured"]] = Field(
        description="Seconds of compute per request on one replica, or `measured`.")
    concurrency: int = Field(1, ge=1, le=1024)
    fixed_replicas: int = Field(1, ge=1, le=10000)
    measure: Optional[Measure] = None
    prices: dict[str, float] = Field(default_factory=dict, description="USD per row id or "
                                     "catalogue (per its kind): your hardware, or a discount.")

    @field_validator("requests_per_hour", "weekday_factors", mode="before")
    @classmethod
    def _numbers(cls, value: object) -> object:
        if value is None or not isinstance(value, list):
            return value
        return [_finite_number(v) for v in value]

    @field_validator("seconds_per_request", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        if value == "measured":
            return value
        number = _finite_number(value)
        if not 0 < number <= 3600:
            raise PydanticCustomError("number", "seconds_per_request must be above 0 and at most "
                                      "3600 (or `measured`)", {})
        return number

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: object) -> object:
        if isinstance(value, dict):
            for key, price in value.items():
                if _finite_number(price) <= 0:
                    raise PydanticCustomError("number", "the price of {k} must be above 0",
                                              {"k": repr(key)[:40]})
        return value

    @model_validator(mode="after")
    def _shape(self) -> "Profile":
        count = len(self.requests_per_hour)
        if count not in (24, HOURS_PER_WEEK):
            raise PydanticCustomError("hours", "requests_per_hour has {n} values; give 24 (a day) "
                                      "or 168 (a week)", {"n": count})
        if self.weekday_factors is not None and (count != 24 or len(self.weekday_factors) != 7):
            raise PydanticCustomError("hours", "weekday_factors takes 7 values, with 24 hourly "
                                      "ones", {})
        return self

    def week(self) -> list[float]:
        """Requests in each of the 168 hours of a week."""
        if len(self.requests_per_hour) == HOURS_PER_WEEK:
            return list(self.requests_per_hour)
        factors = self.weekday_factors or [1.0] * 7
        return [r * f for f in factors for r in self.requests_per_hour]


def parse(data: object, file: str = "(default profile)", located=None) -> Profile:
    if not isinstance(data, dict):
        raise ManifestError("a traffic profile is a mapping (requests_per_hour:, "
                            "seconds_per_request:)", where=f"{file}:1:1",
                            fix="see `mlserve cost --help` for the form")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        if located is None:
            raise
        problems = [problem_text(e, located).replace(_SCHEMA_FIX, _PROFILE_FIX)
                    for e in exc.errors()]
        raise invalid(file, problems, fix=_PROFILE_FIX) from None


def load(path: Optional[Path]) -> tuple[Profile, str]:
    """The profile at ``path`` (or the default) and what to call it in the output."""
    if path is None:
        return parse(DEFAULT), "default (a business-hours API; pass --profile FILE)"
    if not path.exists():
        raise ManifestError(f"no traffic profile at {path}",
                            fix="pass the path of a YAML profile file to --profile")
    located = read_located(path, str(path))
    return parse(located.data, located.file, located), str(path)
