"""Arrival processes: when requests reach the engine.

Each process is a small pydantic config registered by name under the ``process`` key and
turns into ``n`` arrival times (seconds, non-decreasing) with one numpy Generator, without
a Python loop per request. Every process starts at t = 0: the first request arrives at
once and the next ones follow after the inter-arrival gaps, as in a trace replay and in
vLLM's benchmark client.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

ARRIVAL_PROCESSES: dict[str, type[ArrivalModel]] = {}


def register_arrival(cls: type[ArrivalModel]) -> type[ArrivalModel]:
    """Class decorator: make an arrival process known under its ``process`` name."""
    ARRIVAL_PROCESSES[cls.model_fields["process"].default] = cls
    return cls


class ArrivalModel(BaseModel):
    """Base of the arrival processes: subclasses draw the ``n - 1`` gaps between requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` arrival times in seconds, the first at 0."""
        times = np.zeros(n, dtype=np.float64)
        if n > 1:
            np.cumsum(self._gaps(n - 1, rng), out=times[1:])
        return times

    def _gaps(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


Rate = Annotated[float, Field(gt=0, allow_inf_nan=False, description="requests per second")]


@register_arrival
class PoissonArrivals(ArrivalModel):
    """Poisson process: exponential gaps with mean 1/rate (cv = 1)."""

    process: Literal["poisson"] = "poisson"
    rate: Rate

    def _gaps(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.exponential(1.0 / self.rate, n)


@register_arrival
class GammaArrivals(ArrivalModel):
    """Gamma renewal process: gaps with mean 1/rate and coefficient of variation ``cv``
    (shape 1/cv^2, scale cv^2/rate). cv = 1 is Poisson; cv > 1 is burstier, cv < 1 more
    regular."""

    process: Literal["gamma"] = "gamma"
    rate: Rate
    cv: float = Field(gt=0, allow_inf_nan=False)

    def _gaps(self, n: int, rng: np.random.Generator) -> np.ndarray:
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, 1.0 / (self.rate * shape), n)


@register_arrival
class ConstantArrivals(ArrivalModel):
    """Deterministic arrivals exactly 1/rate apart (a D/x/1 queue's input)."""

    process: Literal["constant"] = "constant"
    rate: Rate

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.arange(n, dtype=np.float64) / self.rate


@register_arrival
class BurstArrivals(ArrivalModel):
    """Every request at t = 0: an offline throughput run (vLLM's ``--request-rate inf``)."""

    process: Literal["burst"] = "burst"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(n, dtype=np.float64)


ArrivalProcess = Annotated[
    PoissonArrivals | GammaArrivals | ConstantArrivals | BurstArrivals,
    Field(discriminator="process"),
]
"""Any registered arrival process, chosen by its ``process`` key."""
