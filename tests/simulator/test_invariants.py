"""Property tests over random small configurations (docs/invariants.md)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infersim.simulator import SimConfig, simulate
from infersim.workloads import RequestTable

configs = st.fixed_dictionaries({
    "blocks": st.integers(20, 400),
    "block_size": st.sampled_from([1, 4, 16]),
    "max_num_seqs": st.integers(1, 16),
    "budget": st.integers(8, 512),
    "threshold": st.sampled_from([0, 0, 16, 64]),
    "reserve": st.booleans(),
    "replicas": st.integers(1, 3),
    "router": st.sampled_from(["round_robin", "least_outstanding"]),
})

workloads = st.integers(1, 25).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0, 2.0), min_size=n, max_size=n),
    st.lists(st.integers(1, 300), min_size=n, max_size=n),
    st.lists(st.integers(1, 60), min_size=n, max_size=n),
))


def run(c: dict, w, fast_forward: bool):
    gaps, prompts, outputs = w
    table = RequestTable(np.cumsum(gaps), prompts, outputs)
    cfg = SimConfig.from_dict({
        "model": "llama-3.2-1b",
        "scheduler": {"num_gpu_blocks": c["blocks"], "block_size": c["block_size"],
                      "max_num_seqs": c["max_num_seqs"], "max_num_batched_tokens": c["budget"],
                      "long_prefill_token_threshold": c["threshold"],
                      "reserve_full_isl": c["reserve"]},
        "replicas": c["replicas"], "router": c["router"], "check": True,
        "fast_forward": fast_forward,
    })
    return simulate(cfg, requests=table)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, workloads)
def test_conservation_causality_and_fast_forward_equivalence(c, w):
    result = run(c, w, fast_forward=True)  # check=True asserts KV conservation every step
    r = result.requests
    capacity = c["blocks"] * c["block_size"]
    fits = (r["prompt_tokens"] + r["output_tokens"]) <= capacity
    # every request that arrives finishes, or is reported as rejected (it can never fit)
    assert (r["finished"] == fits).all() and (r["rejected"] == ~fits).all()
    done = r[r["finished"]]
    assert (done["generated_tokens"] == done["output_tokens"]).all()
    assert (done["arrival_s"] <= done["first_scheduled_s"]).all()
    assert (done["first_scheduled_s"] <= done["first_token_s"]).all()
    assert (done["first_token_s"] <= done["finish_s"]).all()
    steps = result.steps
    assert (steps["num_seqs"] <= c["max_num_seqs"]).all()
    assert ((steps["prefill_tokens"] + steps["decode_tokens"]) <= c["budget"]).all()
    assert (steps["kv_blocks_used"] <= c["blocks"]).all()
    for _, per in steps.groupby("replica"):  # each replica's clock never goes back
        assert (np.diff(per["start_s"].to_numpy()) >= 0).all()
    slow = run(c, w, fast_forward=False)
    np.testing.assert_allclose(r["finish_s"], slow.requests["finish_s"], rtol=1e-9)
    assert len(steps) == len(slow.steps)


@settings(max_examples=25, deadline=None)
@given(workloads)
def test_engine_never_idles_while_work_fits(w):
    """With one replica and room for everything, the engine is busy from the first arrival
    until the queue is empty: gaps between steps happen only when nothing is waiting."""
    c = {"blocks": 100_000, "block_size": 16, "max_num_seqs": 256, "budget": 2048,
         "threshold": 0, "reserve": True, "replicas": 1, "router": "round_robin"}
    result = run(c, w, fast_forward=True)
    steps, r = result.steps, result.requests
    ends = (steps["start_s"] + steps["duration_s"]).to_numpy()[:-1]
    starts = steps["start_s"].to_numpy()[1:]
    for end, start in zip(ends, starts, strict=True):
        if start > end + 1e-12:  # idle gap: nobody can have been in the system during it
            inside = (r["arrival_s"] < start - 1e-12) & (r["finish_s"] > end + 1e-12)
            assert not inside.any()
