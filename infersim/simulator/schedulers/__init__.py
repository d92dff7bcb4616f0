"""Scheduling policies, registered by name."""

from infersim.simulator.schedulers import vllm_v1  # noqa: F401  (registers)
from infersim.simulator.schedulers.base import (
    SCHEDULERS,
    Scheduler,
    SchedulerLimits,
    StepPlan,
    make_scheduler,
    register,
)

__all__ = ["SCHEDULERS", "Scheduler", "SchedulerLimits", "StepPlan", "make_scheduler",
           "register"]
