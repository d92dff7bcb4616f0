"""Routers: which replica serves an arriving request. Registered by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class Routable(Protocol):
    index: int

    @property
    def outstanding(self) -> int: ...


Router = Callable[[Sequence[Routable]], int]
ROUTERS: dict[str, Callable[[np.random.Generator], Router]] = {}


def register(name: str):
    def wrap(factory: Callable[[np.random.Generator], Router]):
        ROUTERS[name] = factory
        return factory

    return wrap


@register("round_robin")
def round_robin(rng: np.random.Generator) -> Router:
    state = {"next": 0}

    def route(replicas: Sequence[Routable]) -> int:
        i = state["next"] % len(replicas)
        state["next"] = i + 1
        return i

    return route


@register("least_outstanding")
def least_outstanding(rng: np.random.Generator) -> Router:
    """The replica with the fewest waiting + running requests (lowest index on ties)."""

    def route(replicas: Sequence[Routable]) -> int:
        return min(range(len(replicas)), key=lambda i: replicas[i].outstanding)

    return route
