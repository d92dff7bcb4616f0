"""What every scheduler shares: queues, the KV cache, a registry, and applying a step."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from infersim.costmodels import BatchShape
from infersim.errors import UnknownNameError
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.request import FINISHED, RUNNING, WAITING, Request


@dataclass(frozen=True)
class SchedulerLimits:
    """Engine limits every scheduler obeys (vLLM's names)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    long_prefill_token_threshold: int = 0
    enable_chunked_prefill: bool = True
    reserve_full_isl: bool = True  # admit only when the whole sequence's blocks are free


@dataclass
class StepPlan:
    """One step: which requests compute how many new tokens, and what it preempted."""

    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    preempted: int = 0
    decode_seqs: int = 0
    decode_context: int = 0
    prefill_seqs: int = 0
    prefill_tokens: int = 0
    prefill_context: int = 0
    prefill_qk: float = 0.0
    prefill_qq: float = 0.0
    sampled: int = 0

    def add(self, req: Request, new: int) -> None:
        """Schedule ``new`` tokens of ``req`` (its num_computed is still the old value)."""
        self.scheduled.append((req, new))
        k = req.num_computed
        if new == 1:
            self.decode_seqs += 1
            self.decode_context += k
        else:
            self.prefill_seqs += 1
            self.prefill_tokens += new
            self.prefill_context += k
            self.prefill_qk += new * k
            self.prefill_qq += new * (new + 1) / 2
        if k + new >= req.num_tokens:
            self.sampled += 1

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


SCHEDULERS: dict[str, type[Scheduler]] = {}


def register(name: str) -> Callable[[type[Scheduler]], type[Scheduler]]:
    def wrap(cls: type[Scheduler]) -> type[Scheduler]:
        SCHEDULERS[name] = cls
        cls.name = name
        return cls

    return wrap


def make_scheduler(name: str, limits: SchedulerLimits, kv: BlockManager) -> Scheduler:
    if name not in SCHEDULERS:
        raise UnknownNameError("scheduler", name, SCHEDULERS)
    return SCHEDULERS[name](limits, kv)


class Scheduler:
    """A replica's queues and policy. Subclasses implement ``schedule``; applying a finished
    step (``complete``) is shared: computed tokens advance, and a request whose computed
    tokens reach its length samples one output token."""

    name = "base"

    def __init__(self, limits: SchedulerLimits, kv: BlockManager) -> None:
        self.limits = limits
        self.kv = kv
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def add(self, req: Request) -> None:
        req.status = WAITING
        self.waiting.append(req)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def schedule(self, now: float) -> StepPlan:
        raise NotImplementedError

    def decode_run(self, max_steps: int) -> DecodeRun | None:
        """The next steps that are certain to be identical decode steps of every running
        request (no admission, preemption or finish before the last), or None if there are
        fewer than two or the policy cannot tell. Lets the replica advance many steps at
        once; a policy may leave it at None."""
        return None

    def admit(self, req: Request, now: float) -> None:
        req.status = RUNNING
        if req.first_scheduled < 0:
            req.first_scheduled = now
        self.running.append(req)

    def preempt(self, req: Request) -> None:
        """Recompute preemption: free the blocks, forget computed tokens, requeue first."""
        self.kv.release(req)
        req.num_computed = 0
        req.preemptions += 1
        req.status = WAITING
        self.waiting.appendleft(req)

    def complete(self, plan: StepPlan, now: float, itl: list[float]) -> list[Request]:
        """Apply a step that ended at ``now``; return the requests it finished. Inter-token
        gaps of tokens after the first are appended to ``itl``."""
        finished = []
        for req, new in plan.scheduled:
            req.num_computed += new
            if req.num_computed < req.prompt_len + req.num_output:
                continue
            req.num_output += 1
            if req.first_token < 0:
                req.first_token = now
            else:
                itl.append(now - req.last_token)
            req.last_token = now
            if req.num_output >= req.output_len:
                req.status = FINISHED
                self.kv.release(req)
                finished.append(req)
        if finished:
            self.running = [r for r in self.running if r.status != FINISHED]
        return finished

    # --- many identical decode steps at once --------------------------------------------
    def decode_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Computed tokens, blocks and outputs left of every running request when all of
        them are decoding (one token to compute), else None."""
        running = self.running
        if not running or len(running) > self.limits.max_num_batched_tokens:
            return None
        if any(r.prompt_len + r.num_output - r.num_computed != 1 for r in running):
            return None
        computed = np.fromiter((r.num_computed for r in running), np.int64, len(running))
        blocks = np.fromiter((r.blocks for r in running), np.int64, len(running))
        left = np.fromiter((r.output_len - r.num_output for r in running), np.int64,
                           len(running))
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
        bs = self.kv.block_size
        for req in self.running:
            req.num_computed += steps
            req.num_output += steps
            if req.first_token < 0:  # its prompt's last token was the run's first step
                req.first_token = first_end
            else:
                itl.append(first_end - req.last_token)
            req.last_token = end
            need = -(-req.num_computed // bs) - req.blocks
            req.blocks += need
            self.kv.free -= need
            if req.num_output >= req.output_len:
                req.status = FINISHED
                self.kv.release(req)
                finished.append(req)
        if finished:
            self.running = [r for r in self.running if r.status != FINISHED]
        return finished
