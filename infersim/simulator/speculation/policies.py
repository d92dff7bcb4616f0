"""Length policies: how many drafts (or how large a tree) each verify carries.

A policy answers ``want(req)``: the draft length K (chains) or tree size in nodes (trees) it
would like for ``req`` this step; the speculator then caps it by the request's remaining
output and the step's token budget. ``begin(sched)`` runs once before each step is
scheduled (load-aware policies look at the batch there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from infersim.registry import Registry
from infersim.simulator.request import Request
from infersim.simulator.speculation.config import PolicyConfig

if TYPE_CHECKING:
    from infersim.simulator.speculation.speculator import Speculator

POLICIES: Registry[type[Policy]] = Registry("speculation policy")
register = POLICIES.register
CONTEXT_BUCKET = 128  # tokens: mean context is rounded to this for the load-aware cache
PREFILL_BUCKET = 256  # tokens: pending prefill work likewise


def make_policy(cfg: PolicyConfig, spec: Speculator) -> Policy:
    return POLICIES.lookup(cfg.name)(cfg, spec)


class Policy:
    name = "base"

    def __init__(self, cfg: PolicyConfig, spec: Speculator) -> None:
        self.cfg = cfg
        self.spec = spec

    def begin(self, sched) -> None:
        """Called before each step of ``sched`` is scheduled."""

    def want(self, req: Request) -> int:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@register("fixed")
class FixedPolicy(Policy):
    """Always the configured K (or tree size)."""

    def want(self, req: Request) -> int:
        return self.spec.largest_option

    def describe(self) -> str:
        unit = "nodes" if self.spec.tree_mode else "drafts"
        return f"fixed {self.spec.largest_option} {unit}"


@register("threshold")
class ThresholdPolicy(Policy):
    """SpecDec++ style, with the acceptance model as the predictor: draft position i only
    while its conditional acceptance a_i / a_(i-1) (a_0 = 1) stays at or above
    ``threshold``; K is the last such position. Per request, through its class."""

    def __init__(self, cfg, spec) -> None:
        super().__init__(cfg, spec)
        acc = spec.acceptance
        self._k = [self.stop(acc.vector(c), cfg.threshold)
                   for c in range(len(acc.class_names))]

    @staticmethod
    def stop(a: np.ndarray, threshold: float) -> int:
        prev = 1.0
        for i, ai in enumerate(a):
            if prev <= 0.0 or ai / prev < threshold:
                return i
            prev = ai
        return len(a)

    def want(self, req: Request) -> int:
        return self._k[self.spec.acceptance.class_of(req)]

    def describe(self) -> str:
        return f"threshold {self.cfg.threshold:g} (K per class: {self._k})"


@register("load_aware")
class LoadAwarePolicy(Policy):
    """SmartSpec style: before each step, for every option (K = 0..k, or tree sizes, 1 node
    being plain decoding) the expected tokens the batch's decodes emit over the step's
    seconds (verify + draft, with the drafter's overlap) from the cost models; the best
    option applies to every decode of the step. The batch is summarised by its decodes'
    count, mean context and class mix, and the prompt tokens in progress; the seconds are
    cached by (decodes, context / 128, prompt tokens / 256), so a step costs O(batch)."""

    def __init__(self, cfg, spec) -> None:
        super().__init__(cfg, spec)
        self.choice = 0
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def begin(self, sched) -> None:
        spec = self.spec
        acc = spec.acceptance
        counts = np.zeros(len(acc.class_names))
        n = context = pending = 0
        for r in sched.running:
            todo = r.prompt_len + r.num_output - r.num_computed
            if todo == 1 and r.num_output and r.output_len - r.num_output > 1:
                n += 1
                context += r.num_computed
                counts[acc.class_of(r)] += 1
            elif todo > 1:
                pending += todo
        if not n:
            return
        budget = sched.limits.max_num_batched_tokens
        prefill = max(0, min(pending, budget - n))
        key = (n, context // n // CONTEXT_BUCKET, prefill // PREFILL_BUCKET)
        seconds = self._cache.get(key)
        if seconds is None:
            seconds = spec.option_seconds(n, (key[1] + 0.5) * CONTEXT_BUCKET,
                                          key[2] * PREFILL_BUCKET)
            fits = n * (spec.option_extra + 1) <= max(budget, n)
            seconds = np.where(fits, seconds, np.inf)
            self._cache[key] = seconds
        tokens = counts @ spec.expected_tokens  # per option, summed over the decodes
        self.choice = int(spec.option_values[int(np.argmax(tokens / seconds))])

    def want(self, req: Request) -> int:
        return self.choice

    def describe(self) -> str:
        unit = "tree size 1.." if self.spec.tree_mode else "K 0.."
        return f"load-aware ({unit}{self.spec.largest_option} per step)"
