"""Floors for requests arriving over time (docs/optimizer.md, "Arrival waits" and "Work
after an arrival").

Latency: each request waits from its arrival to the start of its first step, then through
its own steps. Steps start at least the shortest step apart, so the waits of all requests
together are at least the least total wait over every set of start times so spaced; a
dynamic program finds it exactly. Each request's own steps last at least what its own work
adds to them.

Makespan: the steps that start at or after an arrival run one at a time until the last
finish, and they hold all the work of the requests arriving then or later and the part of
every earlier request's work that cannot be done before it."""

from __future__ import annotations

import bisect
import collections
import itertools
import math

import numpy as np

from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope


def wait_floor(arrival: np.ndarray, spacing: int) -> int:
    """The least sum over requests of (first start at or after its arrival - arrival) over
    start times at least ``spacing`` apart (integer ticks).

    Some optimal set of starts lies on arrival + k x spacing, each start serving an
    arrival: a start serving none can go, and the starts after a run's first one, each
    ``spacing`` after the previous, can slide earlier with it, lowering the waits they
    serve, until the first meets an arrival or the run meets the start before it. So the
    candidates are a_i + k spacing while every window (a_i + (k - 1) spacing, a_i + k
    spacing] holds an arrival. The program runs over them: a start at c after one at c'
    costs the waits of the arrivals in (c', c], i.e. j c - sum a up to j minus (i c - sum a
    up to i), so the best previous start is the lowest of lines in c, kept as a lower hull
    (slopes fall as starts are added, queries rise)."""
    a = sorted(int(v) for v in arrival)
    if not a or a[0] == a[-1]:
        return 0
    last = a[-1]
    starts = set()
    for v in a:
        k = 0
        while k == 0 or bisect.bisect_right(a, v + k * spacing) > bisect.bisect_right(
                a, v + (k - 1) * spacing):
            starts.add(v + k * spacing)
            k += 1
    cand = sorted(starts)
    before = [bisect.bisect_right(a, c) for c in cand]  # arrivals at or before each
    prefix = [0, *itertools.accumulate(a)]
    hull: collections.deque[tuple[int, int]] = collections.deque([(0, 0)])  # the first start

    def at(line: tuple[int, int], x: int) -> int:
        return line[0] * x + line[1]

    def add(k: int, b: int) -> None:
        while hull:
            k2, b2 = hull[-1]
            if k2 == k:
                if b2 <= b:
                    return
                hull.pop()
                continue
            if len(hull) >= 2:
                k1, b1 = hull[-2]
                if (b - b1) * (k1 - k2) <= (b2 - b1) * (k1 - k):
                    hull.pop()
                    continue
            break
        hull.append((k, b))

    best, answer, added = [], None, 0
    for c, j in zip(cand, before, strict=True):
        while cand[added] <= c - spacing:
            i = before[added]
            add(-i, best[added] + prefix[i])
            added += 1
        while len(hull) >= 2 and at(hull[1], c) <= at(hull[0], c):
            hull.popleft()
        best.append(j * c - prefix[j] + at(hull[0], c))
        if c >= last:
            answer = best[-1] if answer is None else min(answer, best[-1])
    return int(answer)


def own_time(inst: ScheduleInstance, ienv: IntEnvelope) -> np.ndarray:
    """Per request, the least time its own steps take (ticks, rounded down): every
    piece's constant and sequence slope per step (its prompt in the fewest chunks, then one
    step per further token), its tokens, the least KV it reads (the prompt in one chunk,
    then one more token per step) and its samples."""
    P, out, L = inst.prompt, inst.output, inst.length
    steps = -(-P // inst.max_num_batched_tokens) + out - 1
    reads = out * P + out * (out - 1) // 2
    own = np.zeros(inst.n)
    for A, B, G, D, E in ienv.coef.astype(float):
        if A >= 0:
            own = np.maximum(own, ((A + G) * steps + B * L + D * reads + E * out) / ienv.q)
    return np.floor(own).astype(np.int64)


def latency_floor(inst: ScheduleInstance, ienv: IntEnvelope) -> int:
    """A lower bound on the model's latency objective (ticks) for any schedule, with
    or without preemption: the least total wait for first steps plus every request's own
    time."""
    return wait_floor(ienv.ticks(inst.arrival_s), ienv.min_step) + int(own_time(inst, ienv).sum())


def makespan_floors(inst: ScheduleInstance, ienv: IntEnvelope) -> dict[int, float]:
    """Per arrival time (ticks), a lower bound on the model's makespan objective
    (last finish - first arrival, ticks) for any schedule, with or without
    preemption.

    For each arrival time h, the steps starting at or after h (set W) end by the last
    finish. Each request has at most some number b of steps before W (below); the rest of
    its work is in W: with b = 0 all of it (its prompt's chunks plus one step per further
    token, its P + O - 1 tokens and O samples), else at least (its fewest steps - b) steps,
    each with a token and a KV read, and its last O - b samples, sampling token i reading
    P + i KV tokens. W has at least as many steps as any request needs there and as its
    tokens fill in the budget; each piece's constant times the steps plus its slopes times
    W's tokens, sequences, reads and samples bounds W's time from below. Steps last at
    least the shortest step m. Either no step runs across h: a request's steps before W
    lie within [a, h], so b = floor((h - a) / m) (0 if it arrives after h). Or the last
    step before W starts at some t < h and ends after h, at least t + m: then W starts
    after it, b = floor((t - a) / m) + 1 for requests arrived by t and 0 for the others;
    the least over t (where b changes, and the earliest t the longest step allows) is the
    bound of that case. Per arrival h, the lesser case; the floor is the best of them
    (``makespan_floor``)."""
    a = ienv.ticks(inst.arrival_s)
    P, out, L = inst.prompt, inst.output, inst.length
    bud, m = inst.max_num_batched_tokens, ienv.min_step
    fewest = -(-P // bud) + out - 1
    pieces = [row for row in ienv.coef.astype(float) if row[0] >= 0]
    seqs = min(inst.max_num_seqs, inst.n)
    longest = ienv.duration(min(bud, int(L.sum())), seqs,
                            min(inst.capacity_tokens, int(L.sum())), seqs)

    def in_window(before: np.ndarray) -> float:
        """The least time of W's steps when request r has at most before[r] steps
        outside it."""
        steps = np.maximum(0, fewest - before)
        samples = np.maximum(0, out - before)
        # the last `samples` tokens read P + O - 1, P + O - 2, ...; other steps read >= 1
        reads = samples * (P + out) - samples * (samples + 1) // 2 + (steps - samples)
        tokens = np.where(before == 0, L, steps)
        T, N, K, S = (float(v.sum()) for v in (tokens, steps, reads, samples))
        W = max(int(steps.max()), -(-int(T) // bud))
        return max((A * W + B * T + G * N + D * K + E * S) / ienv.q
                   for A, B, G, D, E in pieces)

    floors = {}
    for h in np.unique(a):
        clear = h + in_window(np.where(a < h, (h - a) // m, 0))
        # the step across h starts at t: where some request's b changes, or the earliest
        lo = h - longest + 1
        k0, k1 = np.maximum(0, -(-(lo - a) // m)), -(-(h - a) // m)  # lo <= a + k m < h
        ts = {int(lo)} | {int(v + k * m) for v, i, j in zip(a, k0, k1, strict=True)
                          for k in range(i, j)}
        across = min(h + max(0, t + m - h) + in_window(np.where(a <= t, (t - a) // m + 1, 0))
                     for t in ts)
        floors[int(h)] = min(clear, across) - int(a.min())
    return floors


def makespan_floor(inst: ScheduleInstance, ienv: IntEnvelope) -> int:
    """A lower bound on the model's makespan objective (last finish - first arrival,
    ticks) for any schedule, with or without preemption: the best over arrivals of
    ``makespan_floors``."""
    return math.floor(max(0.0, *makespan_floors(inst, ienv).values()))
