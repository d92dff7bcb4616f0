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
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_matrix, diags, hstack, vstack

from infersim.errors import SolverError
from infersim.optimizer.schedule.evaluate import ScheduleTrace
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope
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
    """``bound``: a lower bound on the model's latency objective (integer microseconds,
    valid for every schedule of the instance); ``schedule``: the best schedule of the
    restricted master (None when it found none); ``lp``: the last master's value;
    ``converged``: no column prices out (the bound is the master's optimum)."""

    bound: int
    schedule: list[FixedStep] | None
    lp: float
    iterations: int
    columns: int
    converged: bool
    seconds: float


def unfinished_floor(inst: ScheduleInstance, steps: int) -> np.ndarray:
    """Per step s, at least how many requests are unfinished during it (at least 1): all
    but those that can finish by step s - 1. A request finishing by step k completes its
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
        out[s] = max(1, inst.n - done)
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

    def kv(self, tokens: np.ndarray) -> np.ndarray:
        return -(-tokens // self.inst.block_size) if self.block else tokens

    def tail(self, r: int, c: int) -> int:
        """The least time request r still needs after the horizon with ``c`` computed."""
        P, L = int(self.inst.prompt[r]), int(self.inst.length[r])
        if c >= L:
            return 0
        if c < P:
            left = -(-(P - c) // self.inst.max_num_batched_tokens) + int(self.inst.output[r]) - 1
        else:
            left = L - c
        return self.min_step * left

    def add(self, r: int, computed: np.ndarray) -> bool:
        key = (r, computed.astype(np.int64).tobytes())
        if key in self.seen:
            return False
        self.seen.add(key)
        self.req.append(r)
        self.comp.append(computed.astype(np.int64))
        return True

    def arrays(self) -> dict[str, np.ndarray]:
        """Per column and step: unfinished, KV held, tokens, active, KV read, sampled,
        holding; per column: tail cost and request."""
        inst = self.inst
        c = np.array(self.comp)
        req = np.array(self.req)
        L, P = inst.length[req][:, None], inst.prompt[req][:, None]
        prev = np.hstack([np.zeros((len(c), 1), dtype=np.int64), c[:, :-1]])
        unf = prev < L
        x = c - prev
        y = x > 0
        return dict(req=req, unf=unf.astype(float), kb=(self.kv(c) * unf).astype(float),
                    x=x.astype(float), y=y.astype(float), kr=(c * y).astype(float),
                    smp=(y & (c >= P)).astype(float), hold=((c > 0) & unf).astype(float),
                    tail=np.array([self.tail(r, int(cc[-1])) for r, cc in
                                   zip(self.req, self.comp, strict=True)], dtype=float))


class TrajectoryRelaxation:
    """The master program over trajectories for one instance, envelope and horizon."""

    def __init__(self, inst: ScheduleInstance, ienv: IntEnvelope, steps: int,
                 kv_granularity: str = "block") -> None:
        self.inst, self.S = inst, steps
        coef = ienv.coef.astype(float) / ienv.q
        if (coef[:, 1:] < 0).any():
            raise SolverError("the trajectory bound needs an envelope without negative slopes")
        self.coef = coef
        self.A0 = ienv.min_step
        R = inst.n
        self.uL = unfinished_floor(inst, steps)
        seqs = min(R, inst.max_num_seqs)
        reads = min(inst.capacity_tokens, int(inst.length.sum()))
        B, G, D, E = coef[:, 1], coef[:, 2], coef[:, 3], coef[:, 4]
        self.own_max = B * inst.max_num_batched_tokens + (G + E) * seqs + D * reads
        # Z = (B + G) N + E Sm + D K <= zeta N <= zeta u (a running request reads <= max L)
        self.zeta = B + G + E + D * int(inst.length.max())
        self.grid = np.unique(np.linspace(0, seqs, TANGENTS + 1).round())[1:]
        self.kv_granularity = kv_granularity
        self.cols = _Columns(inst, steps, kv_granularity, self.A0)
        self.cap_kv = inst.num_blocks if kv_granularity == "block" else inst.capacity_tokens
        self.kv_max = int(self.cols.kv(inst.length).max())
        self.seq_binding = inst.n > inst.max_num_seqs

    # --- the master ---------------------------------------------------------------------------
    def _families(self) -> list[_Family]:
        """The master's rows, one per step in each family. Continuous variables per step:
        c (u_s d_s, cost 1), w_k (u_s Z_ks), p (u_s (T_s - N_s)); Z_k = (B+G) N + E Sm + D K
        and T - N the tokens beyond one per running request. u_s >= uL_s, u_s >= holders
        >= KV_s / kv_max (the most one request holds), u_s <= R."""
        S, R, coef, inst = self.S, self.inst.n, self.coef, self.inst
        one = np.ones(S)
        cap, bud = float(self.cap_kv), float(inst.max_num_batched_tokens)
        per = cap / self.kv_max
        fams = [_Family({"kb": one}, cap * one, {}), _Family({"x": one}, bud * one, {})]
        if self.seq_binding:
            fams.append(_Family({"hold": one}, inst.max_num_seqs * one, {}))
        # p <= u (T - N): u >= uL; u >= KV / kv_max with KV <= cap, T - N <= budget
        fams.append(_Family({"xmy": self.uL}, 0 * one, {"p": -1.0}))
        fams.append(_Family({"xmy": per * one, "kb": bud / self.kv_max * one},
                            per * bud * one, {"p": -1.0}))
        for k, (A, B, G, D, E) in enumerate(coef):
            z = {"y": (B + G) * one, "smp": E * one, "kr": D * one}
            wk = f"w{k}"
            zmax = self.zeta[k] * min(R, inst.max_num_seqs)
            # u_s d_s >= A u + B u (T - N) + u Z
            fams.append(_Family({"unf": A * one}, 0 * one, {"c": -1.0, "p": B, wk: 1.0}))
            fams.append(_Family({f: v * self.uL for f, v in z.items()}, 0 * one, {wk: -1.0}))
            fams.append(_Family({**{f: v * per for f, v in z.items()},
                                 "kb": zmax / self.kv_max * one}, per * zmax * one, {wk: -1.0}))
            for g in self.grid:  # u Z >= Z^2 / zeta >= 2 g Z - zeta g^2 (Z <= zeta N <= zeta u)
                fams.append(_Family({f: 2 * g * v for f, v in z.items()},
                                    self.zeta[k] * g * g * one, {wk: -1.0}))
            # the McCormick corner at u = R: u own >= R own + own_max (u - R)
            own = {"xmy": R * B * one, **{f: R * v for f, v in z.items()}}
            fams.append(_Family({"unf": (A + self.own_max[k]) * one, **own},
                                R * self.own_max[k] * one, {"c": -1.0}))
        return fams

    def _blocks(self) -> list[str]:
        return ["c", *(f"w{k}" for k in range(len(self.coef))), "p"]

    def _matrices(self, fams: list[_Family]):
        """(cost, A_ub, b_ub, A_eq, column arrays) with variables [lambda, then S each of
        the continuous blocks]."""
        a, S, R = self.cols.arrays(), self.S, self.inst.n
        a["xmy"] = a["x"] - a["y"]
        n, blocks = len(a["req"]), self._blocks()
        features = {f: csr_matrix(a[f].T) for f in FEATURES}  # (S, n), mostly zeros
        lam, cont = [], []
        for fam in fams:
            lam.append(sum(features[f].multiply(v[:, None]) for f, v in fam.feat.items()))
            cont.append(hstack([diags(np.full(S, fam.var.get(name, 0.0)))
                                for name in blocks]))
        A_ub = hstack([vstack(lam), vstack(cont)]).tocsr()
        A_eq = csr_matrix((np.ones(n), (a["req"], np.arange(n))),
                          shape=(R, n + S * len(blocks)))
        cost = np.concatenate([a["tail"], np.ones(S), np.zeros(S * (len(blocks) - 1))])
        b_ub = np.concatenate([fam.rhs for fam in fams])
        return cost, A_ub, b_ub, A_eq, a

    def _master_lp(self, fams: list[_Family]):
        """The master linear program over the columns so far (HiGHS's result)."""
        cost, A_ub, b_ub, A_eq, _ = self._matrices(fams)
        return linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=np.ones(self.inst.n),
                       bounds=(0, None), method="highs")

    def _weights(self, mu: np.ndarray, fams: list[_Family]) -> dict[str, np.ndarray]:
        """Per-step prices of a trajectory's features under the duals ``mu`` (>= 0, one
        per row), made dual feasible for the continuous variables first (c, then w_k and
        p, whose only positive entries are in r1), so that the constant plus each request's
        cheapest trajectory is a valid bound (the Lagrangian value)."""
        S = self.S
        mu = [mu[i * S:(i + 1) * S].copy() for i in range(len(fams))]
        for name in self._blocks():
            supply = np.full(S, 1.0 if name == "c" else 0.0)
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
        w["constant"] = np.array(constant)
        return w

    def price(self, r: int, w: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """The cheapest trajectory of request r under the prices ``w`` (exact dynamic
        program over steps and computed tokens): (cost, computed after each step)."""
        inst, S = self.inst, self.S
        P, L = int(inst.prompt[r]), int(inst.length[r])
        c = np.arange(L + 1)
        kv = self.cols.kv(c).astype(float)
        V = np.full(L + 1, np.inf)
        V[0] = 0.0
        back = np.empty((S, L + 1), dtype=np.int64)
        for s in range(S):
            base = w["unf"][s] + w["kb"][s] * kv + w["hold"][s] * (c > 0)
            new = V + np.where(c < L, base, 0.0)  # idle (or finished)
            frm = c.copy()
            # running from c_prev to c costs run(c) - slope * c_prev
            slope = w["x"][s] + w["xmy"][s]
            run = (base + slope * c - w["xmy"][s] + w["y"][s] + w["kr"][s] * c
                   + w["smp"][s] * (c >= P))
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
        tail = np.array([self.cols.tail(r, int(v)) for v in c], dtype=float)
        cur = int(np.argmin(V + tail))
        value = float(V[cur] + tail[cur])
        path = np.empty(S, dtype=np.int64)
        for s in range(S - 1, -1, -1):
            path[s] = cur
            cur = int(back[s][cur])
        return value, path

    # --- the loop -----------------------------------------------------------------------------
    def solve(self, start: ScheduleTrace, time_limit_s: float, milp_share: float = 0.5
              ) -> TrajectoryResult:
        """Column generation from ``start``'s trajectories (a complete schedule of at most
        the horizon's steps) until no column prices out or ``1 - milp_share`` of the time
        is spent; then the integer master over the columns found, for the rest."""
        started = time.perf_counter()
        inst = self.inst
        self._add_schedule(start)
        cg_end = started + (1 - milp_share) * time_limit_s
        fams = self._families()
        best = -math.inf
        lp = math.inf
        converged = False
        it = 0
        while True:
            it += 1
            res = self._master_lp(fams)
            if res.status != 0:
                break
            lp = float(res.fun)
            w = self._weights(np.maximum(0.0, -res.ineqlin.marginals), fams)
            sigma = res.eqlin.marginals
            lagrangian = float(w["constant"])
            added = 0
            for r in range(inst.n):
                value, path = self.price(r, w)
                lagrangian += value
                if value - sigma[r] < -1e-9 * max(1.0, abs(lp)) and self.cols.add(r, path):
                    added += 1
            best = max(best, lagrangian)
            if not added:
                converged = True
                break
            if time.perf_counter() > cg_end:
                break
        schedule = None
        left = time_limit_s - (time.perf_counter() - started)
        if left > 0.5:
            schedule = self._integer_master(fams, left)
        bound = math.ceil(best - 1e-7 * abs(best) - 1) if math.isfinite(best) else 0
        return TrajectoryResult(max(0, bound), schedule, lp, it, len(self.cols.req),
                                converged, time.perf_counter() - started)

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

    def _add_schedule(self, trace: ScheduleTrace) -> None:
        """Each request's trajectory in a complete schedule (cut at the horizon)."""
        k = min(self.S, trace.num_steps)
        for r in range(self.inst.n):
            comp = np.full(self.S, int(self.inst.length[r]), dtype=np.int64)
            comp[:k] = trace.computed[r, :k]
            self.cols.add(r, comp)

    def _integer_master(self, fams: list[_Family], seconds: float) -> list[FixedStep] | None:
        """The best complete schedule (by the master's objective) choosing one found
        trajectory per request, each finishing within the horizon; None if none is found."""
        cost, A_ub, b_ub, A_eq, a = self._matrices(fams)
        n = len(a["req"])
        integral = np.zeros(len(cost))
        integral[:n] = 1
        upper = np.full(len(cost), np.inf)
        upper[:n] = a["tail"] == 0
        with _quiet_stdout():  # HiGHS's MIP solver can print to the process's stdout
            res = milp(cost, constraints=[LinearConstraint(A_ub, -np.inf, b_ub),
                                          LinearConstraint(A_eq, 1, 1)],
                       integrality=integral, bounds=Bounds(0, upper),
                       options={"time_limit": float(seconds)})
        if res.x is None:
            return None
        tokens = np.zeros((self.inst.n, self.S), dtype=np.int64)
        for j in np.flatnonzero(res.x[:n] > 0.5):
            tokens[a["req"][j]] = a["x"][j].astype(np.int64)
        steps = [FixedStep(tuple((r, int(q)) for r, q in enumerate(tokens[:, s]) if q > 0))
                 for s in range(self.S)]
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
def _quiet_stdout():
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
