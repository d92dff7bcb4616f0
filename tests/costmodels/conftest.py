"""Fixtures for the cost-model tests: cached cost models and batches from spec strings.

Test modules are imported with --import-mode=importlib and cannot import each other, so the
shared pieces are fixtures; parametrisation uses plain names."""

from __future__ import annotations

from functools import cache, reduce

import pytest

from infersim.costmodels import BatchShape, CostModel, Placement, parse_batch
from infersim.hardware import get_device
from infersim.models import get_model


@cache
def _cost_model(model: str, device: str, tp: int = 1, pp: int = 1, ep: int = 1) -> CostModel:
    return CostModel(get_model(model), Placement(get_device(device), tp=tp, pp=pp, ep=ep))


def _batch(*specs: str) -> BatchShape:
    return reduce(lambda a, b: a + b, (parse_batch(s) for s in specs))


@pytest.fixture(scope="session")
def cm():
    """``cm(model, device, tp=1, pp=1, ep=1)``: a cached CostModel (pure, so shared)."""
    return _cost_model


@pytest.fixture(scope="session")
def batch():
    """``batch(*specs)``: one step made of `--batch`-style specs (several are summed)."""
    return _batch
