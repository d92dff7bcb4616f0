"""Optimal schedules with CP-SAT: how far is each scheduler from the best possible?

``optimize_schedule(config, requests, objective)`` is what ``infersim optimize schedule``
prints; ``solve_schedule(instance, envelope, objective)`` the solver alone. The formulation,
its relaxations and what the bound means: docs/optimizer.md."""

from infersim.optimizer.schedule.evaluate import ScheduleTrace, run_schedule
from infersim.optimizer.schedule.instance import OBJECTIVES, ScheduleInstance
from infersim.optimizer.schedule.linearize import (
    EnvelopeFit,
    LinearizedCost,
    ShapeRange,
    StepEnvelope,
    fit_envelope,
)
from infersim.optimizer.schedule.result import SolveResult
from infersim.optimizer.schedule.solve import ScheduleSolution, serial_schedule, solve_schedule
from infersim.optimizer.schedule.study import (
    ScheduleReport,
    SchedulerRun,
    instance_from_config,
    objective_value,
    optimize_schedule,
    policies,
    replay,
    run_policy,
    shape_range,
)

__all__ = [
    "OBJECTIVES",
    "EnvelopeFit",
    "LinearizedCost",
    "ScheduleInstance",
    "ScheduleReport",
    "ScheduleSolution",
    "ScheduleTrace",
    "SchedulerRun",
    "ShapeRange",
    "SolveResult",
    "StepEnvelope",
    "fit_envelope",
    "instance_from_config",
    "objective_value",
    "optimize_schedule",
    "policies",
    "replay",
    "run_policy",
    "run_schedule",
    "serial_schedule",
    "shape_range",
    "solve_schedule",
]
