"""Length distributions: how many prompt or output tokens a request has.

Each distribution is a small pydantic config registered by name under the ``dist`` key.
Samples are rounded to integers and clipped to ``[min, max]`` (``min`` defaults to 1), so
every length is >= 1. A bare integer in a config means ``{dist: fixed, value: n}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infersim.workloads.traces import TraceFormat, load_trace

LENGTH_DISTRIBUTIONS: dict[str, type[LengthModel]] = {}

_NO_CAP = 2.0**53  # larger than any context; keeps float -> int64 conversion exact


def register_length(cls: type[LengthModel]) -> type[LengthModel]:
    """Class decorator: make a length distribution known under its ``dist`` name."""
    LENGTH_DISTRIBUTIONS[cls.model_fields["dist"].default] = cls
    return cls


Tokens = Annotated[int, Field(ge=1)]


class LengthModel(BaseModel):
    """Base of the length distributions: subclasses draw raw (real-valued) lengths."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: Tokens | None = None
    max: Tokens | None = None

    @field_validator("max")
    @classmethod
    def _caps_ordered(cls, cap: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("min")
        if cap is not None and low is not None and cap < low:
            raise ValueError(f"max must be >= min ({low})")
        return cap

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` integer lengths (int64), each in ``[max(min, 1), max]``."""
        raw = np.asarray(self._draw(n, rng), dtype=np.float64)
        lo = float(self.min or 1)
        hi = float(self.max) if self.max is not None else _NO_CAP
        return np.clip(np.rint(raw), lo, hi).astype(np.int64)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@register_length
class FixedLength(LengthModel):
    """Every request has ``value`` tokens."""

    dist: Literal["fixed"] = "fixed"
    value: Tokens

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.full(n, self.value, dtype=np.float64)


@register_length
class UniformLength(LengthModel):
    """Integers uniform on ``[low, high]``, both ends included."""

    dist: Literal["uniform"] = "uniform"
    low: Tokens
    high: Tokens

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: int, info: ValidationInfo) -> int:
        low = info.data.get("low")
        if low is not None and high < low:
            raise ValueError(f"high must be >= low ({low})")
        return high

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.low, self.high, size=n, endpoint=True)


@register_length
class LognormalLength(LengthModel):
    """Lognormal lengths with arithmetic mean ``mean`` (tokens, before rounding and caps).

    Give the spread as exactly one of ``sigma`` (standard deviation of the underlying
    normal, i.e. of log-length) or ``cv`` (coefficient of variation of the lengths
    themselves); they are related by sigma^2 = ln(1 + cv^2). The underlying normal then
    has mu = ln(mean) - sigma^2 / 2.
    """

    dist: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0, allow_inf_nan=False)
    sigma: float | None = Field(None, gt=0, allow_inf_nan=False)
    cv: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_spread(self) -> LognormalLength:
        if (self.sigma is None) == (self.cv is None):
            raise ValueError("give exactly one of sigma (of log-length) or cv (of length)")
        return self

    @property
    def log_sigma(self) -> float:
        """Standard deviation of the underlying normal."""
        return self.sigma if self.sigma is not None else math.sqrt(math.log1p(self.cv**2))

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        s = self.log_sigma
        return rng.lognormal(math.log(self.mean) - s * s / 2, s, n)


@register_length
class EmpiricalLength(LengthModel):
    """Resample, with replacement, the prompt or output column of a trace file (any
    format :func:`~infersim.workloads.traces.load_trace` reads; relative paths are taken
    from the working directory unless the config was loaded with a base folder)."""

    dist: Literal["empirical"] = "empirical"
    path: Path
    column: Literal["prompt", "output"]
    format: TraceFormat = "auto"

    def values(self) -> np.ndarray:
        """The trace's column that is resampled."""
        table = load_trace(self.path, self.format).requests
        return table.prompt_tokens if self.column == "prompt" else table.output_tokens

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        values = self.values()
        return values[rng.integers(0, len(values), size=n)]


def _int_is_fixed(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"dist": "fixed", "value": value}
    return value


LengthDistribution = Annotated[
    FixedLength | UniformLength | LognormalLength | EmpiricalLength,
    Field(discriminator="dist"),
    BeforeValidator(_int_is_fixed),
]
"""Any registered length distribution, chosen by its ``dist`` key (or a bare integer)."""
