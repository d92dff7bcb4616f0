"""The schedule model's semantics in plain Python: run a schedule step by step, check it
against the engine's limits, and time it with a step-duration function.

The same rules as the CP-SAT model and the ``fixed`` scheduler: a step first drops the KV
cache of the requests it preempts (recompute), then computes its (request, tokens) pairs; a
request whose computed tokens reach prompt + generated samples one token; during a step a
request holds ceil(computed after the step / block size) blocks until the step that
finishes it; requests holding KV count against ``max_num_seqs``; a step starts when the
previous one ends or, if later, when the last of its requests arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from infersim.errors import SolverError
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.simulator.schedulers.fixed import FixedStep, as_steps

Duration = Callable[[int, int, int, int], float]  # (tokens, seqs, kv_read, sampled) -> time


@dataclass
class ScheduleTrace:
    """A schedule run on an instance. Per step: start, duration and the features (tokens,
    seqs, kv_read, sampled); per request: first-token and finish times; per (request, step):
    tokens computed, computed and generated after the step, whether the step preempted it."""

    steps: tuple[FixedStep, ...]
    start: np.ndarray
    duration: np.ndarray
    features: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    tokens: np.ndarray
    computed: np.ndarray
    generated: np.ndarray
    dropped: np.ndarray
    blocks_used: np.ndarray
    arrival: np.ndarray
    devices: int

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def preemptions(self) -> int:
        return int(self.dropped.sum())

    @property
    def end(self) -> np.ndarray:
        return self.start + self.duration

    def objective(self, name: str, slo_ms: dict[str, float] | None = None,
                  scale: float = 1.0) -> float:
        """``latency`` (sum of finish - arrival), ``makespan`` (last finish - first
        arrival), ``cost`` (busy device time), ``slo`` (requests missing a limit). Times in
        the trace's unit; ``scale`` converts a limit in ms to it (1e3 for microseconds,
        1e-3 for seconds)."""
        if name == "latency":
            return float(np.sum(self.finish - self.arrival))
        if name == "makespan":
            return float(self.finish.max() - self.arrival.min())
        if name == "cost":
            return float(self.duration.sum() * self.devices)
        if name == "slo":
            return float(self.slo_violations(slo_ms or {}, scale).sum())
        raise SolverError(f"unknown objective {name!r}")

    def slo_violations(self, slo_ms: dict[str, float], scale: float) -> np.ndarray:
        out = np.zeros(len(self.finish), dtype=bool)
        outputs = self.generated[:, -1] if self.generated.size else np.zeros(len(self.finish))
        if slo_ms.get("ttft_ms") is not None:
            out |= self.first_token - self.arrival > slo_ms["ttft_ms"] * scale
        if slo_ms.get("e2el_ms") is not None:
            out |= self.finish - self.arrival > slo_ms["e2el_ms"] * scale
        if slo_ms.get("tpot_ms") is not None:
            many = outputs > 1
            tpot = (self.finish - self.first_token) / np.maximum(outputs - 1, 1)
            out |= many & (tpot > slo_ms["tpot_ms"] * scale)
        return out


def run_schedule(inst: ScheduleInstance, schedule: Sequence, duration: Duration,
                 arrival: np.ndarray | None = None) -> ScheduleTrace:
    """Run ``schedule`` on ``inst``; ``duration`` times each step and ``arrival`` (default:
    the instance's, in seconds) gives the clock's unit. Raises SolverError, naming the step,
    where the schedule breaks a rule or leaves a request unfinished."""
    steps = as_steps(schedule)
    n, m = inst.n, len(steps)
    arrival = inst.arrival_s if arrival is None else np.asarray(arrival)
    P, OUT, bs = inst.prompt, inst.output, inst.block_size
    c = np.zeros(n, dtype=np.int64)
    g = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    tokens = np.zeros((n, m), dtype=np.int64)
    computed = np.zeros((n, m), dtype=np.int64)
    generated = np.zeros((n, m), dtype=np.int64)
    dropped = np.zeros((n, m), dtype=bool)
    start = np.zeros(m, dtype=arrival.dtype)
    dur = np.zeros(m, dtype=arrival.dtype)
    feats = np.zeros((m, 4), dtype=np.int64)
    used = np.zeros(m, dtype=np.int64)
    first = np.full(n, np.nan) if arrival.dtype.kind == "f" else np.full(n, -1, dtype=np.int64)
    finish = first.copy()
    clock = arrival.dtype.type(0)
    for s, step in enumerate(steps):
        def fail(problem: str, s=s):
            raise SolverError(f"schedule step {s}: {problem}")

        ids = [r for r, _ in step.run] + list(step.preempt)
        for r in ids:
            if not 0 <= r < n:
                fail(f"request {r} is not in the instance ({n} requests)")
        for r in step.preempt:
            if done[r] or c[r] == 0:
                fail(f"request {r} holds no KV cache to drop")
            c[r] = 0
            dropped[r, s] = True
        seen = set()
        total = kv = smp = 0
        for r, q in step.run:
            if r in seen:
                fail(f"request {r} appears twice")
            seen.add(r)
            if done[r]:
                fail(f"request {r} has finished")
            todo = P[r] + g[r] - c[r]
            if not 1 <= q <= todo:
                fail(f"request {r} computes {q} tokens; it has {todo} to compute")
            total += q
            kv += c[r] + q
            smp += int(c[r] + q == P[r] + g[r])
        if total > inst.max_num_batched_tokens:
            fail(f"{total} tokens exceed max_num_batched_tokens {inst.max_num_batched_tokens}")
        after = c.copy()
        for r, q in step.run:
            after[r] += q
        holding = (after > 0) & ~done
        if holding.sum() > inst.max_num_seqs:
            fail(f"{int(holding.sum())} requests hold KV cache; max_num_seqs is "
                 f"{inst.max_num_seqs}")
        blocks = int((-(-after[holding] // bs)).sum())
        if blocks > inst.num_blocks:
            fail(f"{blocks} KV blocks needed; the cache has {inst.num_blocks}")
        used[s] = blocks
        ready = max((arrival[r] for r in ids), default=clock)
        start[s] = max(clock, ready)
        feats[s] = (total, len(step.run), kv, smp)
        dur[s] = duration(total, len(step.run), kv, smp) if total else 0
        clock = start[s] + dur[s]
        for r, q in step.run:
            tokens[r, s] = q
            if after[r] == P[r] + g[r]:
                g[r] += 1
                if g[r] == 1:
                    first[r] = clock
                if g[r] == OUT[r]:
                    done[r] = True
                    finish[r] = clock
        c = after
        computed[:, s] = c
        generated[:, s] = g
    if not done.all():
        left = np.flatnonzero(~done)
        raise SolverError(f"the schedule leaves request(s) {left[:10].tolist()} unfinished")
    return ScheduleTrace(steps, start, dur, feats, first, finish, tokens, computed, generated,
                         dropped, used, arrival, inst.devices)
