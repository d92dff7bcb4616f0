"""The trajectory relaxation of the latency of a burst without preemption: a lower bound
by column generation, and schedules from its restricted master (docs/optimizer.md,
"Trajectory bound").

Each request picks one trajectory, its computed tokens after every step of a horizon; the
picks share each step's KV cache, token budget and sequence cap. A request unfinished at
step s waits for the step, so the latency is sum_s u_s d_s (u_s: requests unfinished at s,
d_s: the step's duration). Per envelope piece, u_s d_s >= A u_s + u_s (B T_s + G N_s +
D K_s + E Sm_s); the products of u_s with the step's features are bounded below linearly
(u_s is at least a floor from the token budget, at least the requests running, and at most
all of them). The master linear program over trajectories is solved by column generation:
a dynamic program over (step, computed tokens) prices each request exactly, so the
Lagrangian value of any dual vector is a valid bound, whether or not the column generation
has converged. An integer program over the columns found gives schedules."""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_matrix, diags, hstack, vstack

from infersim.errors import SolverError
from infersim.optimizer.schedule.evaluate import ScheduleTrace
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope, int_trace
from infersim.simulator.schedulers.fixed import FixedStep

TANGENTS = 16  # tangent cuts per step and piece of u_s Z_s >= Z_s^2 / zeta
FEATURES = ("unf", "kb", "hold", "x", "xmy", "y", "kr", "smp")


@dataclass
class _Family:
    """Rows of the master, one per step: sum over the trajectory's features (per-step
    coefficients) plus continuous variables of the same step (coefficient per block)
    <= rhs."""

    feat: dict[str, np.ndarray]
    rhs: np.ndarray
    var: dict[str, float]


@dataclass
class TrajectoryResult:
    """``bound``: a lower bound on the model's latency objective (integer ticks,
    valid for every schedule of the instance); ``schedule``: the best schedule of the
    restricted master (None when it found none); ``lp``: the last master's value;
    ``converged``: no column prices out (the bound is the master's optimum)."""

    bound: int
    schedule: list[FixedStep] | None
    lp: float
    iterations: int
    columns: int
    converged: bool
    nodes: int
    seconds: float


def unfinished_floor(inst: ScheduleInstance, steps: int) -> np.ndarray:
    """Per step s, at least how many requests are unfinished during it: all but those
    that can finish by step s - 1. A request finishing by step k completes its
    prompt by step k - O + 1, so the prompts of a set finishing by k fit in the token budget
    of their deadlines; the largest such set is Moore-Hodgson's (chunked prompts are
    preemptive jobs with a common release)."""
    P, out_tokens, bud = inst.prompt, inst.output, inst.max_num_batched_tokens
    out = np.empty(steps)
    for s in range(steps):
        done = 0
        if s:
            deadline = bud * (s + 1 - out_tokens)
            jobs = sorted((int(deadline[r]), int(P[r])) for r in range(inst.n)
                          if deadline[r] >= P[r])
            heap: list[int] = []
            total = 0
            for due, p in jobs:
                heapq.heappush(heap, -p)
                total += p
                if total > due:
                    total += heapq.heappop(heap)
            done = len(heap)
        out[s] = inst.n - done
    return out


class _Columns:
    """Trajectories as rows of arrays over the horizon's steps."""

    def __init__(self, inst: ScheduleInstance, steps: int, kv_granularity: str,
                 min_step: int) -> None:
        self.inst, self.S, self.min_step = inst, steps, min_step
        self.block = kv_granularity == "block"
        self.req: list[int] = []
        self.comp: list[np.ndarray] = []
        self.seen: set[tuple[int, bytes]] = set()
        self._cache: dict[str, np.ndarray] | None = None

    def kv(self, tokens: np.ndarray) -> np.ndarray:
        return -(-tokens // self.inst.block_size) if self.block else tokens

    def left(self, r: int, c: int) -> int:
        """The fewest steps request r still needs after the horizon with ``c`` computed."""
        P, L = int(self.inst.prompt[r]), int(self.inst.length[r])
        if c >= L:
            return 0
        if c < P:
            return -(-(P - c) // self.inst.max_num_batched_tokens) + int(self.inst.output[r]) - 1
        return L - c

    def add(self, r: int, computed: np.ndarray) -> bool:
        key = (r, computed.astype(np.int64).tobytes())
        if key in self.seen:
            return False
        self.seen.add(key)
        self.req.append(r)
        self.comp.append(computed.astype(np.int64))
        self._cache = None
        return True

    def arrays(self) -> dict[str, np.ndarray]:
        """Per column and step: unfinished, KV held, tokens, active, KV read, sampled,
        holding, tokens beyond one; per column: steps left after the horizon, their least
        time (tail) and request."""
        if self._cache is not None:
            return self._cache
        inst = self.inst
        c = np.array(self.comp)
        req = np.array(self.req)
        L, P = inst.length[req][:, None], inst.prompt[req][:, None]
        prev = np.hstack([np.zeros((len(c), 1), dtype=np.int64), c[:, :-1]])
        unf = prev < L
        x = c - prev
        y = x > 0
        self._cache = dict(
            req=req, unf=unf.astype(float), kb=(self.kv(c) * unf).astype(float),
            x=x.astype(float), y=y.astype(float), xmy=(x - y).astype(float),
            kr=(c * y).astype(float), smp=(y & (c >= P)).astype(float),
            hold=((c > 0) & unf).astype(float),
            left=np.array([self.left(r, int(cc[-1])) for r, cc in
                           zip(self.req, self.comp, strict=True)], dtype=float))
        self._cache["tail"] = self.min_step * self._cache["left"]
        return self._cache


class TrajectoryRelaxation:
    """The master program over trajectories for one instance, envelope and horizon."""

    def __init__(self, inst: ScheduleInstance, ienv: IntEnvelope, steps: int,
                 kv_granularity: str = "block", min_request_steps: int = 0) -> None:
        self.inst, self.ienv, self.S = inst, ienv, steps
        # no schedule has fewer request-steps (request_steps.py): a row of the master
        self.min_request_steps = int(min_request_steps)
        coef = ienv.coef.astype(float) / ienv.q
        if (coef[:, 1:] < 0).any():
            raise SolverError("the trajectory bound needs an envelope without negative slopes")
        self.coef = coef
        self.A0 = ienv.min_step
        R = inst.n
        self.uL = unfinished_floor(inst, steps)
        self.uU = np.full(steps, float(R))
        self.bounded = False  # explicit rows uL <= u <= uU (branching tightens them)
        self.penalty = 10.0 * R * steps * self.A0  # per unit of slack in those rows
        seqs = min(R, inst.max_num_seqs)
        reads = min(inst.capacity_tokens, int(inst.length.sum()))
        B, G, D, E = coef[:, 1], coef[:, 2], coef[:, 3], coef[:, 4]
        self.own_max = B * inst.max_num_batched_tokens + (G + E) * seqs + D * reads
        # Z = (B + G) N + E Sm + D K <= zeta N <= zeta u (a running request reads <= max L)
        self.zeta = B + G + E + D * int(inst.length.max())
        self.grid = np.unique(np.linspace(0, seqs, TANGENTS + 1).round())[1:]
        self.kv_granularity = kv_granularity
        self.cols = _Columns(inst, steps, kv_granularity, self.A0)
        self._lefts: dict[int, np.ndarray] = {}  # per request: steps left by computed tokens
        self.cap_kv = inst.num_blocks if kv_granularity == "block" else inst.capacity_tokens
        self.kv_max = int(self.cols.kv(inst.length).max())
        self.seq_binding = inst.n > inst.max_num_seqs

    # --- the master ---------------------------------------------------------------------------
    def _families(self) -> list[_Family]:
        """The master's rows, one per step in each family. Continuous variables per step:
        c (u_s d_s, cost 1), w_k (u_s Z_ks), p (u_s (T_s - N_s)); Z_k = (B+G) N + E Sm + D K
        and T - N the tokens beyond one per running request. u_s >= uL_s (and >= 1 in a
        step that computes), u_s >= holders >= KV_s / kv_max (the most one request holds),
        u_s <= uU_s; when branching, uL <= u <= uU are rows too (with penalised slack, so
        that any node's master is feasible)."""
        S, R, coef, inst = self.S, self.inst.n, self.coef, self.inst
        one = np.ones(S)
        cap, bud = float(self.cap_kv), float(inst.max_num_batched_tokens)
        per = cap / self.kv_max
        lo, hi = np.maximum(self.uL, 1.0), self.uU
        fams = [_Family({"kb": one}, cap * one, {}), _Family({"x": one}, bud * one, {})]
        if self.seq_binding:
            fams.append(_Family({"hold": one}, inst.max_num_seqs * one, {}))
        if self.bounded:
            fams += [_Family({"unf": -one}, -self.uL, {"lo": -1.0}),
                     _Family({"unf": one}, self.uU, {"hi": -1.0})]
        # p <= u (T - N): u >= uL; u >= KV / kv_max with KV <= cap, T - N <= budget
        fams.append(_Family({"xmy": lo}, 0 * one, {"p": -1.0}))
        fams.append(_Family({"xmy": per * one, "kb": bud / self.kv_max * one},
                            per * bud * one, {"p": -1.0}))
        for k, (A, B, G, D, E) in enumerate(coef):
            z = {"y": (B + G) * one, "smp": E * one, "kr": D * one}
            wk = f"w{k}"
            zmax = self.zeta[k] * min(R, inst.max_num_seqs)
            # u_s d_s >= A u + B u (T - N) + u Z
            fams.append(_Family({"unf": A * one}, 0 * one, {"c": -1.0, "p": B, wk: 1.0}))
            fams.append(_Family({f: v * lo for f, v in z.items()}, 0 * one, {wk: -1.0}))
            fams.append(_Family({**{f: v * per for f, v in z.items()},
                                 "kb": zmax / self.kv_max * one}, per * zmax * one, {wk: -1.0}))
            for g in self.grid:  # u Z >= Z^2 / zeta >= 2 g Z - zeta g^2 (Z <= zeta N <= zeta u)
                fams.append(_Family({f: 2 * g * v for f, v in z.items()},
                                    self.zeta[k] * g * g * one, {wk: -1.0}))
            # the McCormick corner at u = uU: u own >= uU own + own_max (u - uU)
            own = {"xmy": hi * B, **{f: hi * v for f, v in z.items()}}
            fams.append(_Family({"unf": (A + self.own_max[k]) * one, **own},
                                hi * self.own_max[k], {"c": -1.0}))
        return fams

    def _blocks(self) -> dict[str, float]:
        """The continuous variables' blocks (S each) and their costs."""
        blocks = {"c": 1.0, **{f"w{k}": 0.0 for k in range(len(self.coef))}, "p": 0.0}
        if self.bounded:
            blocks.update(lo=self.penalty, hi=self.penalty)
        return blocks

    def _matrices(self, fams: list[_Family]):
        """(cost, A_ub, b_ub, A_eq, column arrays) with variables [lambda, then S each of
        the continuous blocks]."""
        a, S, R = self.cols.arrays(), self.S, self.inst.n
        n, blocks = len(a["req"]), self._blocks()
        eye = np.eye(S)  # continuous block b of step s is column n + b S + s
        rows = []
        for fam in fams:  # one family at a time: dense (S, n) blocks only while building
            lam = sum(a[f].T * v[:, None] for f, v in fam.feat.items())
            cont = np.concatenate([fam.var.get(name, 0.0) * eye for name in blocks], axis=1)
            rows.append(csr_matrix(np.hstack([lam, cont])))
        A_ub = vstack(rows).tocsr()
        A_eq = csr_matrix((np.ones(n), (a["req"], np.arange(n))),
                          shape=(R, n + S * len(blocks)))
        cost = np.concatenate([a["tail"], np.repeat(list(blocks.values()), S)])
        b_ub = np.concatenate([fam.rhs for fam in fams])
        if self.min_request_steps:  # sum_s u_s + steps left after the horizon >= the fewest
            row = np.zeros(A_ub.shape[1])
            row[:n] = -(a["unf"].sum(axis=1) + a["left"])
            A_ub = vstack([A_ub, csr_matrix(row)]).tocsr()
            b_ub = np.append(b_ub, -self.min_request_steps)
        return cost, A_ub, b_ub, A_eq, a

    def _master_lp(self, fams: list[_Family]):
        """The master linear program over the columns so far (HiGHS's result)."""
        cost, A_ub, b_ub, A_eq, _ = self._matrices(fams)
        return linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=np.ones(self.inst.n),
                       bounds=(0, None), method="highs")

    def _weights(self, mu: np.ndarray, fams: list[_Family]) -> dict[str, np.ndarray]:
        """Per-step prices of a trajectory's features under the duals ``mu`` (>= 0, one
        per row), made dual feasible for the continuous variables first (each block's
        cost plus its positive entries must cover its negative ones: rows with negative
        entries are scaled down where they do not), so that the constant plus each
        request's cheapest trajectory is a valid bound (the Lagrangian value). The fewest
        request-steps' row, last, prices every unfinished step and every step left after
        the horizon (``left``)."""
        S = self.S
        mu_all = mu
        mu = [mu[i * S:(i + 1) * S].copy() for i in range(len(fams))]
        for name, price in self._blocks().items():
            supply = np.full(S, price)
            demand = np.zeros(S)
            for fam, m in zip(fams, mu, strict=True):
                v = fam.var.get(name, 0.0)
                supply += m * max(v, 0.0)
                demand += m * max(-v, 0.0)
            ratio = np.where(demand > supply, supply / np.maximum(demand, 1e-300), 1.0)
            for fam, m in zip(fams, mu, strict=True):
                if fam.var.get(name, 0.0) < 0:
                    m *= ratio
        w = {f: np.zeros(S) for f in FEATURES}
        constant = 0.0
        for fam, m in zip(fams, mu, strict=True):
            for f, v in fam.feat.items():
                w[f] += m * v
            constant -= float(m @ fam.rhs)
        # the fewest request-steps' row: a price on every unfinished step and step left
        mu_steps = mu_all[len(fams) * S] if len(mu_all) > len(fams) * S else 0.0
        w["unf"] -= mu_steps
        w["left"] = np.array(-mu_steps)
        w["constant"] = np.array(constant + mu_steps * self.min_request_steps)
        return w

    def move_prices(self, r: int, w: dict[str, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Request r's prices under ``w``, per step s and computed tokens c: (base, slope,
        run). Staying unfinished at c costs base[s, c]; running from c_prev to c costs
        run[s, c] - slope[s] * c_prev."""
        P, L = int(self.inst.prompt[r]), int(self.inst.length[r])
        c = np.arange(L + 1)
        kv = self.cols.kv(c).astype(float)
        at = {f: w[f][:, None] for f in FEATURES}
        base = at["unf"] + at["kb"] * kv + at["hold"] * (c > 0)
        slope = w["x"] + w["xmy"]
        run = (base + slope[:, None] * c - at["xmy"] + at["y"] + at["kr"] * c
               + at["smp"] * (c >= P))
        return base, slope, run

    def price(self, r: int, w: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """The cheapest trajectory of request r under the prices ``w`` (exact dynamic
        program over steps and computed tokens): (cost, computed after each step)."""
        inst, S = self.inst, self.S
        P, L = int(inst.prompt[r]), int(inst.length[r])
        c = np.arange(L + 1)
        bases, slopes, runs = self.move_prices(r, w)
        V = np.full(L + 1, np.inf)
        V[0] = 0.0
        back = np.empty((S, L + 1), dtype=np.int64)
        for s in range(S):
            base, slope, run = bases[s], slopes[s], runs[s]
            new = V + np.where(c < L, base, 0.0)  # idle (or finished)
            frm = c.copy()
            # prompt chunks: c_prev < c <= P, c - c_prev <= budget
            best, arg = _window_argmin(V[:P] - slope * c[:P], inst.max_num_batched_tokens)
            chunk = best + run[1:P + 1]
            better = chunk < new[1:P + 1]
            new[1:P + 1][better] = chunk[better]
            frm[1:P + 1][better] = arg[better]
            # decodes: one token per step once the prompt is done
            dec = V[P:L] - slope * c[P:L] + run[P + 1:]
            better = dec < new[P + 1:]
            new[P + 1:][better] = dec[better]
            frm[P + 1:][better] = c[P:L][better]
            back[s] = frm
            V = new
        if r not in self._lefts:
            self._lefts[r] = np.array([self.cols.left(r, int(v)) for v in c], dtype=float)
        tail = (self.A0 + float(w["left"])) * self._lefts[r]
        cur = int(np.argmin(V + tail))
        value = float(V[cur] + tail[cur])
        path = np.empty(S, dtype=np.int64)
        for s in range(S - 1, -1, -1):
            path[s] = cur
            cur = int(back[s][cur])
        return value, path

    # --- the loop -----------------------------------------------------------------------------
    def _generate(self, deadline: float, cutoff: float = math.inf):
        """Column generation on the master under the current u bounds, until no column
        prices out, the Lagrangian bound reaches ``cutoff`` or the ``deadline``: (best
        Lagrangian bound, last LP result or None, converged, rounds)."""
        fams = self._families()
        best, res, rounds = -math.inf, None, 0
        while True:
            rounds += 1
            res = self._master_lp(fams)
            if res.status != 0:
                return best, None, False, rounds
            res.columns = len(self.cols.req)  # pricing below adds columns after these
            w = self._weights(np.maximum(0.0, -res.ineqlin.marginals), fams)
            sigma = res.eqlin.marginals
            lagrangian = float(w["constant"])
            added = 0
            for r in range(self.inst.n):
                value, path = self.price(r, w)
                lagrangian += value
                if value - sigma[r] < -1e-9 * max(1.0, abs(res.fun)) and self.cols.add(r, path):
                    added += 1
            best = max(best, lagrangian)
            if not added:
                return max(best, float(res.fun)), res, True, rounds
            if best >= cutoff or time.perf_counter() > deadline:
                return best, res, False, rounds

    def solve(self, start: ScheduleTrace, time_limit_s: float, upper: float = math.inf,
              gap: float = 1e-4,
              fewest: Callable[[Sequence[FixedStep]], int] | None = None
              ) -> TrajectoryResult:
        """Column generation from ``start``'s trajectories (a complete schedule of at most
        the horizon's steps) until no column prices out (at most 40% of the time); the
        integer master over the columns found (up to 70% of the time spent in all); then
        ``fewest``, if given, with the better of ``start`` and the integer master's schedule:
        the fewest request-steps it returns become a row of the master (request_steps.py);
        then, if the column generation converged, branching on the unfinished counts raises
        the bound until it is within ``gap`` of the best schedule known (``upper``, in the
        model's ticks, or the integer master's) or the time is up."""
        started = time.perf_counter()
        end = started + time_limit_s
        self._add_schedule(start)
        best, res, converged, it = self._generate(started + 0.4 * time_limit_s)
        lp = float(res.fun) if res is not None else math.inf
        schedule = None
        left = started + 0.7 * time_limit_s - time.perf_counter()
        if left > 0.5:
            picked = self._integer_master(self._families(), left)
            if picked is not None:
                schedule = picked[1]
                upper = min(upper,
                            int_trace(self.inst, self.ienv, schedule).objective("latency"))
        if fewest is not None:
            better = schedule is not None and upper < start.objective("latency")
            self.min_request_steps = max(self.min_request_steps,
                                         fewest(schedule if better else start.steps))
        nodes = 0
        if converged and math.isfinite(upper) and time.perf_counter() < end:
            best, nodes, better = self.branch_and_bound(best, upper, end, gap)
            schedule = better or schedule
        bound = math.ceil(best - 1e-7 * abs(best) - 1) if math.isfinite(best) else 0
        return TrajectoryResult(max(0, bound), schedule, lp, it, len(self.cols.req),
                                converged, nodes, time.perf_counter() - started)

    def branch_and_bound(self, root: float, upper: float, deadline: float, gap: float
                         ) -> tuple[float, int, list[FixedStep] | None]:
        """Best-first branching on the unfinished counts u_s (the master's product bounds
        are exact where uL = uU; each node's columns come from one shared pool, priced by
        the same dynamic program) from the ``root`` bound, until the lowest open bound is
        within ``gap`` of ``upper`` or the deadline: (bound, nodes, the best schedule
        among the nodes' integral LP solutions if one beats ``upper``)."""
        heap = [(root, 0, self.uL.copy(), self.uU.copy())]
        closed = math.inf  # the least bound of the nodes closed without children
        nodes = tick = 0
        schedule = None
        cutoff = upper * (1 - gap)
        with self._count_rows():
            while heap and heap[0][0] < cutoff and time.perf_counter() < deadline:
                parent, _, lo, hi = heapq.heappop(heap)
                nodes += 1
                self.uL, self.uU = lo, hi
                bound, res = self._generate(deadline, cutoff)[:2]
                bound = max(bound, parent)
                found = self._integral(res)
                if found is not None and found[0] < upper:
                    upper, schedule = found
                    cutoff = upper * (1 - gap)
                if bound >= cutoff or res is None or not (hi > lo).any():
                    closed = min(closed, bound)  # pruned, or exact products (integrality aside)
                    continue
                s, cut = self._branching(res, lo, hi)
                for a_lo, a_hi in ((lo[s], cut), (cut + 1, hi[s])):
                    clo, chi = lo.copy(), hi.copy()
                    clo[s], chi[s] = a_lo, a_hi
                    clo = np.maximum.accumulate(clo[::-1])[::-1]  # u is non-increasing in s
                    chi = np.minimum.accumulate(chi)
                    if (clo <= chi).all():
                        tick += 1
                        heapq.heappush(heap, (bound, tick, clo, chi))
        return min([h[0] for h in heap] + [closed, upper]), nodes, schedule

    def _integral(self, res) -> tuple[float, list[FixedStep]] | None:
        """A node's LP solution as a schedule, with its latency, if it picks one whole
        column per request and every pick finishes within the horizon."""
        if res is None:
            return None
        a = self.cols.arrays()
        chosen = np.flatnonzero(res.x[:res.columns] > 1 - 1e-6)
        if len(chosen) != self.inst.n or a["tail"][chosen].any():
            return None
        schedule = self._schedule(chosen)
        return int_trace(self.inst, self.ienv, schedule).objective("latency"), schedule

    def _branching(self, res, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int]:
        """The step whose product bounds the LP solution ``res`` leans on most (else the
        widest range) and where to split its range: children u_s <= cut and u_s > cut,
        the LP's u_s at an end of one of them."""
        a, S, n = self.cols.arrays(), self.S, res.columns
        x = res.x[:n]
        u = x @ a["unf"][:n]
        feats = np.stack([np.ones(S), *(x @ a[f][:n] for f in ("x", "y", "kr", "smp"))])
        d = (self.coef @ feats).max(axis=0) * (feats[1] > 1e-9)
        slack = np.where(hi > lo, u * d - res.x[n:n + S], -np.inf)
        s = int(np.argmax(slack)) if slack.max() > 1e-9 else int(np.argmax(hi - lo))
        v = u[s]
        if abs(v - round(v)) < 1e-6:
            cut = round(v) if round(v) - lo[s] <= hi[s] - round(v) else round(v) - 1
        else:
            cut = math.floor(v)
        return s, int(min(max(cut, lo[s]), hi[s] - 1))

    def valuation(self, trace: ScheduleTrace) -> float:
        """The master's value of one complete schedule (its trajectories alone): at most
        the schedule's latency in the model; the difference is what the product bounds
        miss on it."""
        saved = self.cols
        self.cols = _Columns(self.inst, self.S, self.kv_granularity, self.A0)
        try:
            self._add_schedule(trace)
            res = self._master_lp(self._families())
        finally:
            self.cols = saved
        if res.status != 0:
            raise SolverError(f"the schedule does not fit the master: {res.message}")
        return float(res.fun)

    def bound_with_counts(self, trace: ScheduleTrace, seconds: float) -> float:
        """The master's bound with every u_s fixed to ``trace``'s unfinished counts (a
        diagnostic: how much of the gap the product bounds leave where counts are known)."""
        k = min(self.S, trace.num_steps)
        counts = np.zeros(self.S)
        counts[:k] = (trace.computed[:, :k] < self.inst.length[:, None]).sum(axis=0)
        counts = np.concatenate([[self.inst.n], counts[:-1]])  # unfinished during step s
        with self._count_rows():
            self.uL, self.uU = counts, counts
            return self._generate(time.perf_counter() + seconds)[0]

    @contextlib.contextmanager
    def _count_rows(self):
        """uL <= u <= uU as rows of the master inside (where they may be narrowed); the
        root's bounds, without those rows, come back on leaving."""
        saved = self.uL, self.uU
        self.bounded = True
        try:
            yield
        finally:
            (self.uL, self.uU), self.bounded = saved, False

    def _add_schedule(self, trace: ScheduleTrace) -> None:
        """Each request's trajectory in a complete schedule (cut at the horizon)."""
        k = min(self.S, trace.num_steps)
        for r in range(self.inst.n):
            comp = np.full(self.S, int(self.inst.length[r]), dtype=np.int64)
            comp[:k] = trace.computed[r, :k]
            self.cols.add(r, comp)

    def _integer_master(self, fams: list[_Family], seconds: float
                        ) -> tuple[float, list[FixedStep]] | None:
        """The best complete schedule choosing one found trajectory per request, each
        finishing within the horizon, by its latency in the master's step times (exact
        for integer choices, unlike the master's product bounds, which it keeps as cuts):
        d_s >= every envelope piece of step s's features, request r waits q_rs >= d_s -
        d_max (1 - z_rs) in step s (z_rs: r unfinished at s; also q_rs >= A z_rs), and
        the master's u_s d_s bound c_s <= sum_r q_rs. (Its latency so valued, the
        schedule), or None if none is found."""
        cost, A_ub, b_ub, A_eq, a = self._matrices(fams)
        n, S, R = len(a["req"]), self.S, self.inst.n
        base = len(cost)  # then d (S), then q (R S, request-major)
        width = base + S + R * S
        d_cols = base + np.arange(S)
        q_cols = base + S + np.arange(R * S)
        coef = self.coef
        d_max = float((coef[:, 0] + self.own_max).max())  # the longest step
        a_min = float(coef[:, 0].max())  # d_s >= every piece's constant

        def block(m: np.ndarray | csr_matrix, cols: np.ndarray) -> csr_matrix:
            m = csr_matrix(m).tocoo()
            return csr_matrix((m.data, (m.row, cols[m.col])), shape=(m.shape[0], width))

        # z_rs = sum over r's columns of unf (rows request-major, like q)
        j, st = np.nonzero(a["unf"])
        z = csr_matrix((np.ones(len(j)), (a["req"][j] * S + st, j)), shape=(R * S, n))
        eye_rs = diags(np.ones(R * S))
        d_rs = csr_matrix((np.ones(R * S), (np.arange(R * S), np.tile(np.arange(S), R))),
                          shape=(R * S, S))
        lam_cols, cont_cols = np.arange(n), np.arange(base)
        rows = [block(A_ub, cont_cols)]
        rhs = [b_ub]
        for A, B, G, D, E in coef:
            feats = (B * a["x"] + G * a["y"] + D * a["kr"] + E * a["smp"]).T
            rows.append(block(feats, lam_cols) + block(-diags(np.ones(S)), d_cols))
            rhs.append(np.full(S, -A))
        rows.append(block(d_rs, d_cols) + block(-eye_rs, q_cols) + block(d_max * z, lam_cols))
        rhs.append(np.full(R * S, d_max))
        rows.append(block(a_min * z, lam_cols) + block(-eye_rs, q_cols))
        rhs.append(np.zeros(R * S))
        c_first = n  # the c block of the continuous variables
        rows.append(block(diags(np.ones(S)), c_first + np.arange(S))
                    + block(-hstack([diags(np.ones(S))] * R), q_cols))
        rhs.append(np.zeros(S))
        objective = np.zeros(width)
        objective[q_cols] = 1.0
        integral = np.zeros(width)
        integral[:n] = 1
        upper = np.full(width, np.inf)
        upper[:n] = a["tail"] == 0
        with quiet_stdout():  # HiGHS's MIP solver can print to the process's stdout
            res = milp(objective,
                       constraints=[LinearConstraint(vstack(rows).tocsr(), -np.inf,
                                                     np.concatenate(rhs)),
                                    LinearConstraint(block(A_eq, cont_cols), 1, 1)],
                       integrality=integral, bounds=Bounds(0, upper),
                       options={"time_limit": float(seconds)})
        if res.x is None:
            return None
        return float(res.fun), self._schedule(np.flatnonzero(res.x[:n] > 0.5))

    def _schedule(self, chosen: np.ndarray) -> list[FixedStep]:
        """The schedule of one chosen column per request (finishing within the horizon)."""
        a = self.cols.arrays()
        tokens = np.zeros((self.inst.n, self.S), dtype=np.int64)
        for j in chosen:
            tokens[a["req"][j]] = a["x"][j].astype(np.int64)
        return schedule_of(tokens)


def schedule_of(tokens: np.ndarray) -> list[FixedStep]:
    """The schedule computing ``tokens[r, s]`` of request r in step s (empty steps left
    out)."""
    steps = [FixedStep(tuple((r, int(q)) for r, q in enumerate(column) if q > 0))
             for column in tokens.T]
    return [st for st in steps if st.run]


def _window_argmin(g: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each i, the minimum of g[max(0, i - width + 1) .. i] and where it is."""
    n = len(g)
    if n == 0:
        return g, np.zeros(0, dtype=np.int64)
    if width >= n:
        low = np.minimum.accumulate(g)
        at = np.maximum.accumulate(np.where(g == low, np.arange(n), 0))
        return low, at
    padded = np.concatenate([np.full(width - 1, np.inf), g])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    j = windows.argmin(axis=1)
    return windows[np.arange(n), j], np.arange(n) - width + 1 + j


@contextlib.contextmanager
def quiet_stdout():
    """Point file descriptor 1 at /dev/null for the duration (C libraries write there
    directly), so that a ``--json`` output stays parseable."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
