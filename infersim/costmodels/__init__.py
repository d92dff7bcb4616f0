"""What one engine step costs on one placement: roofline physics with calibrated efficiency."""

from infersim.costmodels.batch import BatchShape, parse_batch
from infersim.costmodels.memory import MemoryPlan, plan_memory
from infersim.costmodels.params import PARAMETERS, Params, describe_params, resolve_params
from infersim.costmodels.placement import Placement
from infersim.costmodels.step import CostModel, OpCost, StepCost

__all__ = [
    "PARAMETERS",
    "BatchShape",
    "CostModel",
    "MemoryPlan",
    "OpCost",
    "Params",
    "Placement",
    "StepCost",
    "describe_params",
    "parse_batch",
    "plan_memory",
    "resolve_params",
]
