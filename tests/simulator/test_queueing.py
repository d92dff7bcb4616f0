"""Closed forms from queueing theory against the simulator."""

from __future__ import annotations

import pytest

from infersim.simulator import SimConfig, simulate


def md1_config(rate: float, n: int, seed: int) -> SimConfig:
    # one sequence at a time, one token out: each request is exactly one step (its prefill)
    return SimConfig.from_dict({
        "scheduler": {"max_num_seqs": 1, "max_num_batched_tokens": 2048},
        "workload": {"arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
                     "prompt": 100, "output": 1},
        "seed": seed, "record_steps": False,
    })


@pytest.mark.parametrize("rho", [0.5, 0.7])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho, constant_cost):
    service = 0.01
    rate = rho / service
    cost = constant_cost(service)
    waits = []
    for seed in range(4):
        result = simulate(md1_config(rate, 100_000, seed), cost=cost)
        waits.append(result.requests["queue_s"].mean())
    measured = sum(waits) / len(waits)  # 400,000 requests: sampling error well under 3%
    mu = 1 / service
    expected = rho / (2 * mu * (1 - rho))  # M/D/1 mean wait in queue
    assert measured == pytest.approx(expected, rel=0.03)
    # and every request is served in exactly one step of the constant service time
    assert (result.requests["e2el_s"] - result.requests["queue_s"]).round(12).eq(service).all()
