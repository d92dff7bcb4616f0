"""What every scheduler shares: queues, the KV cache, admission, preemption (recompute or
swap), applying a finished step, and advancing runs of identical decode steps at once."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from infersim.costmodels import BatchShape
from infersim.errors import ConfigError
from infersim.registry import Registry
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.request import FINISHED, RUNNING, SWAPPED, WAITING, Request
from infersim.simulator.schedulers.queues import POLICIES, make_queue


@dataclass(frozen=True)
class SchedulerLimits:
    """Engine limits and policy choices every scheduler obeys (vLLM's names)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    long_prefill_token_threshold: int = 0
    enable_chunked_prefill: bool = True
    reserve_full_isl: bool = True  # admit only when the whole sequence's blocks are free
    policy: str = "fcfs"  # fcfs | priority | sjf: waiting order and preemption victim
    preemption: str = "recompute"  # recompute | swap
    swap_blocks: int = 0  # host blocks for swapped-out KV
    watermark: float = 0.0  # share of blocks kept free when admitting

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError("scheduler.policy", self.policy, f"allowed: {', '.join(POLICIES)}")
        if self.preemption not in ("recompute", "swap"):
            raise ConfigError("scheduler.preemption", self.preemption,
                              "allowed: recompute, swap")


@dataclass
class StepPlan:
    """One step: which requests compute how many new tokens, what it preempted and swapped,
    and the batch aggregates the cost model needs."""

    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    preempted: int = 0
    swapped_out: int = 0  # blocks moved to host memory in this step
    swapped_in: int = 0  # blocks moved back
    decode_seqs: int = 0
    decode_context: int = 0
    prefill_seqs: int = 0
    prefill_tokens: int = 0
    prefill_context: int = 0
    prefill_qk: float = 0.0
    prefill_qq: float = 0.0
    sampled: int = 0
    spec_seqs: int = 0  # speculative decoding: decodes that verify drafts in this step
    spec_tokens: int = 0  # drafts they verify
    accepted: int = 0  # drafts accepted (set when the step completes)
    draft_s: float = 0.0  # seconds of drafting and of the target's verify (set by the
    verify_s: float = 0.0  # speculator when it prices the step)

    def add(self, req: Request, new: int) -> None:
        """Schedule ``new`` tokens of ``req`` (its num_computed is still the old value).
        More than it has to compute is a decode verifying ``new - 1`` drafts (q = 1 + K,
        every row sampled: the target scores each draft). Every sequence has an LM head
        row, a partial prompt chunk too: vLLM V1 computes logits at each scheduled request's
        last token and discards the token a partial prefill samples."""
        self.scheduled.append((req, new))
        todo = req.prompt_len + req.num_output - req.num_computed
        if new > todo:
            self.spec_seqs += 1
            self.spec_tokens += new - todo
            self.count(new, req.num_computed, new)
        else:
            self.count(new, req.num_computed, 1)

    def count(self, q: int, k: int, sampled: int, sign: int = 1) -> None:
        """Account one sequence computing ``q`` tokens on ``k`` cached ones (also used for
        padding that computes but belongs to no request; ``sign`` -1 takes one out)."""
        if q == 1:
            self.decode_seqs += sign
            self.decode_context += sign * k
        else:
            self.prefill_seqs += sign
            self.prefill_tokens += sign * q
            self.prefill_context += sign * k
            self.prefill_qk += sign * q * k
            self.prefill_qq += sign * q * (q + 1) / 2
        self.sampled += sign * sampled

    def drop(self, req: Request) -> None:
        """Take ``req`` out of this step if it was scheduled (before it is preempted)."""
        for i, (r, new) in enumerate(self.scheduled):
            if r is req:
                del self.scheduled[i]
                todo = req.prompt_len + req.num_output - req.num_computed
                if new > todo:
                    self.spec_seqs -= 1
                    self.spec_tokens -= new - todo
                    self.count(new, req.num_computed, new, -1)
                else:
                    self.count(new, req.num_computed, 1, -1)
                return

    @property
    def shape(self) -> BatchShape:
        return BatchShape(self.decode_seqs, self.decode_context, self.prefill_seqs,
                          self.prefill_tokens, self.prefill_context, self.prefill_qk,
                          self.prefill_qq, self.sampled)

    @property
    def num_tokens(self) -> int:
        return self.decode_seqs + self.prefill_tokens


@dataclass(frozen=True)
class DecodeRun:
    """``steps`` identical decode steps of the running requests: their cached tokens at the
    start (summed) and the new KV blocks they need by the end of each step (cumulative)."""

    steps: int
    context: int
    demand: np.ndarray


SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler")
register = SCHEDULERS.register


def make_scheduler(name: str, limits: SchedulerLimits, kv: BlockManager) -> Scheduler:
    return SCHEDULERS.lookup(name)(limits, kv)


class Scheduler:
    """A replica's queues and policy. Subclasses implement ``schedule`` from the shared
    pieces below; applying a finished step (``complete``) is common to all: computed tokens
    advance, and a request whose computed tokens reach its length samples one token."""

    name = "base"
    fast_forward = True  # the steady state of `decode_run` holds for this policy
    supports_chunked_prefill = True
    obeys_token_budget = True  # every step fits max_num_batched_tokens
    default_watermark = 0.0
    supports_speculation = True  # decodes may verify drafts (an iteration-level policy)
    spec = None  # the pool's speculation.Speculator when speculative decoding is on

    def __init__(self, limits: SchedulerLimits, kv: BlockManager) -> None:
        self.limits = limits
        self.kv = kv
        self.waiting = make_queue(limits.policy)
        self.running: list[Request] = []
        self.swapped: deque[Request] = deque()
        self.host_free = limits.swap_blocks
        self.recomputed_tokens = 0
        self._victim_key = POLICIES[limits.policy]
        self._watermark = int(limits.watermark * kv.total)

    @classmethod
    def effective_limits(cls, limits: SchedulerLimits) -> SchedulerLimits:
        """The limits this policy actually runs with (e.g. no chunking for V0)."""
        from dataclasses import replace

        return limits if cls.supports_chunked_prefill else replace(
            limits, enable_chunked_prefill=False)

    def add(self, req: Request) -> None:
        req.status = WAITING
        self.waiting.push(req)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.swapped)

    def schedule(self, now: float) -> StepPlan:
        raise NotImplementedError

    # --- admission ----------------------------------------------------------------------
    def chunk(self, req: Request, todo: int, budget: int) -> int:
        """Tokens of ``todo`` to compute this step under ``budget`` (and the long-prefill
        threshold)."""
        threshold = self.limits.long_prefill_token_threshold
        if 0 < threshold < todo:
            todo = threshold
        if todo == 1 and self.spec is not None:
            return 1 + self.draft_tokens(req, budget)
        return min(todo, budget)

    def draft_tokens(self, req: Request, budget: int) -> int:
        """Drafts a decode of ``req`` verifies this step within ``budget`` tokens in all
        (0: a plain decode; always 0 without speculation or before the first token)."""
        if self.spec is None or not req.num_output:
            return 0
        return self.spec.drafts(req, budget)

    def reservation(self, req: Request) -> int:
        """Tokens whose blocks must be free to admit ``req`` (vLLM's full-ISL gate: its
        whole current sequence) and that admission holds (0: just the first chunk)."""
        return req.prompt_len + req.num_output if self.limits.reserve_full_isl else 0

    holds_reservation = False  # True: admission keeps the reserved blocks (no later growth)

    def admission(self, req: Request, budget: int, free: int | None = None
                  ) -> tuple[int, int] | None:
        """(prefix-hit blocks, tokens to compute) if waiting ``req`` can be admitted with
        ``budget`` tokens and ``free`` blocks (default: free now), else None. Computing
        starts after the cached prefix (or after the KV a request arrived with); without
        chunked prefill the whole remainder must fit the budget."""
        if budget <= 0:
            return None
        kv = self.kv
        hits = kv.lookup(req)
        start = max(req.num_computed, hits * kv.block_size)
        todo = req.prompt_len + req.num_output - start
        if not self.limits.enable_chunked_prefill and todo > budget:
            return None
        new = self.chunk(req, todo, budget)
        free = (kv.free if free is None else free) - self._watermark
        reserve = self.reservation(req)
        if reserve and not kv.fits(req, hits, max(reserve, start + new), free):
            return None
        return (hits, new) if kv.fits(req, hits, start + new, free) else None

    def try_admit(self, plan: StepPlan, budget: int, now: float) -> int:
        """Admit the head of the waiting queue if it fits; the tokens it computes, or 0."""
        req = self.waiting.peek()
        admission = self.admission(req, budget)
        if admission is None:
            return 0
        hits, new = admission
        before = req.num_computed
        start = max(before, hits * self.kv.block_size)
        upto = start + new
        if self.holds_reservation:
            upto = max(upto, self.reservation(req))
        self.kv.admit(req, hits, upto)
        req.prefix_hit_tokens += req.num_computed - before
        self.waiting.pop()
        req.status = RUNNING
        if req.first_scheduled < 0:
            req.first_scheduled = now
        self.running.append(req)
        plan.add(req, new)
        return new

    def admit_waiting(self, plan: StepPlan, now: float) -> StepPlan:
        """vLLM V1's second half of a step: nobody if the step preempted; swapped-out
        requests before anyone new; then waiting requests in queue order while the budget,
        the sequence cap and the KV cache allow (the first that does not fit stops it)."""
        limit = self.limits.max_num_batched_tokens
        if plan.preempted:
            return plan
        if self.swapped:
            self.swap_in(plan, limit - plan.num_tokens)
            if self.swapped:
                return plan
        while (self.waiting and plan.num_tokens < limit
               and len(self.running) < self.limits.max_num_seqs):
            if not self.try_admit(plan, limit - plan.num_tokens, now):
                break
        return plan

    # --- preemption ---------------------------------------------------------------------
    def victim(self) -> Request:
        """The running request to preempt: the tail (latest admitted) for FCFS, the least
        important for priority, the one with most work left for SJF."""
        if self._victim_key is None:
            return self.running[-1]
        return max(self.running, key=lambda r: (self._victim_key(r), r.id))

    def preempt(self, req: Request, plan: StepPlan) -> None:
        """Swap the request's KV to host memory when configured and room allows, else drop
        it for recompute (its computed tokens are lost and it goes back to waiting)."""
        self.running.remove(req)
        plan.preempted += 1
        req.preemptions += 1
        blocks = req.blocks
        if self.limits.preemption == "swap" and 0 < blocks <= self.host_free:
            self.kv.release(req)
            self.host_free -= blocks
            req.blocks = 0
            req.swapped = blocks
            req.status = SWAPPED
            plan.swapped_out += blocks
            self.swapped.append(req)
            return
        self.kv.release(req)
        self.recomputed_tokens += req.num_computed
        req.num_computed = 0
        req.status = WAITING
        self.waiting.push_front(req)

    def grow(self, req: Request, new: int, plan: StepPlan) -> bool:
        """Make room for ``new`` tokens of running ``req``, preempting victims while the KV
        cache is short (a victim already scheduled in this step is taken out of it); False
        if ``req`` itself had to be preempted."""
        while not self.kv.allocate(req, new):
            victim = self.victim()
            if victim is not req:
                plan.drop(victim)
            self.preempt(victim, plan)
            if victim is req:
                return False
        return True

    def swap_in(self, plan: StepPlan, budget: int) -> int:
        """Bring swapped requests back (oldest first) while their blocks fit; each computes
        its next token in this step. Returns the tokens used."""
        used = 0
        while (self.swapped and used < budget
               and len(self.running) < self.limits.max_num_seqs):
            req = self.swapped[0]
            if self.kv.blocks_for(req.num_computed + 1) > self.kv.free - self._watermark:
                break
            self.swapped.popleft()
            self.kv.grow(req, req.num_computed + 1)
            self.host_free += req.swapped
            plan.swapped_in += req.swapped
            req.swapped = 0
            req.status = RUNNING
            self.running.append(req)
            new = req.prompt_len + req.num_output - req.num_computed
            plan.add(req, new)
            used += new
        return used

    # --- applying a step ----------------------------------------------------------------
    def complete(self, plan: StepPlan, now: float, itl: list[float]) -> list[Request]:
        """Apply a step that ended at ``now``; return the requests it finished (or, for
        handoff requests, whose first token it sampled). A request whose computed tokens
        reach its length samples a token; a decode that verified K drafts emits N =
        accepted + 1 tokens (sampled by the speculator, never past its output length), all
        at ``now``, and its computed tokens advance by N, discarding the KV of the rejected
        drafts (vLLM rolls num_computed back by their count). Gaps between consecutive
        emissions of a request are appended to ``itl``."""
        finished = []
        kv, spec = self.kv, self.spec
        for req, new in plan.scheduled:
            todo = req.prompt_len + req.num_output - req.num_computed
            if new > todo:  # a verify of new - todo drafts
                emitted = spec.emitted(req, new - todo)
                plan.accepted += emitted - 1
                req.num_computed += emitted
            else:
                req.num_computed += new
                emitted = 1 if new == todo else 0
            if kv.caching:
                kv.cache_full_blocks(req)
            if not emitted:
                continue
            req.num_output += emitted
            if req.first_token < 0:
                req.first_token = now
            else:
                itl.append(now - req.last_token)
            req.last_token = now
            if req.done:
                req.status = FINISHED
                kv.release(req)
                finished.append(req)
        if finished:
            self.running = [r for r in self.running if r.status != FINISHED]
        return finished

    # --- many identical decode steps at once --------------------------------------------
    def can_admit_during_run(self, free_after_decodes: int) -> bool:
        """Would the next step admit or swap in anyone, given the blocks left after the
        running decodes grow? Free blocks only shrink during a run, so a request that cannot
        be admitted now cannot be later."""
        if self.swapped:
            return True
        if not self.waiting or len(self.running) >= self.limits.max_num_seqs:
            return False
        budget = self.limits.max_num_batched_tokens - len(self.running)
        return self.admission(self.waiting.peek(), budget, free_after_decodes) is not None

    def decode_run(self, max_steps: int) -> DecodeRun | None:
        """The next steps that are certain to be identical decode steps of every running
        request (no admission, preemption or finish before the last), or None if there are
        fewer than two or the policy cannot tell."""
        if not self.fast_forward or self.spec is not None:  # speculative steps differ
            return None
        state = self._decode_state()
        if state is None:
            return None
        computed, blocks, left = state
        steps = int(min(left.min(), max_steps))
        if steps < 2:
            return None
        demand = self.block_demand(computed, blocks, steps)
        free = self.kv.free
        if demand[0] > free or self.can_admit_during_run(free - int(demand[0])):
            return None  # the next step preempts, admits or swaps in
        fits = int(np.searchsorted(demand, free, side="right"))  # demand is non-decreasing
        if fits < 2:
            return None
        return DecodeRun(fits, int(computed.sum()), demand[:fits])

    def _decode_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Computed tokens, blocks and outputs left of every running request when all of
        them are decoding (one token to compute) and all fit the budget, else None."""
        running = self.running
        if not running or len(running) > self.limits.max_num_batched_tokens:
            return None
        if any(r.prompt_len + r.num_output - r.num_computed != 1 or r.handoff
               for r in running):
            return None
        n = len(running)
        computed = np.fromiter((r.num_computed for r in running), np.int64, n)
        blocks = np.fromiter((r.blocks for r in running), np.int64, n)
        left = np.fromiter((r.output_len - r.num_output for r in running), np.int64, n)
        return computed, blocks, left

    def block_demand(self, computed: np.ndarray, blocks: np.ndarray, steps: int) -> np.ndarray:
        """New blocks the running decodes need by the end of each of the next ``steps``
        steps (cumulative): request i takes a block at step j when computed_i + j crosses a
        block boundary, first at j = blocks_i * block_size - computed_i."""
        bs = self.kv.block_size
        first = blocks * bs - computed
        counts = np.maximum(0, -(-(steps - first) // bs))
        starts = np.repeat(first, counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        per_step = np.bincount(starts + offsets * bs, minlength=steps)[:steps]
        return np.cumsum(per_step)

    def advance_decodes(self, steps: int, ends: np.ndarray, itl: list[float]) -> list[Request]:
        """Apply ``steps`` identical decode steps ending at ``ends`` (one per step) to every
        running request; return the requests finished by the last one. The caller recorded
        the gaps of steps after the first; here each request's first gap is appended."""
        finished = []
        end = float(ends[steps - 1])
        first_end = float(ends[0])
        kv = self.kv
        for req in self.running:
            req.num_computed += steps
            req.num_output += steps
            kv.grow(req, req.num_computed)
            if kv.caching:
                kv.cache_full_blocks(req)
            if req.first_token < 0:  # its prompt's last token was the run's first step
                req.first_token = first_end
            else:
                itl.append(first_end - req.last_token)
            req.last_token = end
            if req.num_output >= req.output_len:
                req.status = FINISHED
                kv.release(req)
                finished.append(req)
        if finished:
            self.running = [r for r in self.running if r.status != FINISHED]
        return finished

