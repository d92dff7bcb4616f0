"""Shared builders for simulator tests."""

from __future__ import annotations

import numpy as np
import pytest

from infersim.costmodels import CostModel, Placement
from infersim.hardware import get_device
from infersim.models import get_model
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.request import Request
from infersim.simulator.schedulers import SCHEDULERS, SchedulerLimits, make_scheduler


class ConstantCost(CostModel):
    """A real cost model whose every step takes ``seconds`` (for closed-form checks)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(get_model("llama-3.2-1b"), Placement(get_device("h100-sxm")))
        self.seconds = seconds

    def step_time(self, batch):
        context = np.asarray(batch.decode_context)
        return np.full(context.shape, self.seconds) if context.ndim else self.seconds


@pytest.fixture
def make_scheduler_of():
    def build(name: str, blocks: int = 1000, block_size: int = 16, caching: bool = False,
              **limits):
        limits.setdefault("max_num_seqs", 256)
        limits.setdefault("max_num_batched_tokens", 2048)
        cls = SCHEDULERS[name]
        limits.setdefault("watermark", cls.default_watermark)
        return make_scheduler(name, cls.effective_limits(SchedulerLimits(**limits)),
                              BlockManager(blocks, block_size, caching))

    return build


@pytest.fixture
def make_v1(make_scheduler_of):
    return lambda **kw: make_scheduler_of("vllm_v1", **kw)


@pytest.fixture
def new_request():
    def build(rid: int, prompt: int, output: int, arrival: float = 0.0) -> Request:
        return Request(rid, arrival, prompt, output)

    return build


@pytest.fixture
def constant_cost():
    return ConstantCost
