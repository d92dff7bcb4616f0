"""The speedup speculation gives: the same run (same requests, same seed) without it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from infersim.simulator.speculation.config import SpeculationConfig


@dataclass(frozen=True)
class SpecComparison:
    """Summaries with and without speculation and their ratios (> 1: speculation helps)."""

    speculative: dict
    plain: dict

    @property
    def tpot_speedup(self) -> float:
        """Mean TPOT without over mean TPOT with speculation."""
        return _ratio(self.plain["mean_tpot_ms"], self.speculative["mean_tpot_ms"])

    @property
    def throughput_ratio(self) -> float:
        """Output tokens per second with over without speculation."""
        return _ratio(self.speculative["output_throughput"], self.plain["output_throughput"])

    def to_dict(self) -> dict:
        return {"tpot_speedup": self.tpot_speedup, "throughput_ratio": self.throughput_ratio,
                "speculative": self.speculative, "plain": self.plain}


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def compare(cfg, requests=None, cost=None) -> SpecComparison:
    """Simulate ``cfg`` (a SimConfig) as given and with ``speculation.method: none``, on
    the same requests; ``requests``/``cost`` are passed to ``simulate``."""
    from infersim.simulator.engine import simulate

    plain_cfg = cfg.model_copy(update={"speculation": SpeculationConfig()})
    spec = simulate(cfg, requests, cost=cost)
    plain = simulate(plain_cfg, requests, cost=cost)
    return SpecComparison(spec.summary, plain.summary)
