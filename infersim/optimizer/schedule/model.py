"""The CP-SAT model of serving a set of requests in engine steps (docs/optimizer.md has the
formulation with every relaxation and which way it goes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from infersim.errors import SolverError
from infersim.optimizer.schedule.evaluate import ScheduleTrace, run_schedule
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.linearize import StepEnvelope
from infersim.simulator.schedulers.fixed import FixedStep

MICROSECOND = 1_000_000  # ticks per second: the model's default unit of time


@dataclass(frozen=True)
class IntEnvelope:
    """The envelope in the model's integers: ``Q * d >= A + B T + G N + D K + E S`` per
    piece, d in ticks (``per_s`` a second; the model rounds each step up to a tick).
    Coefficients are rounded down and A lowered by one tick (Q), so the smallest integer d
    never exceeds the float envelope: the model's durations stay at or below the cost model
    wherever the envelope does."""

    q: int
    coef: np.ndarray  # (pieces, 5) int64: A, B, G, D, E
    per_s: int = MICROSECOND

    @classmethod
    def of(cls, env: StepEnvelope, per_s: int = MICROSECOND) -> IntEnvelope:
        scaled = env.pieces * per_s
        features = scaled[:, 1:]
        nonzero = features[features > 0]
        q = 1000
        while nonzero.size and q < 10**7 and (nonzero * q).min() < 1000:
            q *= 10
        coef = np.floor(scaled * q).astype(np.int64)
        coef[:, 0] -= q
        return cls(q, coef, per_s)

    def ticks(self, seconds) -> np.ndarray:
        """Times in seconds as the model's integer ticks (rounded down)."""
        return np.floor(np.asarray(seconds) * self.per_s).astype(np.int64)

    def duration(self, tokens: int, seqs: int, kv: int, sampled: int) -> int:
        """The model's (smallest) duration of a step, in ticks."""
        if tokens <= 0:
            return 0
        rhs = self.coef @ np.array([1, tokens, seqs, kv, sampled], dtype=np.int64)
        return max(0, int(-(-int(rhs.max()) // self.q)))

    @property
    def min_step(self) -> int:
        """The shortest a non-empty step can be (one token, one sequence, one KV read)."""
        return self.duration(1, 1, 1, 0)

    def uses(self, column: int) -> bool:
        return bool((self.coef[:, column] > 0).any())


def _reached(m: cp_model.CpModel, value, n: int, ub: int, name: str):
    """A new bool true exactly when ``value`` (in 0..ub) is at least ``n`` (linear form)."""
    b = m.new_bool_var(name)
    m.add(value >= n * b)
    m.add(value <= n - 1 + (ub - n + 1) * b)
    return b


def co_sampling_steps(need_i: np.ndarray, need_j: np.ndarray, cap: int) -> int:
    """At most how many steps two requests can both sample in, when sampling their t-th
    tokens holds ``need[t]`` units of a cache of ``cap`` (non-decreasing in t): the largest
    matching of sample indices, increasing on both sides, with ``need_i[a] + need_j[b] <=
    cap``. The compatible b of each a are a prefix that shrinks as a grows, so matching each
    a with the next free b whenever it fits is optimal."""
    fits = np.searchsorted(need_j, cap - need_i, side="right")  # compatible b: 0..fits-1
    k = 0
    for n in fits.tolist():
        if k < n:
            k += 1
    return k


def sampling_kv(inst: ScheduleInstance, kv_granularity: str = "block"
                ) -> tuple[list[np.ndarray], int]:
    """Per request, the KV it holds in the step sampling each of its tokens (token j: P + j
    computed tokens, in blocks or tokens), and the cache's capacity in the same unit."""
    held = [inst.prompt[r] + np.arange(inst.output[r]) for r in range(inst.n)]
    if kv_granularity == "block":
        return [-(-h // inst.block_size) for h in held], inst.num_blocks
    return held, inst.capacity_tokens


def sampling_step_bounds(inst: ScheduleInstance, kv_granularity: str = "block"
                         ) -> list[tuple[int, int]]:
    """Lower bounds on the steps any schedule (with or without preemption) needs to finish
    growing sets of requests, as (request added, bound for the set so far): request r
    samples its O_r tokens in O_r distinct steps and each step in which several requests
    sample holds their KV together, so for a set Q, steps >= sum_Q O_r - sum over pairs in
    Q of their co-sampling steps (a step with m samplers saves m - 1 <= m(m-1)/2 steps).
    Q grows greedily, longest outputs first, by the requests that raise the bound."""
    OUT = inst.output
    need, cap = sampling_kv(inst, kv_granularity)
    together = inst.max_num_seqs >= 2
    out: list[tuple[int, int]] = []
    bound = 0
    for r in sorted(range(inst.n), key=lambda r: (-int(OUT[r]), r)):
        gain = int(OUT[r]) - sum(co_sampling_steps(need[r], need[q], cap) if together else 0
                                 for q, _ in out)
        if gain > 0:
            bound += gain
            out.append((r, bound))
    return out


def busy_floor(inst: ScheduleInstance, ienv: IntEnvelope, steps: int) -> int:
    """The least busy time (ticks) of any schedule with at least ``steps`` non-empty
    steps, with or without preemption: each piece with no negative coefficient, summed over
    the steps, with at least every request's P + O - 1 tokens, its fewest steps as
    sequences, the KV reads of its O samples (sample j reads P + j - 1) and its samples;
    rounded up, as each step is."""
    P, out, L = inst.prompt, inst.output, inst.length
    tokens, samples = int(L.sum()), int(out.sum())
    seqs = int((-(-P // inst.max_num_batched_tokens) + out - 1).sum())
    reads = int((out * P + out * (out - 1) // 2).sum())
    best = max((A * steps + B * tokens + G * seqs + D * reads + E * samples
                for A, B, G, D, E in ienv.coef.tolist() if min(A, B, G, D, E) >= 0), default=0)
    return -(-best // ienv.q)


def int_trace(inst: ScheduleInstance, ienv: IntEnvelope, schedule) -> ScheduleTrace:
    """``schedule`` timed as the model times it (integer ticks, arrivals floored)."""
    return run_schedule(inst, schedule, ienv.duration, ienv.ticks(inst.arrival_s))


class ScheduleModel:
    """Variables per (request r, step s): tokens x, in-step y, computed-after c, prompt done
    p, finished f (and, with preemption, dropped pre, generated g, sampled smp); per step:
    non-empty e, start t, duration d. See docs/optimizer.md."""

    def __init__(self, inst: ScheduleInstance, ienv: IntEnvelope, objective: str,
                 preemption: bool, horizon: int, tail: bool, upper: int | None = None,
                 kv_granularity: str = "block", cuts: bool = True,
                 lower: int | None = None) -> None:
        if kv_granularity not in ("block", "token"):
            raise SolverError(f"kv_granularity must be block or token, got {kv_granularity!r}")
        self.inst, self.ienv, self.objective = inst, ienv, objective
        self.preemption, self.S, self.tail = preemption, horizon, tail
        self.kv_granularity = kv_granularity
        self.cuts, self.lower = cuts, lower
        self.arrival = ienv.ticks(inst.arrival_s)
        self.model = cp_model.CpModel()
        self._build(upper)

    # --- building ---------------------------------------------------------------------------
    def _build(self, upper: int | None) -> None:
        m, inst, ie = self.model, self.inst, self.ienv
        R, S = inst.n, self.S
        P, OUT, L = (inst.prompt.tolist(), inst.output.tolist(), inst.length.tolist())
        BUD, SEQ, NB, BS = (inst.max_num_batched_tokens, inst.max_num_seqs, inst.num_blocks,
                            inst.block_size)
        a = self.arrival.tolist()
        A0 = ie.min_step
        self.A0 = A0
        self.A1 = ie.duration(1, 1, 1, 1)  # the shortest step that samples a token
        max_tok = min(BUD, sum(L))
        dmax = ie.duration(max_tok, min(SEQ, R), min(inst.capacity_tokens, sum(L)), min(SEQ, R))
        tmax = int(max(a)) + S * dmax + max(OUT) * max(A0, 1) + 1
        self.tmax = tmax
        use_kv, use_smp = ie.uses(3), ie.uses(4)
        kv_binding = sum(-(-x // BS) for x in L) > NB
        cap_binding = R > SEQ

        # cost ignores time: the engine may idle for free, so arrivals never bind it
        timed = self.objective != "cost"
        self.timed = timed
        self.cum_p: list = []  # (r, s, number of steps s' <= s with p[r,s'])
        e = [m.new_bool_var(f"e{s}") for s in range(S)]
        t = [m.new_int_var(0, tmax, f"t{s}") for s in range(S)] if timed else None
        d = [m.new_int_var(0, dmax, f"d{s}") for s in range(S)]
        for s in range(S - 1):
            m.add_implication(e[s + 1], e[s])  # empty steps only at the end
            if timed:
                m.add(t[s + 1] >= t[s] + d[s])
        x = [[None] * S for _ in range(R)]
        y = [[None] * S for _ in range(R)]
        c = [[None] * S for _ in range(R)]
        p = [[None] * S for _ in range(R)]
        f = [[None] * S for _ in range(R)]
        g = [[None] * S for _ in range(R)] if self.preemption else None
        pre = [[None] * S for _ in range(R)] if self.preemption else None
        smp = [[None] * S for _ in range(R)]
        kb = [[None] * S for _ in range(R)]
        kr = [[None] * S for _ in range(R)]
        hold = [[None] * S for _ in range(R)]
        F = [m.new_int_var(0, tmax, f"F{r}") for r in range(R)] if timed else None
        need_ft = self.objective == "slo"
        FT = [m.new_int_var(0, tmax, f"FT{r}") for r in range(R)] if need_ft else None

        for r in range(R):
            Pr, Or, Lr = P[r], OUT[r], L[r]
            ub = min(BUD, Lr)
            for s in range(S):
                xv = m.new_int_var(0, ub, f"x{r}_{s}")
                yv = m.new_bool_var(f"y{r}_{s}")
                cv = m.new_int_var(0, Lr, f"c{r}_{s}")
                m.add(xv >= yv)
                m.add(xv <= ub * yv)
                m.add_implication(yv, e[s])
                if timed:
                    m.add(t[s] >= a[r] * yv)
                c_prev = c[r][s - 1] if s else 0
                f_prev = f[r][s - 1] if s else 0
                if not self.preemption:
                    m.add(cv == c_prev + xv)
                    pv = _reached(m, cv, Pr, Lr, f"p{r}_{s}")
                    fv = pv if Or == 1 else _reached(m, cv, Lr, Lr, f"f{r}_{s}")
                    if Or > 1:
                        p_prev = p[r][s - 1] if s else 0
                        m.add(cv <= Pr + (Lr - Pr) * p_prev)  # prompt first, then
                        m.add(xv <= 1 + (ub - 1) * (1 - p_prev))  # one token per step
                    if use_smp:
                        sv = m.new_bool_var(f"smp{r}_{s}")
                        m.add(sv >= yv + pv - 1)
                        smp[r][s] = sv
                else:
                    g_prev = g[r][s - 1] if s else 0
                    gv = m.new_int_var(0, Or, f"g{r}_{s}")
                    sv = m.new_bool_var(f"smp{r}_{s}")
                    if s:
                        dv = m.new_bool_var(f"pre{r}_{s}")
                        m.add(cv == c_prev + xv).only_enforce_if(~dv)
                        m.add(cv == xv).only_enforce_if(dv)
                        m.add(c_prev >= 1).only_enforce_if(dv)
                        m.add_implication(dv, ~f_prev)
                        pre[r][s] = dv
                    else:
                        m.add(cv == xv)
                    m.add(cv <= Pr + g_prev)
                    m.add(cv - g_prev >= Pr).only_enforce_if(sv)
                    m.add(cv - g_prev <= Pr - 1).only_enforce_if(~sv)
                    m.add(gv == g_prev + sv)
                    pv = _reached(m, gv, 1, Or, f"p{r}_{s}")
                    fv = pv if Or == 1 else _reached(m, gv, Or, Or, f"f{r}_{s}")
                    if s:
                        m.add(xv == 0).only_enforce_if(f_prev)
                    g[r][s], smp[r][s] = gv, sv
                x[r][s], y[r][s], c[r][s], p[r][s], f[r][s] = xv, yv, cv, pv, fv
                held = cv - Lr * f_prev  # tokens of KV held during the step
                if kv_binding and self.kv_granularity == "block":
                    kbv = m.new_int_var(0, -(-Lr // BS), f"kb{r}_{s}")
                    m.add(BS * kbv >= held)
                    kb[r][s] = kbv
                if cap_binding:
                    hv = m.new_bool_var(f"hold{r}_{s}")
                    m.add(cv <= Lr * hv + Lr * f_prev)
                    hold[r][s] = hv
                if use_kv:
                    krv = m.new_int_var(0, Lr, f"kr{r}_{s}")
                    m.add(krv >= cv - Lr * (1 - yv))
                    kr[r][s] = krv
                if not timed:
                    continue
                end = t[s] + d[s]
                if s == 0:
                    m.add(F[r] >= end)
                else:
                    m.add(F[r] >= end).only_enforce_if(~f_prev)
                if need_ft:
                    p_prev = p[r][s - 1] if s else None
                    if p_prev is None:
                        m.add(FT[r] >= end)
                    else:
                        m.add(FT[r] >= end).only_enforce_if(~p_prev)
                    m.add(FT[r] <= end).only_enforce_if(pv)
            # decoding is one token per step: after the first token, computed (no
            # preemption) or generated tokens grow by at most one per step (LP-strong form)
            if Or > 1:
                cum = 0
                for s in range(S):
                    cum = cum + p[r][s]
                    cp = m.new_int_var(0, s + 1, f"cp{r}_{s}")
                    m.add(cp == cum)
                    self.cum_p.append((r, s, cp))
                    cum = cp
                    if self.preemption:
                        m.add(g[r][s] <= cp)
                    else:
                        m.add(c[r][s] <= Pr - 1 + cp)
                    if s >= Or - 1:
                        m.add(f[r][s] <= p[r][s - Or + 1])
                    else:
                        m.add(f[r][s] == 0)

        # without preemption a request holds its prompt's KV from its first token to its
        # finish, and finishing at step k it has sampled all but k - s tokens by step s:
        # held >= need(P) (p[s] - f[s-1]) + sum_i (need(L - i) - need(P)) [finishes at s + i]
        if kv_binding and not self.preemption:
            block = self.kv_granularity == "block"

            def need(tokens: int) -> int:
                return -(-tokens // BS) if block else tokens

            for r in range(R):
                base = need(P[r])
                w = [need(L[r] - i) - base for i in range(OUT[r])]  # non-increasing
                for s in range(S):
                    f_prev = f[r][s - 1] if s else 0
                    last = min(OUT[r], S - s) - 1
                    # sum_i w_i (f[s+i] - f[s+i-1]), summed by parts: terms only where w
                    # changes (block boundaries)
                    rhs = base * (p[r][s] - f_prev) + w[last] * f[r][s + last] - w[0] * f_prev
                    rhs += sum((w[i] - w[i + 1]) * f[r][s + i] for i in range(last)
                               if w[i] != w[i + 1])
                    m.add((kb[r][s] if block else c[r][s] - L[r] * f_prev) >= rhs)
        # steps: budget, KV cache, sequence cap, duration
        for s in range(S):
            T = sum(x[r][s] for r in range(R))
            N = sum(y[r][s] for r in range(R))
            m.add(sum(x[r][s] for r in range(R)) <= BUD * e[s])  # no tokens in empty steps
            if kv_binding:
                if self.kv_granularity == "block":
                    m.add(sum(kb[r][s] for r in range(R)) <= NB * e[s])
                else:
                    m.add(sum(c[r][s] - L[r] * (f[r][s - 1] if s else 0) for r in range(R))
                          <= inst.capacity_tokens * e[s])
            if cap_binding:
                m.add(sum(hold[r][s] for r in range(R)) <= SEQ * e[s])
            K = sum(kr[r][s] for r in range(R)) if use_kv else 0
            Sm = sum(smp[r][s] for r in range(R)) if use_smp else 0
            for A, B, G, D, E in ie.coef.tolist():
                m.add(ie.q * d[s] >= A * e[s] + B * T + G * N + D * K + E * Sm)

        # every schedule has at least this many non-empty steps (all modelled when the
        # horizon is cut)
        self.sampling_bounds = sampling_step_bounds(inst, self.kv_granularity)
        m.add(sum(e) >= min(self.sampling_bounds[-1][1], S))
        # requests: finishing, lower bounds, the horizon's tail
        first_steps = [-(-P[r] // BUD) for r in range(R)]
        if timed:
            m.add(t[0] >= min(a))
        for r in range(R if timed else 0):
            m.add(F[r] >= a[r] + A0 * (first_steps[r] - 1) + self.A1 * OUT[r])
            # its own steps lie in [arrival, finish]: each lasts at least what r adds to it
            for A, B, G, D, E in ie.coef.tolist():
                if A >= 0:
                    own = sum((A + G) * y[r][s] + B * x[r][s]
                              + (D * kr[r][s] if use_kv else 0)
                              + (E * smp[r][s] if use_smp else 0) for s in range(S))
                    m.add(ie.q * (F[r] - a[r]) >= own)
            # a request finishing in step k ends after k + 1 non-empty steps from t[0]
            m.add(F[r] >= t[0] + A0 * (S + 1 - sum(f[r])))
            if need_ft:
                m.add(F[r] >= FT[r] + A0 * (OUT[r] - 1))
                m.add(FT[r] >= a[r] + A0 * first_steps[r])
                m.add(FT[r] >= t[0] + A0 * (S + 1 - sum(p[r])))
        if timed and self.cuts:
            self._finish_cuts(t, d, e, f, F, first_steps, dmax, kv_binding, cap_binding)
        unfinished, rem = [], []
        self.tail_vars: list = []
        self.makespan_var = None
        for r in range(R):
            # the step sampling token j (0-based) reads P + j KV tokens; r samples OUT tokens
            done = f[r][S - 1] if self.tail else 1
            if use_kv:
                reads = OUT[r] * P[r] + OUT[r] * (OUT[r] - 1) // 2
                m.add(sum(kr[r][s] for s in range(S)) >= reads * done)
            if use_smp:
                m.add(sum(smp[r][s] for s in range(S)) >= OUT[r] * done)
        if kv_binding and self.kv_granularity == "block":
            # memory-time: the step sampling token j holds ceil((P + j) / block) blocks
            held = sampling_kv(inst, "block")[0]
            for r in range(R):
                need = int(held[r].sum())
                done = f[r][S - 1] if self.tail else 1
                m.add(sum(kb[r][s] for s in range(S)) >= need * done)
        if self.tail:
            end_last = t[S - 1] + d[S - 1] if timed else 0
            for r in range(R):
                u = f[r][S - 1].Not()
                m.add_implication(u, e[S - 1])  # a cut horizon is a full one
                if self.preemption:
                    rr = OUT[r] - g[r][S - 1]
                else:
                    rv = m.new_int_var(0, OUT[r], f"rem{r}")
                    self.tail_vars.append(rv)
                    m.add_min_equality(rv, [OUT[r], L[r] - c[r][S - 1]])
                    rr = rv
                rem.append(rr)
                unfinished.append(u)
                if timed:
                    m.add(F[r] >= end_last + A0 * rr).only_enforce_if(u)
                if need_ft:
                    m.add(FT[r] >= end_last + A0).only_enforce_if(p[r][S - 1].Not())
        else:
            for r in range(R):
                m.add(f[r][S - 1] == 1)
                m.add(sum(y[r][s] for s in range(S)) >= first_steps[r] + OUT[r] - 1)

        # objective
        obj = self.objective
        offset = 0
        if obj == "latency":
            offset = -int(sum(a))
            expr = sum(F) + offset
        elif obj == "makespan":
            M = m.new_int_var(0, tmax, "makespan")
            self.makespan_var = M
            for r in range(R):
                m.add(F[r] <= M)
            offset = -int(min(a))
            m.add(M + offset >= sum(d))  # steps run one at a time after the first arrival
            expr = M + offset
        elif obj == "cost":
            expr = sum(d)
            if self.tail:
                n_tail = m.new_int_var(0, max(OUT), "tail_steps")
                self.tail_vars.append(n_tail)
                m.add_max_equality(n_tail, rem)
                tail_cost = m.new_int_var(0, tmax, "tail_cost")
                self.tail_vars.append(tail_cost)
                T_tail = sum(L[r] - c[r][S - 1] for r in range(R))
                N_tail = sum(rem)
                m.add(tail_cost >= A0 * n_tail)
                for A, B, G, _D, E in ie.coef.tolist():
                    if A >= 0:
                        m.add(ie.q * tail_cost >= A * n_tail + B * T_tail + (G + E) * N_tail)
                expr = expr + tail_cost
        elif obj == "slo":
            slo = inst.slo_ms
            if not slo:
                raise SolverError("objective slo needs limits: set slo.ttft_ms, slo.tpot_ms or "
                                  "slo.e2el_ms in the config")
            v = [m.new_bool_var(f"v{r}") for r in range(R)]
            # ms -> ticks, + the arrival's rounding down
            lim = {k: math.ceil(val * (ie.per_s // 1000)) + 1 for k, val in slo.items()}
            for r in range(R):
                if "ttft_ms" in lim:
                    m.add(FT[r] - a[r] <= lim["ttft_ms"]).only_enforce_if(~v[r])
                if "e2el_ms" in lim:
                    m.add(F[r] - a[r] <= lim["e2el_ms"]).only_enforce_if(~v[r])
                if "tpot_ms" in lim and OUT[r] > 1:
                    m.add(F[r] - FT[r] <= lim["tpot_ms"] * (OUT[r] - 1)).only_enforce_if(~v[r])
            expr = sum(v)
            self.violations = v
        else:
            raise SolverError(f"unknown objective {obj!r}; allowed: latency, makespan, cost, slo")
        if upper is not None:
            m.add(expr <= upper)
        if self.lower is not None:  # a bound proven on a relaxation (docs/optimizer.md)
            m.add(expr >= self.lower)
        m.minimize(expr)
        self.offset = offset
        self.objective_expr = expr
        self.vars = dict(e=e, t=t, d=d, x=x, y=y, c=c, p=p, f=f, g=g, pre=pre, smp=smp, kb=kb,
                         kr=kr, hold=hold, F=F, FT=FT)
        self.unfinished = unfinished
        self.kv_binding, self.cap_binding = kv_binding, cap_binding

    def _finish_cuts(self, t, d, e, f, F, first_steps, dmax, kv_binding, cap_binding) -> None:
        """Cuts on finish times, each valid for every schedule (and for a schedule longer
        than the horizon cut to its first S steps, since they involve only real finish
        times, t[0] and the modelled steps):

        - busy time: F_r >= t[0] + sum of d[s] over the steps before r finishes, with
          ``v[r,s] >= d[s] - dmax f[r,s-1]`` (a McCormick bound with the step's own dmax,
          far tighter in the LP than the time-indexed F_r >= t[s] + d[s]);
        - ordering ("parallel") inequalities of single-machine scheduling: requests
          finishing by r's finishing step did all their work in the steps up to it, so
          F_r - t[0] >= sum of z_j over the requests j finishing no later than r, where z_j
          (ticks) is a lower bound on the time j's work adds: each piece's slopes
          times j's own tokens, steps, KV reads and samples, plus the piece's intercept
          times j's share of a resource (KV block-steps / blocks, tokens / budget, or
          steps / max_num_seqs: the steps up to r's finish offer at most that many). For
          any set J of requests, sum_J z_r (F_r - t[0]) >= ((sum z)^2 + sum z^2) / 2
          (Queyranne). We add it for the prefixes of a few request orders."""
        m, inst, ie, S, R = self.model, self.inst, self.ienv, self.S, self.inst.n
        P, OUT, L = inst.prompt.tolist(), inst.output.tolist(), inst.length.tolist()
        busy = []
        for r in range(R):
            vs = []
            for s in range(S):
                v = m.new_int_var(0, dmax, f"busy{r}_{s}")
                if s == 0:
                    m.add(v >= d[s])
                else:
                    m.add(v >= d[s] - dmax * f[r][s - 1])
                    m.add(v >= self.A0 * (e[s] - f[r][s - 1]))
                vs.append(v)
            busy.append(vs)
            m.add(F[r] >= t[0] + sum(vs))
        self.busy = busy
        steps = [first_steps[r] + OUT[r] - 1 for r in range(R)]
        reads = [OUT[r] * P[r] + OUT[r] * (OUT[r] - 1) // 2 for r in range(R)]
        resources = [(L, inst.max_num_batched_tokens)]
        if kv_binding:
            held, cap = sampling_kv(inst, self.kv_granularity)
            resources.append(([int(h.sum()) for h in held], cap))
        if cap_binding:
            resources.append((steps, inst.max_num_seqs))
        use_kv, use_smp = ie.uses(3), ie.uses(4)
        orders = []
        for A, B, G, D, E in ie.coef.tolist():
            if A < 0:
                continue
            work = [B * L[r] + G * steps[r] + (D * reads[r] if use_kv else 0)
                    + (E * OUT[r] if use_smp else 0) for r in range(R)]
            for amount, cap in resources:
                z = [(A * amount[r] / cap + work[r]) / ie.q for r in range(R)]
                z = [math.floor(v * 10) for v in z]  # 0.1 us units, rounded down: still valid
                for key in (z, steps, L, list(range(R))):
                    order = sorted(range(R), key=lambda r, key=key: (key[r], z[r], r))
                    orders.append((z, order))
        # the last of a set Q to finish ends after its sampling steps (at least the set's
        # bound), the others after their own steps
        members: list[int] = []
        for r, bound in self.sampling_bounds:
            members.append(r)
            own = [self.A0 * (first_steps[j] - 1) + self.A1 * OUT[j] for j in members]
            if len(members) > 1 and self.A1 * bound > max(own):
                m.add(sum(F[j] - t[0] for j in members)
                      >= self.A1 * bound + sum(own) - max(own))
        seen = set()
        for z, order in orders:
            total = sq = 0
            members: list[int] = []
            for r in order:
                members.append(r)
                total += z[r]
                sq += z[r] * z[r]
                sig = (tuple(z), tuple(sorted(members)))
                if sig in seen or len(members) < 2:
                    continue
                seen.add(sig)
                rhs = (total * total + sq) // 2
                m.add(sum(10 * z[j] * (F[j] - t[0]) for j in members) >= rhs)

    # --- warm start -------------------------------------------------------------------------
    def hint(self, tr: ScheduleTrace) -> None:
        """Hint every variable with the values of a complete schedule's integer trace."""
        inst, v, m, S = self.inst, self.vars, self.model, self.S
        n = tr.num_steps
        if n > S:
            raise SolverError(f"the warm start has {n} steps, more than the horizon {S}")
        P, OUT, L, BS = inst.prompt, inst.output, inst.length, inst.block_size
        last_end = int(tr.end[-1]) if n else 0
        pad = S - n
        x = np.pad(tr.tokens, ((0, 0), (0, pad)))
        c = np.hstack([tr.computed, np.repeat(L[:, None], pad, axis=1)])
        g = np.hstack([tr.generated, np.repeat(OUT[:, None], pad, axis=1)])
        dropped = np.pad(tr.dropped, ((0, 0), (0, pad)))
        g_prev = np.hstack([np.zeros((inst.n, 1), dtype=np.int64), g[:, :-1]])
        for s in range(S):
            busy = s < n
            m.add_hint(v["e"][s], busy)
            if v["t"] is not None:
                m.add_hint(v["t"][s], int(tr.start[s]) if busy else last_end)
            m.add_hint(v["d"][s], int(tr.duration[s]) if busy else 0)
        for r in range(inst.n):
            for s in range(S):
                xs, cs, gs, gp = int(x[r, s]), int(c[r, s]), int(g[r, s]), int(g_prev[r, s])
                held = 0 if gp >= OUT[r] else cs
                m.add_hint(v["x"][r][s], xs)
                m.add_hint(v["y"][r][s], xs > 0)
                m.add_hint(v["c"][r][s], cs)
                m.add_hint(v["p"][r][s], gs >= 1)
                if OUT[r] > 1:
                    m.add_hint(v["f"][r][s], gs >= OUT[r])
                if v["smp"][r][s] is not None:
                    m.add_hint(v["smp"][r][s], xs > 0 and cs == P[r] + gp)
                if self.preemption:
                    m.add_hint(v["g"][r][s], gs)
                    if s:
                        m.add_hint(v["pre"][r][s], bool(dropped[r, s]))
                if v["kb"][r][s] is not None:
                    m.add_hint(v["kb"][r][s], -(-held // BS))
                if v["hold"][r][s] is not None:
                    m.add_hint(v["hold"][r][s], held > 0)
                if v["kr"][r][s] is not None:
                    m.add_hint(v["kr"][r][s], cs if xs > 0 else 0)
            if v["F"] is not None:
                m.add_hint(v["F"][r], int(tr.finish[r]))
            if v["FT"] is not None:
                m.add_hint(v["FT"][r], int(tr.first_token[r]))
        for r, vs in enumerate(getattr(self, "busy", [])):
            for s, var in enumerate(vs):
                before = s == 0 or g[r, s - 1] < OUT[r]
                m.add_hint(var, int(tr.duration[s]) if s < n and before else 0)
        cum = np.cumsum(g >= 1, axis=1)
        for r, s, var in self.cum_p:
            m.add_hint(var, int(cum[r, s]))
        if self.makespan_var is not None:
            m.add_hint(self.makespan_var, int(tr.finish.max()))
        for var in self.tail_vars:  # a complete schedule leaves nothing to the tail
            m.add_hint(var, 0)
        if self.objective == "slo":
            bad = tr.slo_violations(inst.slo_ms, self.ienv.per_s / 1000)
            for r, var in enumerate(self.violations):
                m.add_hint(var, bool(bad[r]))

    # --- reading a solution -----------------------------------------------------------------
    def extract(self, value) -> list[FixedStep]:
        """The schedule of a solution (``value``: var -> int), empty steps dropped."""
        v, R = self.vars, self.inst.n
        out = []
        for s in range(self.S):
            if not value(v["e"][s]):
                break
            run = tuple((r, int(value(v["x"][r][s]))) for r in range(R)
                        if value(v["x"][r][s]) > 0)
            drop = ()
            if self.preemption and s:
                drop = tuple(r for r in range(R) if value(v["pre"][r][s]))
            if run or drop:
                out.append(FixedStep(run, drop))
        return out

    def complete(self, value) -> bool:
        return not any(value(u) for u in self.unfinished)

    @property
    def size(self) -> dict:
        proto = self.model.proto
        return {"variables": len(proto.variables), "constraints": len(proto.constraints)}
