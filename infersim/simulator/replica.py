"""One serving engine: a SimPy process that steps its scheduler at iteration granularity."""

from __future__ import annotations

import numpy as np
import simpy

from infersim.costmodels import BatchShape, CostModel
from infersim.simulator.metrics import LogHistogram, StepLog
from infersim.simulator.request import Request
from infersim.simulator.schedulers import Scheduler
from infersim.simulator.schedulers.base import DecodeRun

MAX_RUN_STEPS = 4096  # longest run of decode steps advanced at once
ITL_FLUSH = 1 << 16


class InvariantError(AssertionError):
    """The simulator broke one of its own invariants (a bug, not a user error)."""


class Replica:
    """Forms a batch with its scheduler, waits the cost model's step time, applies the
    step. Idle replicas wait on an event that an arrival triggers; they never poll. Runs of
    identical decode steps (no admission, preemption or finish possible before their end)
    are advanced at once, with one vectorised cost call, and cut short by an arrival."""

    def __init__(self, env: simpy.Environment, index: int, pool: str, scheduler: Scheduler,
                 cost: CostModel, steps: StepLog, itl: LogHistogram, on_done,
                 max_tokens: int, swap_s_per_block: float = 0.0, fast_forward: bool = True,
                 check: bool = False) -> None:
        self.env, self.index, self.pool = env, index, pool
        self.scheduler, self.cost = scheduler, cost
        self.steps, self.itl = steps, itl
        self.on_done = on_done  # called with (replica, finished requests, last step seconds)
        self.max_tokens = max_tokens  # the longest sequence its KV cache can hold
        self.swap_s_per_block = swap_s_per_block
        self.fast_forward = fast_forward
        self.check = check
        self._wake: simpy.Event | None = None
        self._itl: list[float] = []
        self._last_now = 0.0

    @property
    def outstanding(self) -> int:
        return self.scheduler.outstanding

    @property
    def kv_usage(self) -> float:
        kv = self.scheduler.kv
        return kv.used / kv.total

    def prefix_hits(self, req: Request) -> int:
        """Leading blocks of ``req`` this replica's prefix cache holds."""
        return self.scheduler.kv.lookup(req)

    def add(self, req: Request) -> None:
        req.replica = self.index
        self.scheduler.add(req)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def flush(self) -> None:
        if self._itl:
            self.itl.add(self._itl)
            self._itl = []

    def run(self):
        env, sched = self.env, self.scheduler
        while True:
            if not sched.has_work:
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            if self.fast_forward:
                run = sched.decode_run(MAX_RUN_STEPS)
                if run is not None:
                    yield from self._decode_run(run)
                    continue
            start = env.now
            spec = sched.spec  # speculative decoding: its policy may look at the batch
            if spec is not None:
                spec.begin(sched)
            plan = sched.schedule(start)
            if not plan.scheduled and not plan.preempted:
                raise InvariantError(f"replica {self.index} has work but scheduled nothing: "
                                     f"{len(sched.running)} running, {len(sched.waiting)} "
                                     f"waiting, {sched.kv.free} free blocks")
            if not plan.num_tokens:
                duration = 0.0
            elif spec is None:
                duration = self.cost.step_time(plan.shape)
            else:  # verify plus drafting, priced by the speculator
                duration = spec.step_seconds(plan)
            if plan.swapped_in or plan.swapped_out:  # KV copies over the host link
                duration += (plan.swapped_in + plan.swapped_out) * self.swap_s_per_block
            yield env.timeout(duration)
            finished = sched.complete(plan, env.now, self._itl)
            self.steps.add(self.index, start, duration, plan, sched.kv.used)
            self._finish(finished, duration)
            if self.check:
                self._check_invariants(plan)

    def _decode_run(self, run: DecodeRun):
        """Advance a run of identical decode steps, or fewer if a request arrives at an
        idle queue: the step in progress then completes and normal stepping resumes."""
        env, sched = self.env, self.scheduler
        n, steps = len(sched.running), run.steps
        context = run.context + n * np.arange(steps)
        times = np.asarray(self.cost.step_time(BatchShape(decode_seqs=n, decode_context=context,
                                                          sampled=n)), dtype=np.float64)
        start = env.now
        ends = start + np.cumsum(times)
        done = steps
        if sched.waiting:  # blocked queue: an arrival cannot change the next steps
            yield env.timeout(float(ends[-1]) - start)
        else:
            self._wake = env.event()
            yield env.timeout(float(ends[-1]) - start) | self._wake
            woke = self._wake.triggered and env.now < ends[-1]
            self._wake = None
            if woke:
                done = min(int(np.searchsorted(ends, env.now, side="right")) + 1, steps)
                yield env.timeout(max(float(ends[done - 1]) - env.now, 0.0))
        used = sched.kv.used + run.demand[:done]
        if done > 1:
            self.itl.add(times[1:done], n)
        finished = sched.advance_decodes(done, ends, self._itl)
        used[-1] = sched.kv.used  # the last step released the blocks of what it finished
        starts = np.concatenate(([start], ends[:done - 1]))
        self.steps.add_run(self.index, starts, times[:done], n, used, context[:done])
        self._finish(finished, float(times[done - 1]))
        if self.check:
            self._check_invariants(None)

    def _finish(self, finished: list[Request], last_step: float) -> None:
        if len(self._itl) >= ITL_FLUSH:
            self.flush()
        if finished:
            self.on_done(self, finished, last_step)

    def _check_invariants(self, plan) -> None:
        sched, kv, now = self.scheduler, self.scheduler.kv, self.env.now
        held = kv.held_by([*sched.running, *sched.waiting, *sched.swapped])
        if held != kv.used or not 0 <= kv.free <= kv.total:
            raise InvariantError(f"KV blocks: held {held}, used {kv.used}, total {kv.total}")
        if now < self._last_now:
            raise InvariantError(f"clock went back: {now} < {self._last_now}")
        self._last_now = now
        if len(sched.running) > sched.limits.max_num_seqs:
            raise InvariantError(f"{len(sched.running)} running > max_num_seqs")
        if (plan is not None and sched.obeys_token_budget
                and plan.num_tokens > sched.limits.max_num_batched_tokens):
            raise InvariantError(f"step of {plan.num_tokens} tokens exceeds the budget")
        for r in sched.running:
            if not (r.arrival <= r.first_scheduled <= now) or r.num_computed > r.num_tokens:
                raise InvariantError(f"request state out of order: {r}")
            if r.first_token >= 0 and not r.first_scheduled <= r.first_token <= now:
                raise InvariantError(f"first token before scheduling: {r}")
