"""Sarathi-Serve (Agrawal et al., OSDI 2024): stall-free batching with chunked prefills.

Every step first schedules one token for every running decode, then continues the prefills
already in progress, then admits new requests, all under the token budget. Decodes never
wait behind a long prompt: the prompt is cut into chunks that fill what the decodes leave.
Admission, preemption (tail first) and the KV cache behave as in vLLM V1, on which
Sarathi-Serve was built.
"""

from __future__ import annotations

from infersim.simulator.schedulers.base import Scheduler, StepPlan, register


@register("sarathi")
class SarathiScheduler(Scheduler):
    def schedule(self, now: float) -> StepPlan:
        plan = StepPlan()
        limit = self.limits.max_num_batched_tokens
        decodes = [r for r in self.running
                   if r.prompt_len + r.num_output - r.num_computed == 1]
        prefills = [r for r in self.running
                    if r.prompt_len + r.num_output - r.num_computed > 1]
        for group in (decodes, prefills):
            for req in group:
                if plan.num_tokens >= limit:
                    break
                if req not in self.running:  # preempted while making room for another
                    continue
                todo = req.prompt_len + req.num_output - req.num_computed
                new = self.chunk(req, todo, limit - plan.num_tokens)
                if self.grow(req, new, plan):
                    plan.add(req, new)
        return self.admit_waiting(plan, now)
