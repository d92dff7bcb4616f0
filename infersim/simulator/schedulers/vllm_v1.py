"""vLLM V1's scheduler (vllm/v1/core/sched/scheduler.py), reproduced rule by rule.

Token-centric: each step gives every request the tokens that let its computed tokens catch
up with its length, under the token budget ``max_num_batched_tokens`` and the sequence cap
``max_num_seqs``. Running requests go first, in order; when the KV cache cannot grow one,
the tail of the running list is preempted (recompute) until it can, or the request itself
is. A step that preempted admits nobody; otherwise waiting requests are admitted in FCFS
order while budget, cap and KV blocks allow (the first that does not fit stops admission).
With ``reserve_full_isl`` (vLLM's ``scheduler_reserve_full_isl``, on by default since it was
introduced) a waiting request is admitted only if the blocks of its whole sequence (prompt
plus any output generated before a preemption) are free, not just those of its first chunk.
"""

from __future__ import annotations

import numpy as np

from infersim.simulator.schedulers.base import DecodeRun, Scheduler, StepPlan, register


@register("vllm_v1")
class VllmV1Scheduler(Scheduler):
    def _chunk(self, req, budget: int) -> int:
        new = req.prompt_len + req.num_output - req.num_computed
        threshold = self.limits.long_prefill_token_threshold
        if 0 < threshold < new:
            new = threshold
        return min(new, budget)

    def schedule(self, now: float) -> StepPlan:
        plan = StepPlan()
        budget = self.limits.max_num_batched_tokens
        running, kv = self.running, self.kv
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            new = self._chunk(req, budget)
            while not kv.allocate(req, new):
                victim = running.pop()
                self.preempt(victim)
                plan.preempted += 1
                if victim is req:
                    break
            else:
                plan.add(req, new)
                budget -= new
                i += 1
                continue
            break
        if plan.preempted:
            return plan
        waiting = self.waiting
        while waiting and budget > 0 and len(running) < self.limits.max_num_seqs:
            req = waiting[0]
            new = self._chunk(req, budget)
            full = req.prompt_len + req.num_output - req.num_computed
            if not self.limits.enable_chunked_prefill and full > budget:
                break
            if self.limits.reserve_full_isl and not self._fits_whole(req, kv.free):
                break
            if not kv.allocate(req, new):
                break
            waiting.popleft()
            self.admit(req, now)
            plan.add(req, new)
            budget -= new
        return plan

    def decode_run(self, max_steps: int) -> DecodeRun | None:
        state = self.decode_state()
        if state is None:
            return None
        computed, blocks, left = state
        steps = int(min(left.min(), max_steps))
        if steps < 2:
            return None
        demand = self.block_demand(computed, blocks, steps)
        free = self.kv.free
        if demand[0] > free or self._can_admit(free - int(demand[0])):
            return None  # the next step preempts or admits
        fits = int(np.searchsorted(demand, free, side="right"))  # demand is non-decreasing
        if fits < 2:
            return None
        return DecodeRun(fits, int(computed.sum()), demand[:fits])

    def _can_admit(self, free_after_decodes: int) -> bool:
        """Would the next step admit the head of the waiting queue? Free blocks only shrink
        while decodes run, so a head that cannot be admitted now cannot be later."""
        if not self.waiting or len(self.running) >= self.limits.max_num_seqs:
            return False
        budget = self.limits.max_num_batched_tokens - len(self.running)
        if budget <= 0:
            return False
        head = self.waiting[0]
        new = self._chunk(head, budget)
        full = head.prompt_len + head.num_output - head.num_computed
        if not self.limits.enable_chunked_prefill and full > budget:
            return False
        if self.limits.reserve_full_isl and not self._fits_whole(head, free_after_decodes):
            return False
        need = self.kv.blocks_for(head.num_computed + new) - head.blocks
        return need <= free_after_decodes

    def _fits_whole(self, req, free: int) -> bool:
        return self.kv.blocks_for(req.prompt_len + req.num_output) - req.blocks <= free
