"""A latency bound for requests arriving over time that keeps the token budget in the first
steps (docs/optimizer.md, "The first steps exactly").

The relaxation without the engine's limits (``uncapped``) lets the first step take every
prompt that has arrived; when they exceed the budget, it undervalues every schedule by about
one step of one request. This branch and bound fixes the steps one at a time from the start
and bounds each node by what its fixed steps have cost so far plus the optimum of the
relaxation without limits for the rest (``uncapped.idling_search`` from the node's state).
A node's children are its possible next steps under a relaxation that still holds for every
schedule: no KV cache and no sequence cap, and the budget counted on prompt tokens only.
There, exchanges (``uncapped.exchange_threshold``) put every request that has begun
decoding in every step (a decode always fits), so a child is an engine idle until the next
arrival, or a step now with every decoding request and, of each request whose prompt is not
done, nothing, the rest of its prompt, or a chunk of it. A chunk's size is kept as a range,
bounded by its least tokens in the step and its most done after it, and split in two when
the node is expanded. A node whose relaxed optimum keeps within the engine's limits is a
schedule; the least bound over the open nodes is the bound."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import time
from dataclasses import dataclass

from infersim.errors import SolverError
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope, int_trace
from infersim.optimizer.schedule.uncapped import (
    Work,
    _Steps,
    exchange_threshold,
    idling_search,
    simultaneous_floor,
    suffix_bounds,
)
from infersim.simulator.schedulers.fixed import FixedStep

MAX_WAITING = 9  # more requests waiting for their prompt than this: 3^k next steps, not listed


@dataclass(frozen=True)
class EarlySteps:
    """The branch and bound's result: ``bound`` on the model's latency objective (ticks),
    the best schedule it found (``value``, None if none) and the nodes it evaluated;
    ``proven``: the bound reaches that schedule (or the ``upper`` it was given)."""

    bound: int
    value: int | None
    schedule: list[FixedStep] | None
    nodes: int
    proven: bool


@dataclass(frozen=True)
class _State:
    """The engine after some fixed steps: free from ``t``; per request the prompt tokens
    computed, the tokens sampled and the finish (-1: not yet)."""

    t: int
    done: tuple[int, ...]
    gen: tuple[int, ...]
    fin: tuple[int, ...]
    steps: tuple[FixedStep, ...]


# a next step: (decoding requests, requests whose prompt it ends, (request, least, most
# chunk tokens)), or an idle until a tick
_Step = tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int, int], ...]] | int


def early_steps_latency(inst: ScheduleInstance, ienv: IntEnvelope, seconds: float,
                        upper: int, search_s: float = 1.0) -> EarlySteps | None:
    """A lower bound on the model's latency objective (with or without preemption) and the
    best schedule found, by fixing the first steps one at a time (module docstring) for up
    to ``seconds``; nodes at or above ``upper`` (a schedule's value) are closed. None where
    the relaxation's canonical form is not known to hold (``exchange_threshold`` 0)."""
    count = exchange_threshold(inst, ienv)
    if count == 0:
        return None
    floor = simultaneous_floor(inst, ienv, count)
    steps = _Steps(ienv)
    a = [int(v) for v in ienv.ticks(inst.arrival_s)]
    prompt, out = inst.prompt.tolist(), inst.output.tolist()
    n, budget = inst.n, inst.max_num_batched_tokens
    order = sorted(range(n), key=lambda r: (a[r], r))
    deadline = time.perf_counter() + seconds
    alone = suffix_bounds(inst, ienv, seconds / 10)
    best, best_schedule = upper, None

    def accrued(st: _State) -> int:
        """The latency accrued by ``st.t``: finished requests whole, the others to then."""
        return sum(f - a[r] if f >= 0 else max(0, st.t - a[r]) for r, f in enumerate(st.fin))

    def after(st: _State, step: _Step, most: bool) -> _State:
        """The state after ``step`` from ``st``: the step as long as its chunks at their
        least, and those chunks done at their least or (``most``) their most tokens."""
        if isinstance(step, int):
            return _State(step, st.done, st.gen, st.fin, st.steps)
        decoding, ending, chunks = step
        done, gen, fin = list(st.done), list(st.gen), list(st.fin)
        tokens = len(decoding) + sum(prompt[r] - done[r] for r in ending) \
            + sum(lo for _, lo, _ in chunks)
        kv = sum(prompt[r] + gen[r] for r in decoding) + sum(prompt[r] for r in ending) \
            + sum(done[r] + lo for r, lo, _ in chunks)
        seqs = len(decoding) + len(ending) + len(chunks)
        end = st.t + steps.duration(tokens, seqs, kv, len(decoding) + len(ending))
        run = [(r, 1) for r in decoding] + [(r, prompt[r] - done[r]) for r in ending]
        for r in ending:
            done[r] = prompt[r]
        for r, lo, hi in chunks:
            run.append((r, lo))
            done[r] += hi if most else lo
        for r in (*decoding, *ending):
            gen[r] += 1
            if gen[r] == out[r]:
                fin[r] = end
        fixed = FixedStep(tuple(sorted(run)))
        return _State(end, tuple(done), tuple(gen), tuple(fin), (*st.steps, fixed))

    def evaluate(st: _State, step: _Step) -> tuple[int, list[FixedStep] | None]:
        """(the node's bound, the schedule its relaxed optimum makes, None unless proven)."""
        rest = after(st, step, True)  # chunks at their least in the step, most done after it
        acc = accrued(rest)
        ids, works = [], []
        for r in order:
            if rest.fin[r] >= 0:
                continue
            arrive = max(a[r], rest.t)
            if rest.done[r] < prompt[r]:
                works.append(Work(arrive, (prompt[r] - rest.done[r], 1, prompt[r], 1),
                                  prompt[r], out[r]))
            else:
                g = rest.gen[r]
                works.append(Work(arrive, (1, 1, prompt[r] + g, 1), prompt[r] + g,
                                  out[r] - g))
            ids.append(r)
        works, ids = zip(*sorted(zip(works, ids, strict=True), key=lambda p: p[0].arrival),
                         strict=True) if works else ((), ())
        # those yet to arrive are the last in arrival order, untouched: their bounds alone
        fresh = sum(1 for r in order if a[r] > rest.t)
        known = [0] * (len(works) - fresh) + alone[n - fresh:]
        left = min(search_s, max(0.0, deadline - time.perf_counter()))
        value, proven, path = idling_search(steps, list(works), left, cutoff=best - acc,
                                            alone=known)
        if not proven:
            return acc + value, None
        begun: set[int] = set()
        schedule = list(rest.steps)
        for _, members in path:
            run = []
            for j in members:
                run.append((ids[j], 1 if j in begun else works[j].first[0]))
                begun.add(j)
            schedule.append(FixedStep(tuple(sorted(run))))
        return acc + value, schedule

    def children(st: _State, idled: bool) -> list[_Step] | None:
        """The next steps from ``st``; after an idle, only those with a request that has
        just arrived (the others could have started before it). None: too many to list."""
        later = [a[r] for r in range(n) if st.fin[r] < 0 and a[r] > st.t]
        found: list[_Step] = [min(later)] if later else []
        decoding = tuple(r for r in range(n) if st.fin[r] < 0 and st.done[r] == prompt[r])
        waiting = [r for r in order if st.fin[r] < 0 and st.done[r] < prompt[r]
                   and a[r] <= st.t]
        if len(waiting) > MAX_WAITING:
            return None
        for pick in itertools.product((0, 1, 2), repeat=len(waiting)):
            ending = tuple(r for r, k in zip(waiting, pick, strict=True) if k == 1)
            cut = [r for r, k in zip(waiting, pick, strict=True) if k == 2]
            room = budget - sum(prompt[r] - st.done[r] for r in ending) - len(cut)
            if room < 0 or not (decoding or ending or cut):
                continue
            if idled and all(a[r] < st.t for r in (*ending, *cut)):
                continue
            chunks = tuple((r, 1, min(prompt[r] - st.done[r] - 1, room + 1)) for r in cut)
            if all(hi >= 1 for _, _, hi in chunks):
                found.append((decoding, ending, chunks))
        return found

    def split(step: _Step) -> list[_Step]:
        """A step whose chunk ranges are not all single sizes, its widest range halved."""
        decoding, ending, chunks = step
        i = max(range(len(chunks)), key=lambda k: chunks[k][2] - chunks[k][1])
        r, lo, hi = chunks[i]
        mid = (lo + hi) // 2
        return [(decoding, ending, (*chunks[:i], part, *chunks[i + 1:]))
                for part in ((r, lo, mid), (r, mid + 1, hi))]

    def exact(step: _Step) -> bool:
        return isinstance(step, int) or all(lo == hi for _, lo, hi in step[2])

    start = _State(min(a), (0,) * n, (0,) * n, (-1,) * n, ())
    # (key, tiebreak, evaluated, state before the step, the step)
    heap: list = [(0, 0, False, start, min(a))]
    tiebreak, nodes, low = 1, 0, math.inf
    while heap and heap[0][0] < best and time.perf_counter() < deadline:
        key, _, evaluated, st, step = heapq.heappop(heap)
        if not evaluated:
            nodes += 1
            value, schedule = evaluate(st, step)
            real = None
            if schedule is not None and exact(step):
                with contextlib.suppress(SolverError):  # beyond the cache, budget or seq cap
                    real = round(int_trace(inst, ienv, schedule).objective("latency"))
            if real is not None and real < best:
                best, best_schedule = real, schedule
            if value >= best or real is not None:
                low = min(low, value)  # closed: no schedule below it, or it is one
            else:
                heapq.heappush(heap, (max(key, value), tiebreak, True, st, step))
                tiebreak += 1
            continue
        if exact(step):
            state = after(st, step, False)
            pushed = children(state, isinstance(step, int))
            if pushed is None:  # left unexpanded: its bound stays a leaf's
                low = min(low, key)
                continue
        else:
            state, pushed = st, split(step)
        for child in pushed:
            heapq.heappush(heap, (key, tiebreak, False, state, child))
            tiebreak += 1
    bound = min(low, heap[0][0] if heap else math.inf, best)
    if floor is not None:
        bound = min(bound, floor)
    return EarlySteps(int(bound), best if best_schedule is not None else None, best_schedule,
                      nodes, bound >= best)
