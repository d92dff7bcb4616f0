"""The metric recorders: histogram accuracy and summary keys."""

from __future__ import annotations

import numpy as np
import pytest

from infersim.simulator import SimConfig, simulate
from infersim.simulator.metrics import LogHistogram

VLLM_KEYS = [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
             for s in ("mean", "median", "p99")] + [
    "request_throughput", "output_throughput", "total_token_throughput", "goodput"]


def test_log_histogram_percentiles_within_a_bin_and_exact_mean():
    rng = np.random.default_rng(0)
    values = rng.lognormal(-4, 1.0, 200_000)
    hist = LogHistogram()
    hist.add(values[:100_000])
    hist.add(values[100_000:])
    assert hist.mean == pytest.approx(values.mean(), rel=1e-12)
    for q in (50, 90, 99):
        assert hist.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.003)


def test_weighted_samples_count_like_repeats():
    a, b = LogHistogram(), LogHistogram()
    a.add([0.01, 0.02], [3, 1])
    b.add([0.01, 0.01, 0.01, 0.02])
    assert a.mean == pytest.approx(b.mean) and a.percentile(90) == b.percentile(90)


def test_summary_has_the_vllm_benchmark_keys():
    result = simulate(SimConfig.from_dict({"workload": {"arrival": {"process": "poisson",
                                                                    "rate": 5},
                                                        "num_requests": 50}}))
    for key in VLLM_KEYS:
        assert np.isfinite(result.summary[key]), key
    r = result.requests
    tpot = ((r["finish_s"] - r["first_token_s"]) / (r["output_tokens"] - 1)).mean()
    assert result.summary["mean_tpot_ms"] == pytest.approx(tpot * 1e3)
