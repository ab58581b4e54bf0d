"""The base of every recipe section and the small value types several sections share."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class Model(BaseModel):
    """Base of every recipe section: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


def _hex64(v: str) -> str:
    if not SHA256_RE.match(v):
        raise ValueError(f"expected 64 lower-case hex digits, got {v!r}")
    return v


Hex64 = Annotated[str, AfterValidator(_hex64)]
