"""vLLM V0's default scheduler (vllm/core/scheduler.py, ``_schedule_default``).

Prefill-prioritising, without chunked prefill: when no request is swapped out and a waiting
request's whole prompt fits the token budget, the sequence cap and the free blocks (keeping
a 1% watermark free), the step is a prefill step of as many waiting requests as fit, and
the running decodes wait. Otherwise the step decodes every running request; when blocks run
out, the most recently arrived running request is preempted, by recompute or by swapping its
KV cache to host memory (``preemption: swap``); swapped requests come back before any new
prefill is admitted.
"""

from __future__ import annotations

from infersim.simulator.schedulers.base import Scheduler, StepPlan, register


@register("vllm_v0")
class VllmV0Scheduler(Scheduler):
    supports_chunked_prefill = False
    default_watermark = 0.01

    def reservation(self, req) -> int:
        return 0  # V0 allocates the whole prompt at admission: the chunk is the prompt

    def schedule(self, now: float) -> StepPlan:
        plan = StepPlan()
        limit = self.limits.max_num_batched_tokens
        if not self.swapped:
            while (self.waiting and len(self.running) < self.limits.max_num_seqs
                   and self.try_admit(plan, limit - plan.num_tokens, now)):
                pass
            if plan.scheduled:
                return plan
        for req in list(self.running):
            if req not in self.running:  # preempted to make room for an earlier one
                continue
            if plan.num_tokens >= limit:
                break
            new = 1 + self.draft_tokens(req, limit - plan.num_tokens)
            if self.grow(req, new, plan):
                plan.add(req, new)
        if not plan.preempted and self.swapped:
            self.swap_in(plan, limit - plan.num_tokens)
        return plan
