"""The defining behaviour of each scheduler in the family, on hand-built scenarios."""

from __future__ import annotations

import pytest

from infersim.simulator import SCHEDULERS, SimConfig, simulate
from infersim.simulator.request import FINISHED, SWAPPED, WAITING, Request


def step(sched, now: float = 0.0):
    plan = sched.schedule(now)
    finished = sched.complete(plan, now + 1.0, [])
    return plan, finished


def tokens(plan) -> dict[int, int]:
    return {r.id: n for r, n in plan.scheduled}


def test_the_family_is_registered():
    assert {"static", "orca", "vllm_v0", "vllm_v1", "sarathi"} <= set(SCHEDULERS)


def test_static_batch_runs_to_its_longest_request_and_admits_nobody_meanwhile(
        make_scheduler_of):
    sched = make_scheduler_of("static", max_num_seqs=2)
    short, long_ = Request(0, 0, 10, 2), Request(1, 0, 30, 5)
    sched.add(short)
    sched.add(long_)
    plan, _ = step(sched)
    assert tokens(plan) == {0: 10, 1: 30}
    assert plan.prefill_seqs == 2 and plan.prefill_tokens == 60  # padded to the longest
    late = Request(2, 0, 5, 1)
    sched.add(late)
    seqs, sampled = [], []
    while long_.status != FINISHED:
        plan, _ = step(sched)
        assert 2 not in tokens(plan)  # nobody joins a running batch
        seqs.append(plan.decode_seqs)
        sampled.append(plan.sampled)
    assert short.status == FINISHED and short.num_output == 2
    assert seqs == [2, 2, 2, 2]  # the finished request stays as padding to the end
    assert sampled == [2, 2, 2, 2]  # padding computes its LM head row too
    plan, _ = step(sched)
    assert tokens(plan) == {2: 5}  # the next batch


def test_orca_runs_whole_prompts_joins_next_iteration_and_never_preempts(make_scheduler_of):
    sched = make_scheduler_of("orca", blocks=30, block_size=4, max_num_batched_tokens=16)
    a = Request(0, 0, 40, 20)  # a prompt longer than the budget, computed in one step
    sched.add(a)
    plan, _ = step(sched)
    assert tokens(plan) == {0: 40} and a.blocks == 15  # prompt + max output reserved
    b = Request(1, 0, 8, 30)  # needs 10 blocks: fits the 15 left
    sched.add(b)
    plan, _ = step(sched)
    assert tokens(plan) == {0: 1, 1: 8}  # joins at the next iteration
    c = Request(2, 0, 8, 40)  # 12 blocks: only 5 left, waits (no preemption ever)
    sched.add(c)
    while a.status != FINISHED:
        plan, _ = step(sched)
        assert plan.preempted == 0 and 2 not in tokens(plan)
    plan, _ = step(sched)
    assert 2 in tokens(plan)


def test_vllm_v0_prefills_stall_decodes(make_scheduler_of):
    sched = make_scheduler_of("vllm_v0", max_num_batched_tokens=100)
    a = Request(0, 0, 20, 10)
    sched.add(a)
    step(sched)
    sched.add(Request(1, 0, 50, 10))
    plan, _ = step(sched)
    assert tokens(plan) == {1: 50}  # a prefill step: the decode of request 0 waits
    plan, _ = step(sched)
    assert tokens(plan) == {0: 1, 1: 1}
    sched.add(Request(2, 0, 200, 1))  # longer than the budget: never a V0 prefill
    plan, _ = step(sched)
    assert 2 not in tokens(plan)


def test_vllm_v0_keeps_a_watermark_of_free_blocks(make_scheduler_of):
    # V0's can_allocate: free - needed >= watermark (1% of 100 blocks = 1 block)
    sched = make_scheduler_of("vllm_v0", blocks=100, block_size=4)
    sched.add(Request(0, 0, 400, 2))  # all 100 blocks: would leave none
    plan, _ = step(sched)
    assert not plan.scheduled
    sched2 = make_scheduler_of("vllm_v0", blocks=100, block_size=4)
    sched2.add(Request(0, 0, 396, 2))  # 99 blocks leaves the watermark block
    plan, _ = step(sched2)
    assert tokens(plan) == {0: 396}


def _decoding(req: Request, sched) -> Request:
    req.num_computed, req.num_output = req.prompt_len, 1
    sched.kv.grow(req, req.num_computed)
    return req


def test_sarathi_never_stalls_a_decode_behind_a_prefill(make_scheduler_of):
    for name, decode_tokens in (("vllm_v1", 0), ("sarathi", 1)):
        sched = make_scheduler_of(name, max_num_batched_tokens=512)
        long_ = Request(0, 0, 5000, 5)
        long_.num_computed = 512
        sched.kv.grow(long_, 512)
        decoder = _decoding(Request(1, 0, 10, 5), sched)
        sched.running = [long_, decoder]  # the prefill is ahead in the running list
        plan, _ = step(sched)
        assert tokens(plan).get(1, 0) == decode_tokens, name
        assert plan.num_tokens == 512


@pytest.mark.parametrize("name", ["vllm_v1", "sarathi", "vllm_v0"])
def test_swap_preemption_keeps_the_kv_and_brings_it_back(make_scheduler_of, name):
    sched = make_scheduler_of(name, blocks=6, block_size=4, reserve_full_isl=False,
                              preemption="swap", swap_blocks=10)
    for i in range(2):
        sched.add(Request(i, 0, 8, 10))
    second = None
    swapped_out = swapped_in = 0
    for _ in range(40):
        plan, _ = step(sched)
        swapped_out += plan.swapped_out
        swapped_in += plan.swapped_in
        if plan.preempted:
            second = next(iter(sched.swapped))
            assert second.status == SWAPPED and second.num_computed > 0
            assert second.blocks == 0 and sched.host_free == 10 - second.swapped
    assert second is not None and second.status == FINISHED
    assert swapped_out == swapped_in > 0 and sched.host_free == 10
    assert sched.recomputed_tokens == 0


def test_priority_admits_and_preempts_by_priority(make_scheduler_of):
    sched = make_scheduler_of("vllm_v1", max_num_seqs=1, policy="priority")
    sched.add(Request(0, 0.0, 10, 5, priority=2))
    sched.add(Request(1, 1.0, 10, 5, priority=0))  # later but more important
    plan, _ = step(sched)
    assert tokens(plan) == {1: 10}
    sched = make_scheduler_of("vllm_v1", blocks=6, block_size=4, reserve_full_isl=False,
                              policy="priority")
    low, high = Request(0, 0, 8, 10, priority=1), Request(1, 0, 8, 10, priority=0)
    sched.add(high)
    sched.add(low)
    plan = None
    while not (plan and plan.preempted):
        plan, _ = step(sched)
    assert low.status == WAITING and low.preemptions == 1 and high.preemptions == 0


def test_sjf_admits_the_shortest_job_first(make_scheduler_of):
    sched = make_scheduler_of("vllm_v1", max_num_seqs=1, policy="sjf")
    sched.add(Request(0, 0.0, 100, 500))
    sched.add(Request(1, 1.0, 100, 5))
    plan, _ = step(sched)
    assert tokens(plan) == {1: 100}


@pytest.mark.parametrize("name", ["static", "orca", "vllm_v0", "vllm_v1", "sarathi"])
def test_every_scheduler_serves_a_workload_with_invariants_checked(name):
    cfg = SimConfig.from_dict({
        "scheduler": {"name": name, "num_gpu_blocks": 1500, "preemption": "swap"},
        "workload": {"arrival": {"process": "poisson", "rate": 30}, "num_requests": 150},
        "check": True})
    result = simulate(cfg)
    assert result.summary["completed"] == 150


def test_swap_time_is_charged_to_the_step_over_the_host_link():
    cfg = SimConfig.from_dict({
        "scheduler": {"num_gpu_blocks": 700, "preemption": "swap", "reserve_full_isl": False},
        "workload": {"arrival": {"process": "poisson", "rate": 40}, "num_requests": 200},
        "fast_forward": False})
    swap = simulate(cfg)
    assert swap.steps["swapped_blocks"].sum() > 0 and swap.summary["recomputed_tokens"] == 0
    recompute = simulate(cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(
        update={"preemption": "recompute"})}))
    assert recompute.summary["recomputed_tokens"] > 0
    assert recompute.steps["swapped_blocks"].sum() == 0
