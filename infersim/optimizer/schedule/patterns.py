"""The pattern relaxation of the latency of a burst without preemption: a mixed-integer
program, solved by HiGHS, whose optimum is a lower bound and whose solutions are often
schedules (docs/optimizer.md, "Patterns").

Each request picks a **pattern**: the step p its prompt completes (its first token) and
the step f that finishes it (p + O - 1 <= f <= p + O - 1 + ``MAX_PAUSE``; the extra steps
are pauses), or "unfinished after the horizon". A pattern is priced as if its whole prompt
ran at p and its decodes in the last O - 1 steps up to f. Every schedule maps to one pattern
per request whose pricing is no more than its own, because each request waits through every
step up to its finish (the requests unfinished during a step, u_s, never grow with s) and a
piece of work moved to a later step is multiplied by no more requests:

- a prompt chunk run before p moves to p. The step it leaves loses the chunk's tokens, its
  sequence and its KV read; p gains the tokens. With the per-sequence slope at least one
  tick, the rounding of both steps to ticks cannot make that dearer;
- a decode before a pause moves to its place in the last O - 1 steps. A step such a decode
  can land in is allowed one tick less (its rounding), so that cannot make it dearer
  either;
- a request pausing longer than ``MAX_PAUSE`` takes the pattern of the longest pause and
  its finish: its whole prompt moves to where that pause begins, whose step is allowed one
  tick less and counts none of the prompt in its per-step budget.

A step whose work all moved still lasts its intercept while a request waits.

What a pattern holds is a lower limit of what its request holds in every schedule that maps
to it: the blocks of its prompt from p to f, and of its last tokens before f (one token per
step after the first); chunks' KV and pauses' sequences are left out. The token budget is
kept on the tokens computed by each step (moves only go later) and, per step, on what did
not move there. Durations are one envelope piece (the max of pieces does not survive the
moves; any one piece is below it), rounded up to ticks as the model's are. The latency is
sum_s u_s d_s, with u_s an integer of known range (``trajectory.unfinished_floor`` .. all)
written in binary one-hot form, so each product is exact for integer solutions (the
disjunction's hull on the duration, with the longest step j unfinished requests allow).

A solution whose prompts fit the budget of their step and whose requests all finish in the
horizon is a schedule (prompt whole at p, pauses after it); HiGHS's improving solutions are
run by the engine's rules (``model.int_trace``) and the best becomes the incumbent.
The solve stops when the bound is within the gap of the best schedule known."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np
from scipy.sparse import coo_matrix

from infersim.errors import SolverError
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope, int_trace
from infersim.optimizer.schedule.trajectory import quiet_stdout, unfinished_floor
from infersim.simulator.schedulers.fixed import FixedStep

INF = highspy.kHighsInf
# the longest pause a pattern has: one with this many stands for every longer one too (its
# prompt moved to where the pause begins, with one tick allowed there for the rounding)
MAX_PAUSE = 2


@dataclass(frozen=True)
class PatternResult:
    """``bound``: no schedule of the burst has a lower latency in the model's ticks (0 when
    the solve gave none); ``schedule``: the best schedule found (or the start); ``value``:
    its latency in ticks; ``status``: HiGHS's model status; ``seconds``: wall time."""

    bound: int
    schedule: list[FixedStep]
    value: int
    status: str
    seconds: float


def pattern_count(inst: ScheduleInstance, horizon: int) -> int:
    """How many patterns (binary columns) the relaxation has over ``horizon`` steps."""
    out = np.maximum(inst.output.astype(np.int64), 1)
    width = np.maximum(horizon - out + 1, 0)  # prompt steps with a finish in the horizon
    finishes = np.where(out > 1, MAX_PAUSE + 1, 1)  # per prompt step, away from the horizon
    full = np.maximum(width - finishes + 1, 0)  # prompt steps with every finish in it
    near = width - full  # prompt steps with 1, 2, ... finishes left in it
    return int((full * finishes + near * (near + 1) // 2).sum() + inst.n)


def best_piece(inst: ScheduleInstance, ienv: IntEnvelope,
                schedule: Sequence[FixedStep]) -> int:
    """The envelope piece under which ``schedule``'s latency is highest (any one piece gives
    a valid relaxation; this one is likely the tightest near that schedule)."""
    values = [int_trace(inst, IntEnvelope(ienv.q, ienv.coef[k:k + 1], ienv.per_s), schedule)
              .objective("latency") for k in range(len(ienv.coef))]
    return int(np.argmax(values))


class _Rows:
    """A sparse constraint matrix built row by row."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, cols, vals, lo: float, hi: float) -> None:
        i = len(self.lo)
        self.r.extend([i] * len(cols))
        self.c.extend(cols)
        self.v.extend(vals)
        self.lo.append(lo)
        self.hi.append(hi)


class PatternRelaxation:
    """The relaxation over ``horizon`` steps (any horizon gives a bound; a request
    unfinished after it counts one more shortest step)."""

    def __init__(self, inst: ScheduleInstance, ienv: IntEnvelope, horizon: int,
                 kv_granularity: str = "block", piece: int = 0) -> None:
        if float(inst.arrival_s.min()) != float(inst.arrival_s.max()):
            raise SolverError("the pattern relaxation bounds the latency of a burst only: "
                              "every arrival must be equal")
        self.inst, self.ienv, self.H = inst, ienv, int(horizon)
        self.piece = int(piece)
        a, b, g, dk, e = (float(v) for v in ienv.coef[self.piece])
        # the moves of prompt chunks keep ticks valid only if a sequence costs >= 1 tick
        self.integer_steps = g >= ienv.q
        self._build(kv_granularity, (a, b, g, dk, e))

    # --- building ---------------------------------------------------------------------------
    def _build(self, kv_granularity: str, coef: tuple[float, ...]) -> None:
        inst, H, q = self.inst, self.H, float(self.ienv.q)
        R = inst.n
        P, OUT = inst.prompt.tolist(), inst.output.tolist()
        bs = inst.block_size if kv_granularity == "block" else 1
        cap = inst.num_blocks if kv_granularity == "block" else inst.capacity_tokens
        bud, seq = inst.max_num_batched_tokens, inst.max_num_seqs
        dmin = self.ienv.min_step
        intercept = math.ceil(coef[0] / q)
        lb: list[float] = []
        ub: list[float] = []
        cost: list[float] = []
        integer: list[bool] = []

        def var(hi: float, c: float = 0.0, is_int: bool = True) -> int:
            lb.append(0.0)
            ub.append(hi)
            cost.append(c)
            integer.append(is_int)
            return len(lb) - 1

        # patterns (r, p, f, column); p == H: unfinished after the horizon
        pats: list[tuple[int, int, int, int]] = []
        pauses = [MAX_PAUSE if o > 1 else 0 for o in OUT]
        for r in range(R):
            for p in range(H):
                for f in range(p + max(OUT[r], 1) - 1, min(H, p + max(OUT[r], 1) + pauses[r])):
                    pats.append((r, p, f, var(1)))
            pats.append((r, H, H, var(1, dmin)))
        self.patterns = pats
        floor = unfinished_floor(inst, H).astype(int)
        rows = _Rows()
        for r in range(R):
            cols = [k for (rr, _, _, k) in pats if rr == r]
            rows.add(cols, [1.0] * len(cols), 1, 1)
        a, b, g, dk, e = coef
        # the longest step while j requests are unfinished: only they can run in it
        top_p = np.concatenate([[0], np.cumsum(np.sort(P)[::-1])])
        top_l = np.concatenate([[0], np.cumsum(np.sort(np.add(P, OUT) - 1)[::-1])])

        def dmax(s: int, j: int) -> int:
            tokens = min(top_p[j], cap * bs + j, bud * (s + 1))
            seqs = min(j, seq)
            return math.ceil((a + b * tokens + g * seqs + dk * min(top_l[j], cap * bs)
                              + e * seqs) / q) + 1
        cum_c: list[int] = []
        cum_v: list[float] = []
        prev_e = None
        for s in range(H):
            T: dict[int, float] = {}
            N: dict[int, float] = {}
            K: dict[int, float] = {}
            S: dict[int, float] = {}
            moved: dict[int, float] = {}
            allow: list[int] = []
            kv: dict[int, float] = {}
            hold: list[int] = []
            unfinished: list[list[int]] = [[] for _ in range(R)]
            for (r, p, f, k) in pats:
                if p == H or f >= s:
                    unfinished[r].append(k)
                if p == H:
                    continue
                length = P[r] + OUT[r] - 1
                if p <= s <= f:
                    kv[k] = -(-max(P[r], length - (f - s)) // bs)
                    hold.append(k)
                if s == p:
                    T[k], N[k], K[k], S[k] = P[r], 1, P[r], 1
                    moved[k] = P[r] - 1
                    if pauses[r] and f == p + OUT[r] - 1 + pauses[r]:  # a prompt a longer pause
                        allow.append(k)                          # may have moved here
                        moved[k] = P[r]
                elif f - OUT[r] + 2 <= s <= f:
                    T[k], N[k], K[k], S[k] = 1, 1, P[r] + s - (f - OUT[r] + 1), 1
                    if f > p + OUT[r] - 1 and s < f:  # a decode a pause may have moved here
                        allow.append(k)
                        moved[k] = 1
            cum_c += list(T)
            cum_v += list(T.values())
            rows.add(list(cum_c), list(cum_v), -INF, bud * (s + 1))
            rows.add(list(T), [T[k] - moved.get(k, 0) for k in T], -INF, bud)
            rows.add(list(kv), list(kv.values()), -INF, cap)
            rows.add(hold, [1.0] * len(hold), -INF, seq)
            # e: the step is non-empty; it is exactly when a request is unfinished during it
            es = var(1)
            for ks in unfinished:
                rows.add([*ks, es], [1.0] * len(ks) + [-1.0], -INF, 0)
            if prev_e is not None:
                rows.add([es, prev_e], [1, -1], -INF, 0)
            prev_e = es
            ds = var(INF, 0.0, self.integer_steps)
            lo_u = int(floor[s])
            lam = {j: var(1) for j in range(lo_u, R + 1)}
            rows.add([es, *([lam[0]] if 0 in lam else [])], [1.0] * (1 + (0 in lam)), 1, 1)
            rows.add(list(lam.values()), [1.0] * len(lam), 1, 1)
            flat = [k for ks in unfinished for k in ks]
            rows.add([*lam.values(), *flat], [*map(float, lam), *([-1.0] * len(flat))], 0, 0)
            # q d >= a e + b T + g N + dk K + e S - q (allowed ticks)
            row_c = [ds, es]
            row_v = [q, -a]
            for feat, slope in ((T, b), (N, g), (K, dk), (S, e)):
                if slope:
                    row_c += list(feat)
                    row_v += [-slope * v for v in feat.values()]
            row_c += allow
            row_v += [q] * len(allow)
            rows.add(row_c, row_v, 0, INF)
            # u_s d_s = sum_j j w_j: w_j in [floor lam_j, dmax lam_j], sum_j w_j = d_s (an
            # empty step, u_s = 0, lasts nothing; a step whose work all moved later lasts at
            # least its intercept)
            top = {j: dmax(s, j) for j in lam if j}
            w = {j: var(top[j], float(j), False) for j in top}
            rows.add([*w.values(), ds], [1.0] * len(w) + [-1.0], 0, 0)
            for j in top:
                rows.add([w[j], lam[j]], [1, -top[j]], -INF, 0)
                rows.add([w[j], lam[j]], [1, -intercept], 0, INF)
        n = len(lb)
        self.A = coo_matrix((rows.v, (rows.r, rows.c)), shape=(len(rows.lo), n)).tocsc()
        self.A.sum_duplicates()
        self.row_lo, self.row_hi = np.array(rows.lo), np.array(rows.hi)
        self.col_lo, self.col_hi = np.array(lb), np.array(ub)
        self.cost, self.integer = np.array(cost), np.array(integer)

    # --- solving ------------------------------------------------------------------------------
    def _highs(self, col_lo: np.ndarray, col_hi: np.ndarray, seed: int) -> highspy.Highs:
        with quiet_stdout():  # HiGHS prints its banner to the process's stdout
            h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("random_seed", int(seed))
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.A.shape[1], self.A.shape[0]
        lp.col_cost_, lp.col_lower_, lp.col_upper_ = self.cost, col_lo, col_hi
        lp.row_lower_, lp.row_upper_ = self.row_lo, self.row_hi
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = self.A.indptr
        lp.a_matrix_.index_ = self.A.indices
        lp.a_matrix_.value_ = self.A.data
        kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
        lp.integrality_ = [kinds[int(i)] for i in self.integer]
        h.passModel(lp)
        return h

    def pattern_of(self, schedule: Sequence[FixedStep]) -> dict[int, tuple[int, int]]:
        """Each request's pattern in ``schedule``: (prompt step, finish step), the prompt
        step moved up to ``MAX_PAUSE`` steps of pause before the decodes; (H, H) if it
        finishes after the horizon."""
        inst, H = self.inst, self.H
        done = np.zeros(inst.n, dtype=np.int64)
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for s, step in enumerate(schedule):
            for r, t in step.run:
                done[r] += t
                if r not in first and done[r] >= inst.prompt[r]:
                    first[r] = s
                if r not in last and done[r] >= inst.length[r]:
                    last[r] = s
        pattern = {r: (H, H) for r in range(inst.n) if last[r] >= H}
        for r in set(range(inst.n)) - set(pattern):
            latest = last[r] - max(int(inst.output[r]), 1) + 1 - MAX_PAUSE
            pattern[r] = (max(first[r], latest), last[r])
        return pattern

    def solution_of(self, schedule: Sequence[FixedStep]) -> np.ndarray | None:
        """The relaxation's least solution with ``schedule``'s patterns (None if it has
        none: a pattern the relaxation lacks)."""
        want = self.pattern_of(schedule)
        lo, hi = self.col_lo.copy(), self.col_hi.copy()
        for (r, p, f, k) in self.patterns:
            lo[k] = hi[k] = float(want[r] == (p, f))
        h = self._highs(lo, hi, 0)
        with quiet_stdout():
            h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        return np.array(h.getSolution().col_value)

    def valuation(self, schedule: Sequence[FixedStep]) -> float:
        """The relaxation's value of ``schedule``: never above its latency in the model's
        ticks (what makes the relaxation's optimum a bound)."""
        x = self.solution_of(schedule)
        return math.inf if x is None else float(self.cost @ x)

    def schedule_of(self, x: np.ndarray) -> list[FixedStep] | None:
        """The schedule of a solution: each prompt whole at its step, then its decodes in
        the last steps up to its finish (None if a request is unfinished in the horizon)."""
        runs: list[dict[int, int]] = [{} for _ in range(self.H)]
        for (r, p, f, k) in self.patterns:
            if x[k] > 0.5:
                if p == self.H:
                    return None
                runs[p][r] = int(self.inst.prompt[r])
                for s in range(f - int(self.inst.output[r]) + 2, f + 1):
                    runs[s][r] = 1
        return [FixedStep(run=tuple(sorted(run.items())), preempt=()) for run in runs if run]

    def solve(self, start: Sequence[FixedStep], seconds: float, gap: float = 1e-4,
              seed: int = 0) -> PatternResult:
        """HiGHS on the relaxation for at most ``seconds``, started from ``start`` (a
        complete schedule of the burst), until its bound is within ``gap`` of the best
        schedule found."""
        started = time.perf_counter()
        best = {"schedule": list(start),
                "value": int(int_trace(self.inst, self.ienv, start).objective("latency"))}
        h = self._highs(self.col_lo, self.col_hi, seed)
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("time_limit", max(0.1, float(seconds)))
        x0 = self.solution_of(start)
        if x0 is not None:
            sol = highspy.HighsSolution()
            sol.col_value = list(x0)
            sol.value_valid = True
            h.setSolution(sol)

        def improving(_type, _msg, data_out, _data_in, _user) -> None:
            steps = self.schedule_of(np.asarray(data_out.mip_solution))
            if steps is None:
                return
            try:
                value = int(int_trace(self.inst, self.ienv, steps).objective("latency"))
            except SolverError:
                return  # a prompt past its step's budget: not a schedule as it stands
            if value < best["value"]:
                best.update(schedule=steps, value=value)

        def interrupt(_type, _msg, data_out, data_in, _user) -> None:
            if data_out.mip_dual_bound >= best["value"] * (1 - gap):
                data_in.user_interrupt = True

        kinds = highspy.cb.HighsCallbackType
        h.setCallback(lambda t, *rest: (improving if t == kinds.kCallbackMipImprovingSolution
                                        else interrupt)(t, *rest), None)
        h.startCallback(kinds.kCallbackMipImprovingSolution)
        h.startCallback(kinds.kCallbackMipInterrupt)
        with quiet_stdout():
            h.run()
        info = h.getInfo()
        dual = float(info.mip_dual_bound)
        bound = max(0, math.floor(dual * (1 - 1e-9))) if math.isfinite(dual) else 0
        return PatternResult(min(bound, best["value"]), best["schedule"], best["value"],
                             h.modelStatusToString(h.getModelStatus()),
                             time.perf_counter() - started)
