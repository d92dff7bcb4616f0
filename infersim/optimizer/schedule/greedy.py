"""Greedy schedules for warm starts: list scheduling that reserves each admitted request's
peak KV cache (so it never needs preemption), in several request orders."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

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


def greedy_schedule(inst: ScheduleInstance, order: str | np.ndarray, duration, arrival,
                    holds: Collection[int] = ()) -> list[FixedStep]:
    """Step by step: running requests continue (prefill chunks within the budget, else one
    decode token); then arrived requests are admitted in ``order`` (first fit) while the
    sequence cap and the budget allow and the KV cache holds everyone's future growth if all
    decode every step (a prompt longer than the budget reserves its whole sequence), so it
    never needs preemption. ``duration`` (features -> time) and ``arrival`` (same unit)
    drive the clock, so only arrived requests are admitted. Before the steps numbered in
    ``holds`` the engine idles until the next arrival, so that the step can take it."""
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
        if len(steps) in holds:
            later = [arrival[r] for r in pending if arrival[r] > clock]
            if later:
                clock = float(min(later))
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


def serial_schedule_order(inst: ScheduleInstance, order, duration=None, arrival=None
                          ) -> list[FixedStep]:
    """Serial schedule generation (as in project scheduling): requests in ``order``, each
    placed at the earliest step from which it runs without a pause (prompt chunks in the
    budget left, then one decode per step) within the budget, the sequence cap and the KV
    cache left by the requests placed before it (its blocks held from its first step to its
    finishing step). Every order gives a schedule without preemption; some order gives an
    optimal pause-free one. With ``duration`` and ``arrival`` (same unit), a request is
    only placed where the steps before it reach its arrival (or after the last step)."""
    bud, bs, nb, cap = (inst.max_num_batched_tokens, inst.block_size, inst.num_blocks,
                        inst.max_num_seqs)
    P, out = inst.prompt.tolist(), inst.output.tolist()
    tok: list[int] = []
    blk: list[int] = []
    seq: list[int] = []
    runs: list[list[tuple[int, int]]] = []

    def grow(n: int) -> None:
        while len(tok) < n:
            tok.append(0)
            blk.append(0)
            seq.append(0)
            runs.append([])

    info: dict[tuple[int, int], tuple[int, bool]] = {}  # (r, step) -> (kv read, samples)

    def times() -> list[float]:
        clock, out_ = 0.0, []
        for s in range(len(runs)):
            out_.append(clock)
            if runs[s]:
                kv = sum(info[(r, s)][0] for r, _ in runs[s])
                smp = sum(info[(r, s)][1] for r, _ in runs[s])
                clock += duration(tok[s], len(runs[s]), kv, smp)
        return out_

    rank = [int(r) for r in order]
    for r in rank:
        # the plan from a start step: chunks of the prompt, then one token per step
        sigma = 0
        if duration is not None and arrival is not None and float(arrival[r]) > 0:
            st = times()
            while sigma < len(st) and st[sigma] < float(arrival[r]):
                sigma += 1
        while True:
            plan, c, s, ok = [], 0, sigma, True
            left = P[r]
            while left > 0:
                grow(s + 1)
                free = bud - tok[s]
                if free <= 0:
                    ok = False
                    break
                q = min(left, free)
                left -= q
                c += q
                plan.append((s, q, c))
                s += 1
            if ok:
                for _ in range(out[r] - 1):
                    c += 1
                    plan.append((s, 1, c))
                    s += 1
                grow(s)
                for st_, q, c_ in plan:
                    if (tok[st_] + q > bud or seq[st_] + 1 > cap
                            or blk[st_] + -(-c_ // bs) > nb):
                        ok = False
                        break
            if ok:
                break
            sigma += 1
        for st_, q, c_ in plan:
            tok[st_] += q
            seq[st_] += 1
            blk[st_] += -(-c_ // bs)
            runs[st_].append((r, q))
            info[(r, st_)] = (c_, c_ >= P[r])
    return [FixedStep(tuple(run)) for run in runs if run]


def search_orders(inst: ScheduleInstance, value, seconds: float, seed: int = 0,
                  duration=None, arrival=None, max_evals: int = 20_000
                  ) -> tuple[float, list[FixedStep], str]:
    """Local search over request orders for the serial schedule generation: start from the
    best named order, then try random swaps and moves of one request, keeping a change when
    the objective (``value(schedule)``, lower is better) does not get worse. Stops after
    ``seconds`` or ``max_evals`` schedules (deterministic given the seed and max_evals when
    the time does not run out). ``duration`` and ``arrival``: as in
    ``serial_schedule_order``. Returns (value, schedule, name)."""
    deadline = time.perf_counter() + seconds
    best = None
    for name, key in ORDERS.items():
        rank = np.argsort(key(inst), kind="stable")
        sched = serial_schedule_order(inst, rank, duration, arrival)
        v = value(sched)
        if best is None or v < best[0]:
            best = (v, rank, sched, f"serial {name}")
    if best is None:
        raise ValueError("no order")
    rng = np.random.default_rng([seed, 0x5E7])
    cur_v, cur = best[0], best[1]
    evals = 0
    while evals < max_evals and time.perf_counter() < deadline and inst.n > 1:
        evals += 1
        r = cur.copy()
        i, j = (int(v) for v in rng.integers(0, inst.n, 2))
        if rng.random() < 0.5:
            r[i], r[j] = r[j], r[i]
        else:
            r = np.insert(np.delete(r, i), j, r[i])
        sched = serial_schedule_order(inst, r, duration, arrival)
        v = value(sched)
        if v <= cur_v:
            cur_v, cur = v, r
            if v < best[0]:
                best = (v, r, sched, f"serial order search ({evals} orders)")
    return best[0], best[2], best[3]


def search_holds(inst: ScheduleInstance, value, seconds: float, seed: int, duration, arrival,
                 max_evals: int = 1000) -> tuple[float, list[FixedStep], str]:
    """Local search over where the greedy schedule idles for the next arrival (``holds``)
    and its request order (the named ones): a step that waits can take a request arriving
    just after it would have started, which can shorten the makespan. Starts without holds
    in each named order, then toggles one step's hold (sometimes with another order),
    keeping a change when ``value(schedule)`` does not get worse; ``max_evals`` schedules
    or ``seconds``, deterministic given the seed when the time does not run out. Returns
    (value, schedule, name)."""
    deadline = time.perf_counter() + seconds
    orders = list(ORDERS)
    start = [(value(s), i, s) for i, s in
             enumerate(greedy_schedule(inst, o, duration, arrival) for o in orders)]
    v0, i0, s0 = min(start, key=lambda t: t[:2])
    best = (v0, s0, f"greedy {orders[i0]}")
    cur_v, cur_o, cur_h = v0, i0, frozenset()
    rng = np.random.default_rng([seed, 0x401D])
    evals = 0
    while evals < max_evals and time.perf_counter() < deadline:
        evals += 1
        holds = cur_h ^ {int(rng.integers(0, len(best[1]) + 1))}
        o = int(rng.integers(len(orders))) if rng.random() < 0.2 else cur_o
        sched = greedy_schedule(inst, orders[o], duration, arrival, holds)
        v = value(sched)
        if v <= cur_v:
            cur_v, cur_o, cur_h = v, o, holds
            if v < best[0]:
                best = (v, sched, f"greedy with idling ({evals} tries)")
    return best
