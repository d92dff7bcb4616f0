"""Greedy schedules for warm starts: list scheduling that reserves each admitted request's
peak KV cache (so it never needs preemption), in several request orders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.simulator.schedulers.fixed import FixedStep

ORDERS: dict[str, Callable[[ScheduleInstance], np.ndarray]] = {
    "fcfs": lambda i: i.arrival_s,
    "shortest-first": lambda i: i.prompt + i.output,
    "fewest-outputs-first": lambda i: i.output * 1e6 + i.prompt,
    "most-outputs-first": lambda i: -i.output * 1e6 - i.prompt,
    "largest-first": lambda i: -(i.prompt + i.output),
}


def _profile(c_after: int, g_after: int, out: int, bs: int) -> np.ndarray:
    """Blocks a request holds in this step and each later one if it decodes every step."""
    left = out - g_after  # steps after this one
    return -(-(c_after + np.arange(left + 1)) // bs)


def greedy_schedule(inst: ScheduleInstance, order: str | np.ndarray, duration, arrival
                    ) -> list[FixedStep]:
    """Step by step: running requests continue (prefill chunks within the budget, else one
    decode token); then arrived requests are admitted in ``order`` (first fit) while the
    sequence cap and the budget allow and the KV cache holds everyone's future growth if all
    decode every step (a prompt longer than the budget reserves its whole sequence), so it
    never needs preemption. ``duration`` (features -> time) and ``arrival`` (same unit)
    drive the clock, so only arrived requests are admitted."""
    n, bud, bs = inst.n, inst.max_num_batched_tokens, inst.block_size
    P, out = inst.prompt.tolist(), inst.output.tolist()
    key = ORDERS[order](inst) if isinstance(order, str) else np.asarray(order)
    rank = np.argsort(key, kind="stable").tolist()
    pending = list(rank)
    running: list[int] = []
    c, g = [0] * n, [0] * n
    reserve: dict[int, int] = {}  # chunked prompts hold their peak from admission
    clock = float(arrival.min())
    steps: list[FixedStep] = []
    while pending or running:
        run, budget = [], bud
        for r in running:
            if budget <= 0:
                break
            q = min(P[r] + g[r] - c[r], budget)
            run.append((r, q))
            budget -= q
        planned = dict(run)

        def usage(extra: dict[int, int], planned: dict[int, int] = planned) -> np.ndarray:
            total = np.zeros(1, dtype=np.int64)
            for r in [*running, *extra]:
                q = extra.get(r, planned.get(r, 0))
                if r in reserve:
                    prof = np.full(max(out[r] - g[r], 1) + P[r], reserve[r])
                else:
                    after = c[r] + q
                    prof = _profile(after, g[r] + (after == P[r] + g[r]), out[r], bs)
                if len(prof) > len(total):
                    total = np.pad(total, (0, len(prof) - len(total)))
                total[: len(prof)] += prof
            return total

        for r in list(pending):
            if budget <= 0 or len(running) >= inst.max_num_seqs or len(running) + 1 > bud:
                break
            if arrival[r] > clock:
                continue
            q = min(P[r], budget)
            if q < P[r]:
                reserve[r] = -(-(P[r] + out[r] - 1) // bs)
            if usage({r: q}).max() > inst.num_blocks:
                reserve.pop(r, None)
                continue  # first fit: a later request may fit where this one does not
            pending.remove(r)
            running.append(r)
            planned[r] = q
            run.append((r, q))
            budget -= q
        if not run:  # idle until the next arrival
            clock = max(clock, float(min(arrival[r] for r in pending)))
            continue
        total = sum(q for _, q in run)
        kv = sum(c[r] + q for r, q in run)
        sampled = sum(c[r] + q == P[r] + g[r] for r, q in run)
        clock += duration(total, len(run), kv, sampled)
        steps.append(FixedStep(tuple(run)))
        for r, q in run:
            c[r] += q
            if c[r] == P[r] + g[r]:
                g[r] += 1
                if g[r] == out[r]:
                    running.remove(r)
                    reserve.pop(r, None)
    return steps


def greedy_schedules(inst: ScheduleInstance, duration, arrival, random_orders: int = 12,
                     seed: int = 0) -> list[tuple[str, list]]:
    """The greedy schedule in each named order, and in ``random_orders`` random orders
    biased towards long outputs first (seeded)."""
    out = [(f"greedy {name}", greedy_schedule(inst, name, duration, arrival))
           for name in ORDERS]
    rng = np.random.default_rng([seed, 0x67EED])
    for i in range(random_orders):
        key = -inst.output * rng.uniform(0.5, 1.5, inst.n) - rng.uniform(0, 1, inst.n)
        out.append((f"greedy random {i}", greedy_schedule(inst, key, duration, arrival)))
    return out
