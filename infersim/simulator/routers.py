"""Routers: which replica serves a request. Small policies registered by name; each is a
factory taking the routing random stream and returning ``route(replicas, request) -> index``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from infersim.registry import Registry


class Routable(Protocol):
    index: int

    @property
    def outstanding(self) -> int: ...

    @property
    def kv_usage(self) -> float: ...

    def prefix_hits(self, req: object) -> int: ...


Route = Callable[[Sequence[Routable], object], int]
ROUTERS: Registry[Callable[[np.random.Generator], Route]] = Registry("router")
register = ROUTERS.register


def _argmin(replicas: Sequence[Routable], key) -> int:
    return min(range(len(replicas)), key=lambda i: (key(replicas[i]), i))


@register("round_robin")
def round_robin(rng: np.random.Generator) -> Route:
    state = {"next": 0}

    def route(replicas: Sequence[Routable], req: object) -> int:
        i = state["next"] % len(replicas)
        state["next"] = i + 1
        return i

    return route


@register("least_outstanding")
def least_outstanding(rng: np.random.Generator) -> Route:
    """The replica with the fewest waiting + running requests (lowest index on ties)."""
    return lambda replicas, req: _argmin(replicas, lambda r: r.outstanding)


@register("least_kv")
def least_kv(rng: np.random.Generator) -> Route:
    """The replica with the smallest share of its KV cache in use, then fewest requests."""
    return lambda replicas, req: _argmin(replicas, lambda r: (r.kv_usage, r.outstanding))


@register("power_of_two")
def power_of_two(rng: np.random.Generator) -> Route:
    """Two replicas drawn at random; the one with fewer outstanding requests (Mitzenmacher's
    power of two choices)."""

    def route(replicas: Sequence[Routable], req: object) -> int:
        if len(replicas) == 1:
            return 0
        a, b = (int(x) for x in rng.choice(len(replicas), size=2, replace=False))
        return a if (replicas[a].outstanding, a) <= (replicas[b].outstanding, b) else b

    return route


@register("prefix_affinity")
def prefix_affinity(rng: np.random.Generator) -> Route:
    """Cache-aware routing: the replica whose prefix cache holds the longest prefix of the
    request (ties: fewer outstanding requests), unless it is overloaded (more than twice
    the mean outstanding plus one), then the least outstanding; requests without prefix
    hashes go to the least outstanding."""

    def route(replicas: Sequence[Routable], req: object) -> int:
        least = _argmin(replicas, lambda r: r.outstanding)
        if getattr(req, "block_hashes", None) is None:
            return least
        best = _argmin(replicas, lambda r: (-r.prefix_hits(req), r.outstanding))
        mean = sum(r.outstanding for r in replicas) / len(replicas)
        return least if replicas[best].outstanding > 2 * mean + 1 else best

    return route
