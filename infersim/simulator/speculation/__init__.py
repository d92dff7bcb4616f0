"""Speculative decoding in the simulator: acceptance models, drafters, length policies, the
speculator a scheduler consults, and ``compare`` (the same run with and without)."""

from infersim.simulator.speculation.acceptance import ACCEPTANCE_MODELS, AcceptanceModel
from infersim.simulator.speculation.compare import SpecComparison, compare
from infersim.simulator.speculation.config import (
    AcceptanceConfig,
    PolicyConfig,
    SpeculationConfig,
    TreeConfig,
)
from infersim.simulator.speculation.drafters import DRAFTERS, Drafter
from infersim.simulator.speculation.policies import POLICIES, Policy
from infersim.simulator.speculation.speculator import (
    SpecStats,
    Speculation,
    Speculator,
    check_scheduler,
)

__all__ = [
    "ACCEPTANCE_MODELS",
    "DRAFTERS",
    "POLICIES",
    "AcceptanceConfig",
    "AcceptanceModel",
    "Drafter",
    "Policy",
    "PolicyConfig",
    "SpecComparison",
    "SpecStats",
    "Speculation",
    "SpeculationConfig",
    "Speculator",
    "TreeConfig",
    "check_scheduler",
    "compare",
]
