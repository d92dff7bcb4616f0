"""Orca (Yu et al., OSDI 2022): iteration-level scheduling without chunking.

Each step runs one iteration of every running request (a decode token, or the whole prompt
of a newly admitted one) and admits waiting requests in arrival order while the sequence
cap allows and the KV cache can hold their prompt plus their maximum output, which Orca
reserves up front; so nothing is ever preempted. The token budget caps the prompt tokens a
step admits, except that the first prompt of a step is admitted whatever its length (Orca
does not chunk).
"""

from __future__ import annotations

from infersim.simulator.schedulers.base import Scheduler, StepPlan, register


@register("orca")
class OrcaScheduler(Scheduler):
    supports_chunked_prefill = False
    obeys_token_budget = False
    holds_reservation = True

    def reservation(self, req) -> int:
        return req.prompt_len + req.output_len

    def schedule(self, now: float) -> StepPlan:
        plan = StepPlan()
        for req in self.running:
            todo = req.prompt_len + req.num_output - req.num_computed
            if todo == 1:  # a decode; drafts stay within the reserved output
                todo += self.draft_tokens(req, 1 << 62)
            plan.add(req, todo)  # its blocks were reserved at admission
        limit = self.limits.max_num_batched_tokens
        prompts = 0
        while self.waiting and len(self.running) < self.limits.max_num_seqs:
            budget = limit - prompts if prompts else max(limit, self._head_todo())
            new = self.try_admit(plan, budget, now)
            if not new:
                break
            prompts += new
        return plan

    def _head_todo(self) -> int:
        req = self.waiting.peek()
        return req.prompt_len + req.num_output - req.num_computed
