"""Static (request-level) batching, as FasterTransformer served requests.

When the engine is empty, up to ``max_num_seqs`` waiting requests whose prompt plus maximum
output fit the KV cache form a batch. The batch computes its prompts padded to the longest
one, then decodes until its longest output is done; requests that finish earlier keep
their slot as padding, and nobody joins until the whole batch is done.
"""

from __future__ import annotations

from infersim.simulator.request import FINISHED
from infersim.simulator.schedulers.base import Scheduler, StepPlan, register


@register("static")
class StaticScheduler(Scheduler):
    supports_chunked_prefill = False
    obeys_token_budget = False
    holds_reservation = True
    fast_forward = False
    supports_speculation = False  # padded batches: nothing to verify

    def __init__(self, limits, kv) -> None:
        super().__init__(limits, kv)
        self.batch: list = []
        self.padded_prompt = 0
        self.steps_done = 0

    def reservation(self, req) -> int:
        return req.prompt_len + req.output_len

    def schedule(self, now: float) -> StepPlan:
        plan = StepPlan()
        if self.batch and all(r.status == FINISHED for r in self.batch):
            self.batch = []
        if not self.batch:
            while self.waiting and len(self.running) < self.limits.max_num_seqs:
                if not self.try_admit(StepPlan(), 1 << 62, now):
                    break
            self.batch = list(self.running)
            self.padded_prompt = max((r.prompt_len for r in self.batch), default=0)
            self.steps_done = 0
            for req in self.batch:  # the whole batch computes padded prompts
                plan.scheduled.append((req, req.prompt_len + req.num_output - req.num_computed))
                plan.count(self.padded_prompt, 0, True)
            return plan
        self.steps_done += 1
        context = self.padded_prompt + self.steps_done - 1
        for req in self.batch:  # a finished request's row is padding: computed (LM head
            if req.status != FINISHED:  # too) and thrown away
                plan.scheduled.append((req, 1))
            plan.count(1, context, True)
        return plan
