"""The strict pydantic base every manifest model uses: unknown keys are errors with a hint."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    """Forbid unknown keys, and say which known key was probably meant."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        known |= {f.alias for f in cls.model_fields.values() if f.alias}
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else \
                    "known keys: " + ", ".join(sorted(known))
                raise PydanticCustomError("unknown_key", "unknown key '{key}' ({hint})",
                                          {"key": str(key), "hint": hint})
        return data
