"""What a schedule solve reports: always status, incumbent, bound, gap and solve time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

UNITS = {"latency": "s", "makespan": "s", "cost": "device-s", "slo": "requests"}


def relative_gap(incumbent: float | None, bound: float) -> float:
    """(incumbent - bound) / |incumbent| (the MIP convention); 0 when they meet, inf without
    an incumbent."""
    if incumbent is None or not math.isfinite(incumbent):
        return math.inf
    if incumbent - bound <= 1e-12 * max(1.0, abs(incumbent)):
        return 0.0
    return (incumbent - bound) / abs(incumbent) if incumbent else math.inf


@dataclass(frozen=True)
class SolveResult:
    """A CP-SAT schedule solve. ``incumbent`` and ``bound`` are in ``unit`` under the step
    envelope (a lower envelope of the cost model, so ``bound`` is also a lower bound under
    the cost model itself); ``incumbent`` is the best complete schedule found. ``status``:
    OPTIMAL (incumbent proven optimal), FEASIBLE (a gap remains), INFEASIBLE, UNKNOWN (no
    schedule) or MODEL_INVALID. ``horizon``: steps modelled; ``tail``: the horizon is shorter
    than the steps an optimum could need, and a relaxed tail keeps the bound valid."""

    objective: str
    status: str
    incumbent: float | None
    bound: float
    gap: float
    solve_time_s: float
    wall_time_s: float
    num_workers: int
    seed: int
    time_limit_s: float
    preemption: bool
    horizon: int
    tail: bool
    warm_start: str | None = None
    warm_start_value: float | None = None
    solutions: int = 0
    model_size: dict = field(default_factory=dict)
    bound_source: str | None = None  # which relaxation gave the bound

    @property
    def unit(self) -> str:
        return UNITS[self.objective]

    @property
    def optimal(self) -> bool:
        return self.status == "OPTIMAL"

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["unit"] = self.unit
        return out

    def summary(self) -> str:
        inc = "none" if self.incumbent is None else f"{self.incumbent:.6g}"
        src = f" ({self.bound_source})" if self.bound_source else ""
        return (f"{self.status}: {self.objective} {inc} {self.unit}, bound {self.bound:.6g}{src}, "
                f"gap {self.gap:.2%}, {self.solve_time_s:.1f} s solve ({self.wall_time_s:.1f} s "
                f"total), {self.num_workers} workers, seed {self.seed}, horizon "
                f"{self.horizon} steps{' (relaxed tail)' if self.tail else ''}, "
                f"preemption {'on' if self.preemption else 'off'}")
