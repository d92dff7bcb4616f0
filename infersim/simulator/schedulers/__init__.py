"""Scheduling policies, registered by name."""

from infersim.simulator.schedulers import (  # noqa: F401  (each module registers itself)
    fixed,
    orca,
    sarathi,
    static,
    vllm_v0,
    vllm_v1,
)
from infersim.simulator.schedulers.base import (
    SCHEDULERS,
    DecodeRun,
    Scheduler,
    SchedulerLimits,
    StepPlan,
    make_scheduler,
    register,
)

__all__ = ["SCHEDULERS", "DecodeRun", "Scheduler", "SchedulerLimits", "StepPlan",
           "make_scheduler", "register"]
