"""Arrival processes: rates, variability and exactness."""

import numpy as np
import pytest

from infersim.workloads.arrivals import (
    ARRIVAL_PROCESSES,
    BurstArrivals,
    ConstantArrivals,
    GammaArrivals,
    PoissonArrivals,
)

N = 200_000  # relative standard error of a mean gap ~ cv / sqrt(N) = 0.22% at cv = 1


def gaps_of(times: np.ndarray) -> np.ndarray:
    assert times[0] == 0.0 and np.all(np.diff(times) >= 0)
    return np.diff(times)


def test_registry_names():
    assert set(ARRIVAL_PROCESSES) == {"poisson", "gamma", "constant", "burst"}


def test_poisson_mean_and_cv():
    gaps = gaps_of(PoissonArrivals(rate=4.0).sample(N, np.random.default_rng(1)))
    assert gaps.mean() == pytest.approx(1 / 4.0, rel=0.01)  # ~4.5 standard errors
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_cv(cv):
    gaps = gaps_of(GammaArrivals(rate=2.0, cv=cv).sample(N, np.random.default_rng(2)))
    assert gaps.mean() == pytest.approx(0.5, rel=0.02)
    # sample cv of gamma(shape 1/cv^2) at N = 2e5: standard error < 0.6% even at cv = 2
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.03)


def test_constant_is_exact():
    times = ConstantArrivals(rate=8.0).sample(1001, np.random.default_rng(0))
    np.testing.assert_array_equal(times, np.arange(1001) / 8.0)
    assert times[-1] == 125.0


def test_burst_all_at_zero():
    assert not BurstArrivals().sample(5, np.random.default_rng(0)).any()


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_n(n):
    assert len(PoissonArrivals(rate=1.0).sample(n, np.random.default_rng(0))) == n
