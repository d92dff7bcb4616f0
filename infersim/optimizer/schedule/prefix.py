"""Makespan with arrivals, without preemption: the steps before an arrival exactly, the
work after it summed (docs/optimizer.md, "The steps before an arrival").

For an arrival time h, let k be the number of steps that start before h. They are the
model's steps exactly: tokens per request (prompt chunks, then one token per step), the
budget, the KV cache, the sequence cap, each step's duration under the envelope and no
request in a step that starts before its arrival. W, the steps starting at or after h,
begin at max(h, the end of step k); they hold everything left: at least as many steps as
any request has samples left (requests arriving at h or later: all their steps) and as the
tokens left fill in the budget, and each piece (slopes >= 0) over W's steps, tokens,
sequences, KV reads (sample j reads P + j) and samples bounds W's time from below. So
max(h, end of step k) + W's time - first arrival is at most the makespan of every
schedule with k steps before h. k is at most the number of steps that fit before h (each
at least the shortest step); the least bound over k bounds every schedule.

One CP-SAT model per k minimises that, below the best makespan known; its bound, finished
or not, bounds the schedules with k steps before h (those no better than the best known
need none). A solution of a model is also a schedule once the rest is filled in (every
request left in every step from its arrival, ``_complete``), where the cache holds it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from infersim.errors import SolverError
from infersim.optimizer.schedule.arrivals import makespan_floors
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope, _reached, int_trace
from infersim.optimizer.schedule.result import relative_gap
from infersim.simulator.schedulers.fixed import FixedStep

_FAR = 10**12  # ticks: no step or makespan comes near
SLICE_S = 2.0  # the least time a k gets when there is that much (the models that find the
# best schedules take about that on the 30 Poisson requests of the targets)


@dataclass
class PrefixBound:
    """``bound``: a lower bound on the model's makespan objective (ticks, at most the
    ``upper`` given); ``schedule``: the best complete schedule found below ``upper`` (None
    if none), ``value`` its makespan objective."""

    bound: int
    schedule: list[FixedStep] | None
    value: int | None


class _PrefixModel:
    """The CP-SAT model of ``k`` steps starting before ``h`` and the work left after them
    (objective: the model's makespan, ticks), below ``upper``."""

    def __init__(self, inst: ScheduleInstance, ienv: IntEnvelope, h: int, k: int,
                 upper: int) -> None:
        a = ienv.ticks(inst.arrival_s).tolist()
        P, out, L = inst.prompt.tolist(), inst.output.tolist(), inst.length.tolist()
        bud, Q, bs = inst.max_num_batched_tokens, ienv.q, inst.block_size
        m = self.model = cp_model.CpModel()
        self.k = k
        before = [r for r in range(inst.n) if a[r] < h]
        t = self.t = [m.new_int_var(min(a), h - 1, f"t{s}") for s in range(k)]
        d = self.d = [m.new_int_var(ienv.min_step, _FAR, f"d{s}") for s in range(k)]
        for s in range(k - 1):
            m.add(t[s + 1] >= t[s] + d[s])
        feats = [dict(T=[], N=[], K=[], S=[], B=[]) for _ in range(k)]
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}
        left_steps, left_tokens, left_reads, left_samples = [], [], [], []
        for r in before:
            ub = min(bud, L[r])
            c_prev, p_prev, f_prev, samples = 0, None, None, 0
            for s in range(k):
                x = self.x[r, s] = m.new_int_var(0, ub, f"x{r}_{s}")
                y = m.new_bool_var(f"y{r}_{s}")
                m.add(x >= y)
                m.add(x <= ub * y)
                m.add(t[s] >= a[r]).only_enforce_if(y)
                c = m.new_int_var(0, L[r], f"c{r}_{s}")
                m.add(c == c_prev + x)
                p = _reached(m, c, P[r], L[r], f"p{r}_{s}")
                f = _reached(m, c, L[r], L[r], f"f{r}_{s}")
                if p_prev is None:
                    m.add(c <= P[r])
                else:  # the prompt first (its last chunk samples), then one token per step
                    m.add(c <= P[r]).only_enforce_if(~p_prev)
                    m.add(x <= 1).only_enforce_if(p_prev)
                smp = m.new_bool_var(f"s{r}_{s}")
                m.add_bool_and([y, p]).only_enforce_if(smp)
                m.add_bool_or([~y, ~p]).only_enforce_if(~smp)
                read = m.new_int_var(0, L[r], f"kr{r}_{s}")
                m.add(read >= c - L[r] * (1 - y))
                blocks = m.new_int_var(0, -(-L[r] // bs), f"kb{r}_{s}")
                m.add(bs * blocks >= (c - L[r] * f_prev if f_prev is not None else c))
                for key, v in zip("TNKSB", (x, y, read, smp, blocks), strict=True):
                    feats[s][key].append(v)
                samples = samples + smp
                c_prev, p_prev, f_prev = c, p, f
            done = m.new_int_var(0, out[r], f"ns{r}")
            m.add(done == samples)
            reads = [sum(P[r] + j for j in range(i, out[r])) for i in range(out[r] + 1)]
            rest = m.new_int_var(0, reads[0], f"rw{r}")
            m.add_element(done, reads, rest)
            left_steps.append(out[r] - done)
            left_tokens.append(L[r] - c_prev)
            left_reads.append(rest)
            left_samples.append(out[r] - done)
        for r in range(inst.n):
            if a[r] >= h:
                left_steps.append(-(-P[r] // bud) + out[r] - 1)
                left_tokens.append(L[r])
                left_reads.append(sum(P[r] + j for j in range(out[r])))
                left_samples.append(out[r])
        for s in range(k):
            T, N, K, S, B = (sum(feats[s][key]) for key in "TNKSB")
            m.add(T >= 1)  # a step that starts is not empty
            m.add(bud >= T)
            m.add(inst.max_num_seqs >= N)
            m.add(inst.num_blocks >= B)
            for A, Bt, G, D, E in ienv.coef.tolist():
                m.add(Q * d[s] >= A + Bt * T + G * N + D * K + E * S)
        # W: the steps starting at or after h
        n_w = m.new_int_var(0, sum(L), "steps_w")
        for v in left_steps:
            m.add(n_w >= v)
        tokens_w = sum(left_tokens)
        m.add(bud * n_w >= tokens_w)
        w_time = m.new_int_var(0, _FAR, "w_time")
        for A, Bt, G, D, E in ienv.coef.tolist():
            if min(A, Bt, G, D, E) >= 0:
                m.add(Q * w_time >= A * n_w + Bt * tokens_w + G * sum(left_steps)
                      + D * sum(left_reads) + E * sum(left_samples))
        start_w = m.new_int_var(h, _FAR, "start_w")
        if k:
            m.add(start_w >= t[-1] + d[-1])
        self.objective = start_w + w_time - min(a)
        m.add(self.objective <= upper)
        m.minimize(self.objective)

    def steps(self, solver: cp_model.CpSolver) -> tuple[list[FixedStep], int]:
        """The solution's steps before h and when the last of them ends (its model value,
        not before the true end)."""
        out = []
        for s in range(self.k):
            run = tuple((r, int(solver.value(x))) for (r, st), x in sorted(self.x.items())
                        if st == s and solver.value(x) > 0)
            out.append(FixedStep(run))
        end = solver.value(self.t[-1] + self.d[-1]) if self.k else 0
        return out, int(end)


def _complete(inst: ScheduleInstance, ienv: IntEnvelope, prefix: list[FixedStep], start: int
             ) -> list[FixedStep] | None:
    """``prefix``, then from ``start`` every request with work left that has arrived
    in every step (in arrival order while the budget lasts: its prompt's rest, chunked at the
    budget, else one token); the engine idles until the next arrival when none has. None
    if that breaks the cache."""
    a = ienv.ticks(inst.arrival_s)
    P, L = inst.prompt, inst.length
    computed = np.zeros(inst.n, dtype=np.int64)
    for step in prefix:
        for r, q in step.run:
            computed[r] += q
    steps = list(prefix)
    clock = start
    order = np.argsort(a, kind="stable")
    while (computed < L).any():
        run, budget = [], inst.max_num_batched_tokens
        for r in order:
            if computed[r] < L[r] and a[r] <= clock and budget > 0:
                q = min(int(P[r] - computed[r]), budget) if computed[r] < P[r] else 1
                run.append((int(r), q))
                budget -= q
        if not run:
            clock = int(a[(computed < L) & (a > clock)].min())
            continue
        kv = sum(int(computed[r]) + q for r, q in run)
        sampled = sum(1 for r, q in run if computed[r] + q >= P[r])
        clock += ienv.duration(sum(q for _, q in run), len(run), kv, sampled)
        for r, q in run:
            computed[r] += q
        steps.append(FixedStep(tuple(sorted(run))))
    try:
        int_trace(inst, ienv, steps)
    except SolverError:
        return None
    return steps


def makespan_prefix(inst: ScheduleInstance, ienv: IntEnvelope, seconds: float, upper: int,
                    num_workers: int = 2, seed: int = 0, gap: float = 1e-4) -> PrefixBound:
    """The bound above, for the arrivals with the highest ``makespan_floors`` first (each
    given three quarters of the time left), until it is within ``gap`` of the best makespan
    known (``upper``, or a schedule found) or ``seconds`` run out. Per arrival, each k starts
    at the arrival's floor; the k with the lowest bound not yet proven (the largest k first;
    each open k once before any again) is solved next, for the time left shared by those
    open (at least ``SLICE_S``), only for makespans more than ``gap`` below the best known
    then: a schedule found makes the others quicker to refute, and a model with none is
    refuted rather than solved."""
    a = ienv.ticks(inst.arrival_s)
    a_min, m = int(a.min()), ienv.min_step
    floors = makespan_floors(inst, ienv)
    deadline = time.perf_counter() + seconds
    best, schedule, value = 0, None, upper
    for h in sorted(floors, key=lambda v: (-floors[v], v)):
        now = time.perf_counter()
        if deadline - now <= 0.05 or relative_gap(value, best) <= gap:
            break
        if h <= a_min:
            continue
        h_end = now + 0.75 * (deadline - now)
        k_max = (h - 1 - a_min) // m + 1
        low = dict.fromkeys(range(k_max + 1), math.ceil(floors[h] - 1e-9))
        tries = dict.fromkeys(low, 0)
        open_k = set(low)
        while open_k:
            k = min(open_k, key=lambda j: (tries[j], low[j], -j))
            tries[k] += 1
            left = h_end - time.perf_counter()
            share = min(left, max(left / len(open_k), SLICE_S))
            if share <= 0.01 or relative_gap(value, low[k]) <= gap:
                break
            # only a makespan more than ``gap`` below the best known matters
            target = math.floor(value * (1 - gap))
            status, bound, found = _solve_k(inst, ienv, h, k, target, share, num_workers,
                                            seed, gap)
            if found is not None:
                v = round(int_trace(inst, ienv, found).objective("makespan"))
                if v < value:
                    schedule, value = found, v
            if status == cp_model.INFEASIBLE:
                low[k] = max(low[k], target + 1)  # nothing at or below the target
            else:
                low[k] = max(low[k], bound)
            if status in (cp_model.INFEASIBLE, cp_model.OPTIMAL):
                open_k.discard(k)
        best = max(best, min(low.values()))
    return PrefixBound(min(best, value), schedule, value if schedule is not None else None)


def _solve_k(inst: ScheduleInstance, ienv: IntEnvelope, h: int, k: int, upper: int,
             seconds: float, num_workers: int, seed: int, gap: float
             ) -> tuple[int, int, list[FixedStep] | None]:
    """Solve the model of ``k`` steps before ``h`` at or below ``upper``: (CP-SAT's
    status, its bound (0 if none), its best solution completed into a schedule or None)."""
    sm = _PrefixModel(inst, ienv, h, k, upper)
    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.max_time_in_seconds = seconds
    prm.num_workers = num_workers
    prm.random_seed = seed
    prm.relative_gap_limit = gap
    status = solver.solve(sm.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return status, 0, None
    prefix, end = sm.steps(solver)
    return (status, math.ceil(solver.best_objective_bound - 1e-9),
            _complete(inst, ienv, prefix, max(h, end)))
