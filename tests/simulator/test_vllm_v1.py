"""Each vLLM V1 scheduling rule on a hand-built scenario (vllm/v1/core/sched/scheduler.py)."""

from __future__ import annotations

from infersim.simulator.request import FINISHED, RUNNING, WAITING, Request


def step(sched, now: float = 0.0):
    plan = sched.schedule(now)
    finished = sched.complete(plan, now + 1.0, [])
    return plan, finished


def tokens(plan) -> dict[int, int]:
    return {r.id: n for r, n in plan.scheduled}


def test_long_prompt_is_split_by_the_token_budget(make_v1, new_request):
    sched = make_v1(max_num_batched_tokens=2048)
    r = new_request(0, 5000, 3)
    sched.add(r)
    chunks = []
    for _ in range(3):
        plan, _ = step(sched)
        chunks.append(tokens(plan)[0])
    assert chunks == [2048, 2048, 904]
    assert r.num_output == 1 and r.first_token == 1.0  # the last chunk samples the 1st token
    plan, _ = step(sched)
    assert tokens(plan) == {0: 1}  # then one token per step


def test_first_token_only_when_the_prompt_completes(make_v1, new_request):
    sched = make_v1(max_num_batched_tokens=100)
    r = new_request(0, 250, 2)
    sched.add(r)
    step(sched)
    step(sched)
    assert r.num_output == 0 and r.first_token < 0
    step(sched)
    assert r.num_output == 1


def test_a_partial_prompt_chunk_has_an_lm_head_row(make_v1, new_request):
    # vLLM V1 computes logits at every scheduled request's last token, a partial prefill's
    # too (its sampled token is discarded): the step's LM head rows are its sequences
    sched = make_v1(max_num_batched_tokens=100)
    r = new_request(0, 250, 2)
    sched.add(r)
    plan = sched.schedule(0.0)
    assert plan.scheduled == [(r, 100)] and plan.shape.sampled == 1
    sched.complete(plan, 1.0, [])
    assert r.num_output == 0


def test_long_prefill_threshold_caps_chunks_and_shares_the_budget(make_v1, new_request):
    sched = make_v1(max_num_batched_tokens=2048, long_prefill_token_threshold=512)
    for i in range(3):
        sched.add(new_request(i, 3000, 2))
    plan, _ = step(sched)
    assert tokens(plan) == {0: 512, 1: 512, 2: 512}


def test_sequence_cap_limits_admission(make_v1, new_request):
    sched = make_v1(max_num_seqs=2)
    for i in range(3):
        sched.add(new_request(i, 10, 5))
    plan, _ = step(sched)
    assert set(tokens(plan)) == {0, 1}
    assert [r.id for r in sched.waiting] == [2]


def test_running_requests_go_first_in_order_and_share_the_budget(make_v1, new_request):
    sched = make_v1(max_num_batched_tokens=64)
    sched.add(new_request(0, 40, 5))
    step(sched)  # 0 prefilled, now decoding
    sched.add(new_request(1, 100, 5))
    plan, _ = step(sched)
    assert list(tokens(plan).items()) == [(0, 1), (1, 63)]


def _fill(sched, prompts, outputs):
    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        sched.add(Request(i, 0.0, p, o))
    return step(sched)


def test_tail_of_running_is_preempted_when_blocks_run_out(make_v1):
    # 6 blocks of 4 tokens; two requests of 8 + 10 tokens: each grows to 3 blocks, then the
    # first needs a 4th with none free and the tail of the running list is preempted.
    sched = make_v1(blocks=6, block_size=4, reserve_full_isl=False)
    _fill(sched, [8, 8], [10, 10])
    first, second = sched.running
    plan = None
    while not (plan and plan.preempted):
        plan, _ = step(sched)
    assert plan.preempted == 1
    assert tokens(plan) == {first.id: 1}
    assert first.status == RUNNING and first.blocks == 4
    assert second.status == WAITING and second.num_computed == 0 and second.blocks == 0
    assert second.preemptions == 1 and sched.waiting.peek() is second


def _state(req: Request, computed: int, outputs: int) -> Request:
    req.num_computed, req.num_output = computed, outputs
    return req


def test_no_admission_in_a_step_that_preempted(make_v1):
    # A (1 block) and B (3 blocks) run, 1 block free. A takes it; B then preempts itself.
    # With a budget of 5 tokens, B's first recompute chunk (4 tokens, 1 block) would fit in
    # the 3 blocks it freed, but a step that preempted admits nobody.
    sched = make_v1(blocks=5, block_size=4, max_num_batched_tokens=5, reserve_full_isl=False)
    a = _state(Request(0, 0.0, 4, 10), computed=4, outputs=1)
    b = _state(Request(1, 0.0, 12, 10), computed=12, outputs=1)
    for req in (a, b):
        sched.kv.grow(req, req.num_computed)
    sched.running = [a, b]
    assert sched.kv.free == 1
    plan = sched.schedule(0.0)
    assert plan.preempted == 1 and tokens(plan) == {0: 1}
    assert list(sched.waiting) == [b] and sched.running == [a]
    sched.complete(plan, 1.0, [])
    plan = sched.schedule(1.0)  # the next step admits again
    assert tokens(plan) == {0: 1, 1: 4}


def test_a_request_that_cannot_grow_preempts_itself(make_v1, new_request):
    sched = make_v1(blocks=2, block_size=4, reserve_full_isl=False)
    sched.add(new_request(0, 8, 5))
    step(sched)
    plan, _ = step(sched)  # needs a 3rd block and nobody else to preempt
    assert plan.preempted == 1 and not plan.scheduled
    assert sched.waiting.peek().id == 0 and not sched.running


def test_preempted_request_recomputes_prompt_and_output(make_v1):
    sched = make_v1(blocks=6, block_size=4, reserve_full_isl=False)
    _fill(sched, [8, 8], [10, 10])
    second = sched.running[1]
    while not second.preemptions:
        step(sched)
    generated = second.num_output
    plan = None
    while second.num_computed == 0:
        plan, _ = step(sched)
    # readmitted: it recomputes its prompt plus what it had generated, then samples the next
    assert tokens(plan)[second.id] == 8 + generated
    assert second.num_output == generated + 1


def test_reserve_full_isl_gates_admission_on_the_whole_prompt(make_v1, new_request):
    for reserve, admitted in ((True, False), (False, True)):
        sched = make_v1(blocks=10, block_size=16, max_num_batched_tokens=32,
                        reserve_full_isl=reserve)
        sched.add(new_request(0, 200, 2))  # 13 blocks in all, its first chunk needs 2
        plan, _ = step(sched)
        assert bool(plan.scheduled) is admitted


def test_request_finishes_after_its_output_and_frees_blocks(make_v1, new_request):
    sched = make_v1(blocks=100)
    r = new_request(0, 20, 3)
    sched.add(r)
    finished = []
    while not finished:
        _, finished = step(sched)
    assert finished == [r] and r.status == FINISHED and r.num_output == 3
    assert sched.kv.free == 100 and not sched.running


def test_decode_run_stops_at_a_finish_at_block_exhaustion_and_at_admission(make_v1, new_request):
    sched = make_v1(blocks=100, block_size=4)
    _fill(sched, [8, 8], [6, 50])
    assert sched.decode_run(1000).steps == 5  # the first finishes after 5 more tokens
    sched2 = make_v1(blocks=6, block_size=4)
    _fill(sched2, [8, 8], [50, 50])  # 4 blocks held, 2 free: each needs a block at once,
    assert sched2.decode_run(1000).steps == 4  # then again after 4 tokens: no room
    sched3 = make_v1(blocks=100, block_size=4)
    _fill(sched3, [8, 8], [50, 50])
    sched3.add(new_request(9, 4, 4))
    assert sched3.decode_run(1000) is None  # the next step admits someone
