"""Length distributions: means, caps, integer outputs, resampling."""

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from infersim.workloads.lengths import (
    EmpiricalLength,
    FixedLength,
    LengthDistribution,
    LognormalLength,
    UniformLength,
)

N = 200_000
parse = TypeAdapter(LengthDistribution).validate_python


def test_fixed_and_bare_integer():
    assert parse(64) == FixedLength(value=64)
    out = FixedLength(value=64).sample(10, np.random.default_rng(0))
    assert out.dtype == np.int64 and (out == 64).all()


def test_uniform_inclusive_bounds():
    out = UniformLength(low=3, high=5).sample(10_000, np.random.default_rng(0))
    assert set(out.tolist()) == {3, 4, 5}


@pytest.mark.parametrize("spread", [{"cv": 0.96}, {"sigma": 1.0}, {"cv": 2.0}])
def test_lognormal_mean(spread):
    dist = LognormalLength(mean=1000, **spread)
    out = dist.sample(N, np.random.default_rng(3))
    assert out.dtype == np.int64 and out.min() >= 1
    # heaviest case cv = 2: standard error 2/sqrt(2e5) = 0.45%; allow 3%
    assert out.mean() == pytest.approx(1000, rel=0.03)


def test_lognormal_cv_and_sigma_agree():
    a = LognormalLength(mean=500, cv=1.0).sample(1000, np.random.default_rng(4))
    b = LognormalLength(mean=500, sigma=np.sqrt(np.log(2.0))).sample(1000, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spread", [{}, {"cv": 1.0, "sigma": 1.0}])
def test_lognormal_needs_exactly_one_spread(spread):
    with pytest.raises(ValidationError):
        LognormalLength(mean=100, **spread)


def test_caps_respected():
    dist = LognormalLength(mean=1000, cv=2.0, min=50, max=3000)
    out = dist.sample(N, np.random.default_rng(5))
    assert out.min() == 50 and out.max() == 3000
    out = UniformLength(low=1, high=100, min=10, max=20).sample(1000, np.random.default_rng(0))
    assert out.min() == 10 and out.max() == 20


def test_small_values_never_below_one():
    out = LognormalLength(mean=1.0, cv=3.0).sample(10_000, np.random.default_rng(6))
    assert out.min() == 1


@pytest.mark.parametrize("bad", [{"dist": "fixed", "value": 0},
                                 {"dist": "uniform", "low": 5, "high": 4},
                                 {"dist": "fixed", "value": 5, "min": 9, "max": 8},
                                 {"dist": "gauss", "mean": 3}])
def test_invalid(bad):
    with pytest.raises(ValidationError):
        parse(bad)


def test_empirical_resamples_trace_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                    "0,10,1\n1,20,2\n2,30,3\n")
    prompt = EmpiricalLength(path=path, column="prompt").sample(3000, np.random.default_rng(0))
    output = EmpiricalLength(path=path, column="output", max=2).sample(
        3000, np.random.default_rng(0))
    assert set(prompt.tolist()) == {10, 20, 30}
    assert set(output.tolist()) == {1, 2}
    assert prompt.mean() == pytest.approx(20, rel=0.05)
