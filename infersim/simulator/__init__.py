"""SimPy serving simulator: replicas, routers, schedulers, paged KV cache and metrics."""

from infersim.simulator.config import SimConfig
from infersim.simulator.engine import SimResult, engine_limits, simulate
from infersim.simulator.routers import ROUTERS
from infersim.simulator.schedulers import SCHEDULERS

__all__ = ["ROUTERS", "SCHEDULERS", "SimConfig", "SimResult", "engine_limits", "simulate"]
