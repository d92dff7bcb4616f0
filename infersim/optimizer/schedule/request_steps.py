"""The fewest request-steps of a burst: the least sum over requests of the steps each waits
through (its finishing step + 1), under the engine's KV cache, token budget and sequence
cap (docs/optimizer.md, "Fewest request-steps").

Every step of a schedule lasts at least the envelope's constant, which is most of a short
step (91% of the latency of the 30-request burst of the targets is that constant times
the request-steps), so the request-steps are the combinatorial core of the latency of a burst.
They are the latency of the schedule model with every non-empty step one tick long: its
variables are small integers, and CP-SAT can prove their minimum where it cannot prove the
latency's (on that burst in 22-64 s, depending on the seed and the hint). The minimum is a
row of the trajectory relaxation's master."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from infersim.errors import SolverError
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope, ScheduleModel, int_trace
from infersim.simulator.schedulers.fixed import FixedStep

# every non-empty step one tick: the latency of a burst is then its request-steps
ONE_TICK = IntEnvelope(1, np.array([[1, 0, 0, 0, 0]], dtype=np.int64), 1)


@dataclass(frozen=True)
class RequestSteps:
    """``bound``: no schedule of the burst has fewer request-steps (counting, for a request
    unfinished after the horizon's steps, the horizon plus the decode steps it still needs
    at least); ``best``: the fewest found; ``proven``: bound == best; ``seconds``: CP-SAT's
    wall time."""

    bound: int
    best: int
    seconds: float

    @property
    def proven(self) -> bool:
        return self.bound >= self.best


def request_steps(inst: ScheduleInstance, schedule: Sequence[FixedStep]) -> int:
    """Sum over requests of the steps up to and including the one that finishes it."""
    return int(int_trace(inst, ONE_TICK, schedule).objective("latency"))


def fewest_request_steps(inst: ScheduleInstance, start: Sequence[FixedStep], horizon: int,
                         seconds: float, num_workers: int = 2, seed: int = 0,
                         kv_granularity: str = "block") -> RequestSteps:
    """CP-SAT on the schedule model (no preemption, ``horizon`` steps and a relaxed tail)
    with one-tick steps, hinted and capped by ``start`` (a complete schedule of the burst),
    for at most ``seconds``. Its bound holds for every schedule: the model's constraints are
    the engine's, only the durations differ."""
    if float(inst.arrival_s.min()) != float(inst.arrival_s.max()):
        raise SolverError("the fewest request-steps bound the latency of a burst only: "
                          "every arrival must be equal")
    trace = int_trace(inst, ONE_TICK, start)
    upper = int(trace.objective("latency"))
    sm = ScheduleModel(inst, ONE_TICK, "latency", False, horizon, True, upper, kv_granularity)
    if trace.num_steps <= horizon:
        sm.hint(trace)
    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.max_time_in_seconds = float(seconds)
    prm.num_workers = int(num_workers)
    prm.random_seed = int(seed)
    if num_workers == 2:  # both workers on the bound: the hint is usually the optimum
        prm.subsolvers.extend(["lb_tree_search", "max_lp"])
    status = solver.solve(sm.model)
    bound, best = 0, upper
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        bound = math.ceil(solver.best_objective_bound - 1e-6)
        best = min(best, round(solver.objective_value))
    return RequestSteps(min(bound, best), best, solver.wall_time)
