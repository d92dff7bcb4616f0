"""A latency bound for requests arriving over time: the best schedule without the engine's
limits (docs/optimizer.md, "Without the engine's limits").

Drop the KV cache, the token budget and the sequence cap, and keep, of each request's work,
what every schedule must do: O samples, each reading at least its prompt, the first one
with at least tau of its prompt tokens (tau <= P, below), each step lasting the envelope of
what it holds. Any schedule of the model is one of this relaxation, no slower. Where a step
with one request more lasts at most about 1/n of the shortest step longer (n requests; tau
is the most prompt tokens for which that holds), exchanges show that some optimum of the
relaxation runs each request's prompt in one piece, in the first step starting at or after
its arrival, and then one decode in every step until it finishes: only the engine's idle
times are left to choose. A best-first search over them (a step starts when the engine is
free or at an arrival before that step would end) finds the relaxation's optimum, or, when
time runs out, the least bound of the open states.

The same search with whole prompts (tau = P) gives a schedule, not a bound: every request in
every step from its arrival to its end, the engine idling where that pays; where it fits
the engine's limits it is a warm start."""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from infersim.optimizer.schedule.arrivals import own_time
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope
from infersim.simulator.schedulers.fixed import FixedStep


class _Steps:
    """Integer step durations of the envelope for summed features: ``IntEnvelope.duration``
    in plain integers, for the search's inner loop."""

    def __init__(self, ienv: IntEnvelope) -> None:
        self.rows = list(dict.fromkeys(tuple(int(v) for v in row) for row in ienv.coef))
        self.q = ienv.q

    def duration(self, tokens: int, seqs: int, kv: int, sampled: int) -> int:
        if tokens <= 0:
            return 0
        top = max(a + b * tokens + g * seqs + d * kv + e * sampled
                  for a, b, g, d, e in self.rows)
        return max(0, -(-top // self.q))

    def increase(self, tokens: int, seqs: int, kv: int, sampled: int) -> int:
        """The most a step can lengthen when these features are added to it."""
        return max(0, self.change(tokens, seqs, kv, sampled))

    def change(self, tokens: int, seqs: int, kv: int, sampled: int) -> int:
        """The most a step's duration can change (negative: at least shorten by) when its
        features change by these amounts (of either sign): the duration rounds up, and
        ceil(u) - ceil(v) <= ceil(u - v)."""
        top = max(b * tokens + g * seqs + d * kv + e * sampled for _, b, g, d, e in self.rows)
        return -(-top // self.q)


@dataclass(frozen=True)
class Work:
    """What a request has left to do from its ``arrival`` (or the time the search starts):
    its next sample's step content ``first`` (tokens, sequences, KV read, samples), then
    ``samples - 1`` decodes, the i-th reading ``read + i`` KV tokens (with exact reads;
    else ``read``)."""

    arrival: int
    first: tuple[int, int, int, int]
    read: int
    samples: int


def _works(inst: ScheduleInstance, ienv: IntEnvelope, firsts: np.ndarray
           ) -> tuple[np.ndarray, list[Work]]:
    """(the requests in arrival order, their work from their arrivals: ``firsts`` prompt
    tokens with the first sample, reading the prompt)."""
    a = ienv.ticks(inst.arrival_s)
    order = np.argsort(a, kind="stable")
    return order, [Work(int(a[r]), (int(firsts[r]), 1, int(inst.prompt[r]), 1),
                        int(inst.prompt[r]), int(inst.output[r])) for r in order]


def first_tokens(inst: ScheduleInstance, ienv: IntEnvelope) -> np.ndarray | None:
    """Per request, tau: the most prompt tokens its first sample's step may be charged with so
    that the exchanges hold (n x any step's lengthening < the shortest step); None when even
    one token is too many (the relaxation's optimum is then not known to be canonical)."""
    steps, n, m = _Steps(ienv), inst.n, ienv.min_step
    if (ienv.coef[:, 1:] < 0).any() or m < 1:
        return None
    taus = np.zeros(inst.n, dtype=np.int64)
    for j, p in enumerate(inst.prompt.tolist()):
        # a chunk merged into the first piece turns a middle chunk into a decode
        if n * steps.increase(0, 0, p - 1, 1) >= m:
            return None
        for t in range(p, 0, -1):
            if (n * steps.increase(t, 1, p, 1) < m
                    and n * steps.increase(t - 1, 0, p - 1, 1) < m):
                taus[j] = t
                break
        else:
            return None
    return taus


def exchange_threshold(inst: ScheduleInstance, ienv: IntEnvelope) -> int:
    """With whole prompts and exact KV reads (sample i reads P + i): the fewest other
    requests that must finish in one step for an exchange there to fail to pay (0: no
    exchange is known to pay). Each exchange runs a request's next piece (a decode, its
    whole prompt or its last chunk) in the step just before, which it skipped after its
    arrival, or merges its last chunk into its chunk in the step just before, and shifts
    its later steps one earlier: that step lengthens by at most ``big`` (those finishing in
    it wait that much longer), the next one gets the piece's place (shorter by about the
    piece), every later step reads one more token of it, so all later finishes move by at
    most ``small`` and the request finishes at least the shortest step m, less ``small``,
    earlier. It pays when f x big + n x small < m (f: the others finishing in that step)."""
    steps, n, m = _Steps(ienv), inst.n, ienv.min_step
    if (ienv.coef[:, 1:] < 0).any() or m < 1:
        return 0
    big = small = 0
    for p, o in zip(inst.prompt.tolist(), inst.output.tolist(), strict=True):
        later = o * steps.increase(0, 0, 1, 0)  # its later steps each read one more token
        # (added to the earlier step, change of the step it came from)
        cases = [((1, 1, p + o - 1, 1), (0, 0, 1, 0))]  # a decode
        for c in range(1, p + 1):
            cases.append(((c, 1, p, 1), (1 - c, 0, 1, 0)))  # last (or whole) prompt piece
            if c < p:  # merged into the chunk before it (same sequence, reads its rest)
                cases.append(((c, 0, p - 1, 1), (1 - c, 0, 1, 0)))
        for added, diff in cases:
            inc = steps.increase(*added)
            big = max(big, inc)
            # the next step starts at most inc later and changes by diff; later ones read more
            small = max(small, max(0, inc + steps.change(*diff)) + later)
    room = m - n * small
    return -(-room // big) if room > 0 and big > 0 else 0


def simultaneous_floor(inst: ScheduleInstance, ienv: IntEnvelope, count: int) -> int | None:
    """A lower bound on the model's latency objective for the schedules in which ``count``
    requests finish in the same step (None: none can): every request at least its own time
    (``arrivals.own_time``), and those ``count`` all at the time T of the latest of them to
    be able to finish, T - arrival each (the best T and set)."""
    ready = ienv.ticks(inst.arrival_s) + own_time(inst, ienv)
    extras = [np.sort((t - ready)[ready <= t])[:count].sum() for t in np.unique(ready)
              if (ready <= t).sum() >= count]
    if not extras:
        return None
    return int(own_time(inst, ienv).sum()) + int(min(extras))


def uncapped_latency(inst: ScheduleInstance, ienv: IntEnvelope, seconds: float
                     ) -> tuple[int, bool] | None:
    """A lower bound on the model's latency objective (sum of finish - arrival, integer
    ticks) for any schedule, with or without preemption, and whether it is the
    relaxation's proven optimum (else the search ran out of ``seconds``). The better of two
    canonical forms: prompts charged ``first_tokens`` each and reads of the prompt alone,
    where n x any step's lengthening < m; and whole prompts with exact reads, unless
    ``exchange_threshold`` requests finish in one step (a schedule that does is no better
    than ``simultaneous_floor``). None when neither form is known to hold."""
    found = []
    taus = first_tokens(inst, ienv)
    if taus is not None:
        value, proven, _ = _best_idling(inst, ienv, taus, seconds / 2)
        found.append((value, proven))
    count = exchange_threshold(inst, ienv)
    if count > 0:
        value, proven, _ = _best_idling(inst, ienv, inst.prompt, seconds / 2,
                                        exact_reads=True)
        floor = simultaneous_floor(inst, ienv, count)
        found.append((value if floor is None else min(value, floor), proven))
    return max(found) if found else None


def suffix_bounds(inst: ScheduleInstance, ienv: IntEnvelope, seconds: float
                  ) -> list[int] | None:
    """Per k = 0..n, a lower bound on the latency of the requests from the k-th in arrival
    order on, by themselves: the second form's optimum for them (at least their own times;
    the last ones first, each search using those after it), or, where it may not hold, the
    least latency of their schedules with ``exchange_threshold`` finishing in one step.
    None where the second form is not known to hold."""
    count = exchange_threshold(inst, ienv)
    if count == 0:
        return None
    order, works = _works(inst, ienv, inst.prompt)
    steps, deadline = _Steps(ienv), time.perf_counter() + seconds
    bounds = [0]
    for k in range(inst.n - 1, -1, -1):
        left = max(0.0, (deadline - time.perf_counter()) / (k + 1))
        value = idling_search(steps, works[k:], left, alone=[0, *bounds])[0]
        idx = order[k:]
        sub = replace(inst, arrival_s=inst.arrival_s[idx], prompt=inst.prompt[idx],
                      output=inst.output[idx])
        floor = simultaneous_floor(sub, ienv, count)
        bounds.insert(0, value if floor is None else min(value, floor))
    return bounds


def uncapped_schedule(inst: ScheduleInstance, ienv: IntEnvelope, seconds: float
                      ) -> list[FixedStep] | None:
    """Every request's whole prompt in the first step after its arrival, then a decode in
    every step until it ends, with the idle times best for that without the engine's limits
    (its decodes' KV reads counted as the prompt's); where the prompts arrived exceed the
    token budget, those that arrived last wait for a later step, and the engine never idles
    for more tokens than the budget. None when the search runs out of ``seconds`` (or a
    prompt exceeds the budget). It may still break the cache or the sequence cap (the
    caller checks)."""
    if (inst.prompt > inst.max_num_batched_tokens).any():
        return None
    _, proven, steps = _best_idling(inst, ienv, inst.prompt, seconds,
                                    inst.max_num_batched_tokens)
    if not proven:
        return None
    done: set[int] = set()
    schedule = []
    for members in steps:
        schedule.append(FixedStep(tuple((r, 1 if r in done else int(inst.prompt[r]))
                                        for r in members)))
        done.update(members)
    return schedule


def _best_idling(inst: ScheduleInstance, ienv: IntEnvelope, firsts: np.ndarray,
                 seconds: float, budget: float = math.inf, exact_reads: bool = False
                 ) -> tuple[int, bool, list[tuple[int, ...]]]:
    """Best-first search over the idle times of the schedules in which every request runs in
    every step from the first one starting at or after its arrival (``firsts`` prompt tokens
    in it) to its end, never waiting for more tokens than ``budget``; each sample reads the
    prompt's KV, or with ``exact_reads`` its whole context (sample i: P + i). Returns (the
    least latency, or the least bound of the open states when ``seconds`` run out; whether
    it is the least; the best schedule's steps as the request ids they hold, empty unless
    proven)."""
    order, works = _works(inst, ienv, firsts)
    value, proven, path = idling_search(_Steps(ienv), works, seconds, budget, exact_reads)
    return value, proven, [tuple(int(order[j]) for j in members) for _, members in path]


def idling_search(steps: _Steps, works: list[Work], seconds: float,
                  budget: float = math.inf, exact_reads: bool = True,
                  cutoff: float = math.inf, alone: list[int] | None = None
                  ) -> tuple[int, bool, list[tuple[int, tuple]]]:
    """``_best_idling`` over ``works`` (sorted by arrival): (least latency, the sum of
    finish - arrival, or the least bound of the open states when ``seconds`` run out or it
    reaches ``cutoff``; whether it is the least; the best schedule's steps as (start, the
    indices into ``works`` it holds), empty unless proven). ``alone[i]``: a lower bound on
    the latency of ``works[i:]`` by themselves (``suffix_bounds``), which the search uses
    for the requests yet to arrive: restricted to them, any schedule is one of theirs,
    no slower."""
    a = [w.arrival for w in works]
    first = [w.first for w in works]
    read = [w.read for w in works]
    out = [w.samples for w in works]
    n = len(a)
    if n == 0:
        return 0, True, []
    extra = 1 if exact_reads else 0

    def role(j: int, left: int) -> tuple[int, int, int, int]:
        """Request j's content in a step where it has ``left`` samples to go."""
        if left == out[j]:
            return first[j]
        return 1, 1, read[j] + extra * (out[j] - left), 1

    own = [sum(steps.duration(*role(j, left)) for left in range(1, out[j] + 1))
           for j in range(n)]
    future_own = [*reversed([*itertools.accumulate(reversed(own))]), 0]  # j.. n-1
    if alone is not None:
        future_own = [max(f, b) for f, b in zip(future_own, alone, strict=True)]

    def content(members, rem) -> tuple[int, int, int, int]:
        t = s = k = x = 0
        for j in members:
            c = role(j, rem[j])
            t, s, k, x = t + c[0], s + c[1], k + c[2], x + c[3]
        return t, s, k, x

    needs: dict[tuple, int] = {}

    def lower(at: int, joined: int, rem: tuple, cost: int) -> int:
        """cost (accrued to ``at``) plus what the requests there still need: step k from
        now holds every one of them with k or more samples left; later arrivals at least
        their own steps, or their bound alone where it is more."""
        after = max(joined, bisect.bisect_right(a, at))
        need = needs.get((after, rem))
        if need is None:
            left = {j: rem[j] for j in range(joined) if rem[j] > 0} | {
                j: out[j] for j in range(joined, after)}
            total = 0
            if left:
                # step 1 holds every piece due now; step k >= 2 a decode of each request with
                # k or more samples left, counted by samples left
                total = steps.duration(*content(left, left)) * len(left)
                top = max(left.values())
                count, reads = [0] * (top + 1), [0] * (top + 1)
                for j, lj in left.items():
                    count[lj] += 1
                    reads[lj] += read[j] + extra * (out[j] - lj)
                c = kv = 0
                for k in range(top, 1, -1):
                    c, kv = c + count[k], kv + reads[k]
                    total += steps.duration(c, c, kv + extra * (k - 1) * c, c) * c
            need = needs[after, rem] = total + future_own[after]
        return cost + need

    def accrue(at: int, to: int, joined: int, rem: tuple) -> int:
        """Waiting time the requests there add while the engine idles from ``at`` to
        ``to``."""
        busy = sum(1 for j in range(joined) if rem[j] > 0)
        return busy * (to - at) + sum(to - max(a[j], at) for j in range(joined, n)
                                      if a[j] <= to)

    start_rem = tuple(out)
    start_cost = 0
    heap = [(lower(a[0], 0, start_rem, start_cost), 0, a[0], 0, start_rem, start_cost)]
    came: list[tuple[int, int, tuple[int, ...]]] = [(-1, 0, ())]  # (previous, start, step)
    seen: dict[tuple, list[tuple[int, int]]] = {}
    deadline = time.perf_counter() + seconds
    while heap:
        bound, state, at, joined, rem, cost = heapq.heappop(heap)
        if joined == n and not any(rem):
            path = []
            while state > 0:
                state, start, members = came[state]
                path.append((start, members))
            return bound, True, path[::-1]
        if time.perf_counter() > deadline or bound >= cutoff:
            return bound, False, []
        busy = any(rem[j] > 0 for j in range(joined)) or (joined < n and a[joined] <= at)
        s0 = at if busy else a[joined]
        if not busy:
            cost += accrue(at, s0, joined, rem)
            at = s0
        members0 = [j for j in range(n) if (j < joined and rem[j] > 0)
                    or (j >= joined and a[j] <= s0)]
        d0 = steps.duration(*content(members0, rem))
        starts = [s0] + [a[x] for x in range(joined, n) if s0 < a[x] < s0 + d0]
        for s in dict.fromkeys(starts):
            wait = accrue(at, s, joined, rem)
            now = sum(1 for v in a if v <= s)
            members = [j for j in range(now) if rem[j] > 0]
            held = content(members, rem)
            if held[0] > budget:
                if s > s0:
                    continue  # waiting for more prompts than the budget takes
                # arrivals join in order while their prompts fit the budget; the rest wait
                now, tokens = joined, sum(1 for j in range(joined) if rem[j] > 0)
                while now < n and a[now] <= s and tokens + first[now][0] <= budget:
                    tokens, now = tokens + first[now][0], now + 1
                members = [j for j in range(now) if rem[j] > 0]
                held = content(members, rem)
            end = s + steps.duration(*held)
            nrem = list(rem)
            for j in members:
                nrem[j] -= 1
            nrem = tuple(nrem)
            ncost = cost + wait + accrue(s, end, now, rem)
            key = (now, nrem)
            kept = seen.setdefault(key, [])
            if any(t <= end and c + accrue(t, end, now, nrem) <= ncost for t, c in kept):
                continue
            kept.append((end, ncost))
            came.append((state, s, tuple(members)))
            heapq.heappush(heap, (lower(end, now, nrem, ncost), len(came) - 1, end, now, nrem,
                                  ncost))
    raise AssertionError("the search ended without a complete schedule")
