"""The speculator: what a scheduler asks while speculating, and what a step costs.

``Speculation`` is built once per run (acceptance model and its random streams, the tree
table, the counters); ``Speculator`` once per pool (the drafter and policy, bound to the
pool's target cost model) and set as ``scheduler.spec`` on each of the pool's replicas.

The scheduler side (``schedulers.base``) is vLLM V1's ``num_tokens_with_spec``: a decoding
request with K drafts computes 1 + K tokens (they count against the token budget, and its
KV allocation holds the K lookahead slots); afterwards it emits N = accepted + 1 tokens, all
at the step's end, and its computed tokens advance by N (the rejected drafts' KV is dropped).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from infersim.costmodels import BatchShape, CostModel, MemoryPlan
from infersim.errors import ConfigError
from infersim.optimizer.trees import DraftTree, tree_table
from infersim.simulator.request import Request
from infersim.simulator.schedulers.base import StepPlan
from infersim.simulator.speculation.acceptance import (
    TreeAcceptance,
    count_accepted,
    make_acceptance,
)
from infersim.simulator.speculation.config import SpeculationConfig
from infersim.simulator.speculation.drafters import kv_blocks_with_drafter, make_drafter
from infersim.simulator.speculation.policies import make_policy

TREE_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class SpecStats:
    """Counters over a run: verifies, drafts proposed and accepted (per acceptance class),
    draft and verify seconds, and the draft lengths of every decode (K = 0 included)."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = classes
        self.verifies = np.zeros(len(classes), dtype=np.int64)
        self.proposed = np.zeros(len(classes), dtype=np.int64)
        self.accepted = np.zeros(len(classes), dtype=np.int64)
        self.draft_s = 0.0
        self.verify_s = 0.0
        self.steps = 0
        self.overlapped_steps = 0
        self.k_counts: dict[int, int] = {}

    def summary(self, busy_s: float, method: str, drafter: str, policy: str) -> dict:
        verifies, proposed, accepted = (int(x.sum()) for x in
                                        (self.verifies, self.proposed, self.accepted))
        decodes = sum(self.k_counts.values())
        out = {
            "method": method, "drafter": drafter, "policy": policy,
            "verifies": verifies, "proposed_tokens": proposed, "accepted_tokens": accepted,
            "acceptance_rate": accepted / proposed if proposed else math.nan,
            "mean_accepted_length": (accepted + verifies) / verifies if verifies else math.nan,
            "draft_s": self.draft_s, "verify_s": self.verify_s,
            "draft_share": self.draft_s / busy_s if busy_s else math.nan,
            "verify_share": self.verify_s / busy_s if busy_s else math.nan,
            "overlapped_steps": self.overlapped_steps,
            "mean_k": (sum(k * c for k, c in self.k_counts.items()) / decodes
                       if decodes else math.nan),
            "k_counts": {str(k): self.k_counts[k] for k in sorted(self.k_counts)},
        }
        if len(self.classes) > 1:
            out["classes"] = {
                name: {"verifies": int(v),
                       "acceptance_rate": float(a / p) if p else math.nan,
                       "mean_accepted_length": float((a + v) / v) if v else math.nan}
                for name, v, p, a in zip(self.classes, self.verifies, self.proposed,
                                         self.accepted, strict=True)}
        return out


class Speculation:
    """Run-wide speculation state: one acceptance model (its streams shared by all
    replicas, drawn in simulation order, so a seed gives one result), the tree table, the
    counters."""

    def __init__(self, cfg: SpeculationConfig, seed: int, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        tree = cfg.tree
        self.tree_mode = tree is not None
        if tree is not None:
            self.table = tree_table(tree.accept, tree.nodes, tree.depth)
            self.acceptance = TreeAcceptance(seed)
        else:
            self.acceptance = make_acceptance(cfg.acceptance, cfg.k, seed, base_dir)
        self.stats = SpecStats(self.acceptance.class_names)
        self._trees: dict[tuple[int, int], tuple[DraftTree, list[float]]] = {}
        self.speculators: list[Speculator] = []

    def speculator(self, target: CostModel) -> Speculator:
        spec = Speculator(self, target)
        self.speculators.append(spec)
        return spec

    def tree(self, nodes: int, depth: int) -> tuple[DraftTree, list[float]]:
        """The best tree of ``nodes`` nodes and depth <= ``depth``, with its -a_t."""
        hit = self._trees.get((nodes, depth))
        if hit is None:
            t = self.table.tree(nodes, depth)
            hit = (t, (-t.position_acceptance(self.cfg.tree.accept)).tolist())
            self._trees[(nodes, depth)] = hit
        return hit

    def summary(self, busy_s: float) -> dict:
        first = self.speculators[0]
        return self.stats.summary(busy_s, self.cfg.method, first.drafter.describe(),
                                  first.policy.describe())


class Speculator:
    """One pool's drafter and policy, bound to its target cost model."""

    def __init__(self, run: Speculation, target: CostModel) -> None:
        self.run, self.cfg = run, run.cfg
        self.acceptance, self.stats = run.acceptance, run.stats
        self.target = target
        self.drafter = make_drafter(self.cfg, target)
        self.tree_mode = run.tree_mode
        if self.tree_mode:
            table = run.table
            self.depth = self.cfg.tree.depth
            largest = table.largest()
            sizes = sorted({s for s in TREE_SIZES if s <= largest} | {largest})
            self.option_values = np.array(sizes)
            self.option_extra = self.option_values - 1
            self.option_passes = [table.tree(n).depth for n in sizes]
            self.expected_tokens = np.array([[table.score(n) for n in sizes]])
            self.largest_option = largest
        else:
            k = self.cfg.k
            self.option_values = np.arange(k + 1)
            self.option_extra = self.option_values
            self.option_passes = list(range(k + 1))
            self.expected_tokens = np.array([
                np.concatenate(([1.0], 1.0 + np.cumsum(self.acceptance.vector(c))))
                for c in range(len(self.acceptance.class_names))])
            self.largest_option = k
        self.policy = make_policy(self.cfg.policy, self)

    # --- memory -------------------------------------------------------------------------
    def kv_blocks(self, memory: MemoryPlan, block_size: int) -> int:
        return kv_blocks_with_drafter(memory, block_size, self.drafter)

    # --- scheduling ---------------------------------------------------------------------
    def begin(self, sched) -> None:
        self.policy.begin(sched)

    def drafts(self, req: Request, budget: int) -> int:
        """Extra tokens a decode of ``req`` verifies this step (K drafts, or tree nodes
        below the root), within ``budget`` tokens in all; never so many that it could emit
        past its output length."""
        left = req.output_len - req.num_output
        if left < 2 or budget < 2:
            return 0
        want = self.policy.want(req)
        if not self.tree_mode:
            return max(0, min(want, left - 1, budget - 1))
        nodes = min(want, left, budget)
        if nodes < 2:
            return 0
        depth = min(self.depth, left - 1, nodes - 1)
        return min(nodes, self.run.table.largest(depth)) - 1

    def emitted(self, req: Request, extra: int) -> int:
        """Tokens the verify of ``extra`` drafts of ``req`` emits (sampled, 1..depth+1)."""
        acc = self.acceptance
        if self.tree_mode:
            left = req.output_len - req.num_output
            _, neg = self.run.tree(extra + 1, min(self.depth, left - 1, extra))
            n = 1 + count_accepted(neg, len(neg), acc.uniforms.next())
        else:
            n = acc.draw(req, extra)
        c = acc.class_of(req)
        stats = self.stats
        stats.verifies[c] += 1
        stats.proposed[c] += extra
        stats.accepted[c] += n - 1
        return n

    def _passes(self, req: Request, extra: int) -> int:
        if not self.tree_mode:
            return extra
        left = req.output_len - req.num_output
        return self.run.tree(extra + 1, min(self.depth, left - 1, extra))[0].depth

    # --- cost ---------------------------------------------------------------------------
    def step_seconds(self, plan: StepPlan) -> float:
        """Seconds of a step: the target's verify (``plan.shape``: each speculating decode
        is a chunk of q = 1 + K on its cached tokens, every row sampled) plus drafting.
        Drafting on the target's devices is serial with the verify. A drafter on other
        devices overlaps only across requests (a request's next drafts need this verify):
        the batch may split into two halves that alternate, one drafting while the other
        verifies, which takes max(V_A, D_B) + max(V_B, D_A) for a round in which every
        request is verified once; the engine takes that or the serial V + D, whichever is
        shorter (one request: always serial). Records ``plan.draft_s``/``verify_s``."""
        drafter = self.drafter
        overlap = drafter.overlaps and plan.spec_seqs > 1
        halves = (StepPlan(), StepPlan()) if overlap else None
        prefill = StepPlan()
        count: dict[int, int] = {}  # passes -> requests
        context: dict[int, int] = {}
        hcount: tuple[dict, dict] = ({}, {})
        hcontext: tuple[dict, dict] = ({}, {})
        kc = self.stats.k_counts
        side = 0
        for req, new in plan.scheduled:
            k = req.num_computed
            todo = req.prompt_len + req.num_output - k
            if todo == 1 and req.num_output:  # a decode, speculating or not
                extra = new - 1
                kc[extra] = kc.get(extra, 0) + 1
                if extra:
                    p = self._passes(req, extra)
                    count[p] = count.get(p, 0) + 1
                    context[p] = context.get(p, 0) + k
                    if overlap:
                        hcount[side][p] = hcount[side].get(p, 0) + 1
                        hcontext[side][p] = hcontext[side].get(p, 0) + k
                if overlap:
                    halves[side].count(new, k, new)
                    side ^= 1
            else:
                if new > 1:
                    prefill.count(new, k, 0)
                if overlap:
                    halves[0].count(new, k, new >= todo)
        pre = prefill.shape
        pre_s = drafter.prefill_seconds(pre) if drafter.cost is not None else 0.0
        verify = self.target.step_time(plan.shape)
        draft = drafter.draft_seconds(_passes(count, context)) + pre_s
        duration = verify + draft
        if overlap:
            va, vb = (self.target.step_time(h.shape) if h.num_tokens else 0.0 for h in halves)
            da = drafter.draft_seconds(_passes(hcount[0], hcontext[0])) + pre_s
            db = drafter.draft_seconds(_passes(hcount[1], hcontext[1]))
            pipelined = max(va, db) + max(vb, da)
            if pipelined < duration:
                duration, verify, draft = pipelined, va + vb, da + db
                self.stats.overlapped_steps += 1
        plan.draft_s, plan.verify_s = draft, verify
        self.stats.draft_s += draft
        self.stats.verify_s += verify
        self.stats.steps += 1
        return duration

    def option_seconds(self, n: int, context: float, prefill: int) -> np.ndarray:
        """Seconds of a step of ``n`` decodes on ``context`` cached tokens each (mean) plus
        a ``prefill``-token prompt chunk, for each option (K, or tree size), drafting as in
        :meth:`step_seconds`."""
        ctx = int(context)
        pre = BatchShape.uniform(1, prefill, 0, sampled=False) if prefill else BatchShape()
        drafter = self.drafter
        pre_s = drafter.prefill_seconds(pre) if drafter.cost is not None and prefill else 0.0

        def verify(m: int, extra: int, with_pre: bool) -> float:
            if m == 0:
                shape = BatchShape()
            elif extra:
                shape = replace(BatchShape.uniform(m, extra + 1, ctx), sampled=m * (extra + 1))
            else:
                shape = BatchShape.uniform(m, 1, ctx)
            return self.target.step_time(shape + pre if with_pre else shape)

        def draft(m: int, passes: int, with_pre: bool) -> float:
            work = drafter.draft_seconds([(m, m * (ctx + j)) for j in range(passes)]) \
                if m and passes else 0.0
            return work + (pre_s if with_pre else 0.0)

        out = []
        for extra, passes in zip(self.option_extra.tolist(), self.option_passes, strict=True):
            serial = verify(n, extra, True) + draft(n, passes, True)
            if drafter.overlaps and extra and n > 1:
                a, b = (n + 1) // 2, n // 2
                serial = min(serial, max(verify(a, extra, True), draft(b, passes, False))
                             + max(verify(b, extra, False), draft(a, passes, True)))
            out.append(serial)
        return np.array(out)


def _passes(count: dict[int, int], context: dict[int, int]) -> list[tuple[int, int]]:
    """Draft passes from requests grouped by their number of passes: pass j runs every
    request with more than j passes, each on its cached tokens + j."""
    if not count:
        return []
    out = []
    for j in range(max(count)):
        n = sum(c for p, c in count.items() if p > j)
        ctx = sum(c for p, c in context.items() if p > j)
        out.append((n, ctx + j * n))
    return out


def check_scheduler(name: str, cls) -> None:
    if not getattr(cls, "supports_speculation", True):
        raise ConfigError("scheduler.name", name, "speculative decoding needs an "
                          "iteration-level scheduler (vllm_v1, vllm_v0, sarathi, orca)")
