"""The ``fixed`` scheduler replays a given schedule exactly, waits for arrivals, and names
the step of any schedule the engine cannot run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from infersim.errors import ConfigError, SolverError
from infersim.simulator import SimConfig, simulate
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.schedulers import SchedulerLimits, make_scheduler
from infersim.simulator.schedulers.fixed import FixedStep, fixed_scheduler, recording
from infersim.workloads import RequestTable


def config(name: str, blocks: int = 40, budget: int = 256, **scheduler) -> SimConfig:
    return SimConfig.from_dict({
        "model": "llama-3.2-1b",
        "scheduler": {"name": name, "num_gpu_blocks": blocks, "max_num_batched_tokens": budget,
                      "max_num_seqs": 16, "enable_prefix_caching": False, **scheduler},
        "check": True, "fast_forward": False})


def table(n: int = 12, seed: int = 3) -> RequestTable:
    rng = np.random.default_rng(seed)
    return RequestTable(np.sort(rng.uniform(0, 0.2, n)), rng.integers(10, 200, n),
                        rng.integers(1, 30, n))


@pytest.mark.parametrize("policy", ["vllm_v1", "sarathi", "orca", "vllm_v0"])
def test_replaying_a_policys_own_schedule_gives_identical_results(policy):
    reqs = table()
    factory, log = recording(policy)
    original = simulate(config(policy), requests=reqs, scheduler_factory=factory)
    replayed = simulate(config("fixed"), requests=reqs, scheduler_factory=fixed_scheduler(log))
    cols = ["arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "preemptions",
            "generated_tokens"]
    pd.testing.assert_frame_equal(original.requests[cols], replayed.requests[cols])
    # a policy that reserves blocks ahead (orca) holds more than the replay needs
    same = [c for c in original.steps.columns if policy == "vllm_v1" or c != "kv_blocks_used"]
    pd.testing.assert_frame_equal(original.steps[same], replayed.steps[same])


def test_a_recorded_schedule_with_preemptions_replays():
    rng = np.random.default_rng(0)
    reqs = RequestTable(np.sort(rng.uniform(0, 0.05, 16)), rng.integers(10, 100, 16),
                        rng.integers(20, 60, 16))
    factory, log = recording("vllm_v1")
    original = simulate(config("vllm_v1", blocks=16, reserve_full_isl=False), requests=reqs,
                        scheduler_factory=factory)
    assert original.summary["num_preemptions"] > 0
    assert any(step.preempt for step in log)
    replayed = simulate(config("fixed", blocks=16), requests=reqs,
                        scheduler_factory=fixed_scheduler(log))
    assert np.allclose(original.requests["finish_s"], replayed.requests["finish_s"])
    assert replayed.summary["num_preemptions"] == original.summary["num_preemptions"]
    assert replayed.summary["recomputed_tokens"] == original.summary["recomputed_tokens"]


def test_the_engine_idles_until_a_steps_requests_have_arrived():
    reqs = RequestTable(np.array([0.0, 1.0]), np.array([8, 8]), np.array([2, 2]))
    schedule = [[(1, 8)], [(1, 1)], [(0, 8)], [(0, 1)]]  # the later request first
    res = simulate(config("fixed"), requests=reqs, scheduler_factory=fixed_scheduler(schedule))
    r = res.requests
    assert r.loc[1, "first_scheduled_s"] == pytest.approx(1.0)
    assert r.loc[0, "first_scheduled_s"] > r.loc[1, "finish_s"] - 1e-12
    assert res.steps["start_s"].iloc[0] == pytest.approx(1.0)


def test_a_dropped_request_recomputes_prompt_and_generated_tokens():
    reqs = RequestTable(np.array([0.0]), np.array([10]), np.array([4]))
    # prompt, 1 decode (2 tokens out), drop the KV, recompute 10 + 2 = 12, then 1 decode
    steps = [FixedStep(((0, 10),)), FixedStep(((0, 1),)), FixedStep(((0, 12),), (0,)),
             FixedStep(((0, 1),))]
    res = simulate(config("fixed"), requests=reqs, scheduler_factory=fixed_scheduler(steps))
    assert res.requests.loc[0, "generated_tokens"] == 4
    assert res.requests.loc[0, "preemptions"] == 1
    assert res.summary["recomputed_tokens"] == 11


@pytest.mark.parametrize("schedule, message", [
    ([[(0, 11)]], "computes 11 tokens"),
    ([[(0, 10)], [(0, 1)], [(0, 1)], [(0, 1)], [(0, 1), (1, 5)]], "has finished"),
    ([[(0, 10)], [(0, 1)], [(1, 5)]], "unfinished"),
    ([[(0, 5), (0, 5)]], "appears twice"),
    ([FixedStep(((0, 5),), (0,))], "holds no KV"),
])
def test_an_impossible_schedule_names_its_step(schedule, message):
    reqs = RequestTable(np.array([0.0, 0.0]), np.array([10, 5]), np.array([4, 1]))
    with pytest.raises(SolverError, match=message):
        simulate(config("fixed"), requests=reqs, scheduler_factory=fixed_scheduler(schedule))


def test_budget_cache_and_sequence_cap_are_enforced():
    reqs = RequestTable(np.zeros(3), np.array([100, 100, 100]), np.array([2, 2, 2]))
    with pytest.raises(SolverError, match="max_num_batched_tokens"):
        simulate(config("fixed", budget=150), requests=reqs,
                 scheduler_factory=fixed_scheduler([[(0, 100), (1, 100)]]))
    with pytest.raises(SolverError, match="KV cache"):
        simulate(config("fixed", blocks=13), requests=reqs,
                 scheduler_factory=fixed_scheduler([[(0, 100), (1, 100)]]))
    capped = config("fixed").model_copy(update={"scheduler": config("fixed").scheduler
                                                .model_copy(update={"max_num_seqs": 1})})
    with pytest.raises(SolverError, match="max_num_seqs"):
        simulate(capped, requests=reqs, scheduler_factory=fixed_scheduler([[(0, 50), (1, 50)]]))


def test_fixed_needs_a_schedule():
    limits = SchedulerLimits(max_num_seqs=4, max_num_batched_tokens=64)
    with pytest.raises(ConfigError, match="fixed_scheduler"):
        make_scheduler("fixed", limits, BlockManager(10, 16))
    with pytest.raises(ConfigError, match="schedule"):
        fixed_scheduler([["not a pair"]])
