"""vLLM V1's scheduler (vllm/v1/core/sched/scheduler.py), reproduced rule by rule.

Token-centric: each step gives every request the tokens that let its computed tokens catch
up with its length, under the token budget ``max_num_batched_tokens`` and the sequence cap
``max_num_seqs``. Running requests go first, in order; when the KV cache cannot grow one,
the tail of the running list (FCFS; the least important under ``priority``) is preempted
until it can, or the request itself is. A step that preempted admits nobody; otherwise
waiting requests are admitted in queue order while budget, cap and KV blocks allow (the
first that does not fit stops admission). With ``reserve_full_isl`` (vLLM's
``scheduler_reserve_full_isl``) a request is admitted only if the blocks of its whole
sequence are free, not just those of its first chunk. Prefix-cache hits skip computing the
cached blocks.
"""

from __future__ import annotations

from infersim.simulator.schedulers.base import Scheduler, StepPlan, register


@register("vllm_v1")
class VllmV1Scheduler(Scheduler):
    def schedule(self, now: float) -> StepPlan:
        plan = StepPlan()
        limit = self.limits.max_num_batched_tokens
        running = self.running
        i = 0
        while i < len(running) and plan.num_tokens < limit:
            req = running[i]
            todo = req.prompt_len + req.num_output - req.num_computed
            new = self.chunk(req, todo, limit - plan.num_tokens)
            if not self.grow(req, new, plan):
                break
            plan.add(req, new)
            # under priority/SJF a victim may have been ahead of it in the list
            i = i + 1 if self.limits.policy == "fcfs" else running.index(req) + 1
        return self.admit_waiting(plan, now)
