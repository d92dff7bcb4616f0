"""Makespan with arrivals, without preemption: the work before and after an arrival, counted
together (docs/optimizer.md, "Work before and after an arrival").

For an arrival time h, W is the set of steps starting at or after h and E the start of its
first step: E >= h, every earlier step ends by E, and the last finish is at least E plus
W's time. A request r arrived before h does b_r steps, s_r samples and x_r tokens before W:
x_r = P_r + s_r - 1 once it has sampled, else x_r <= P_r - 1; b_r <= x_r <= budget x b_r
and s_r <= b_r. W computes its other L_r - x_r tokens and O_r - s_r samples, in at least
O_r - s_r steps, sample j reading P_r + j - 1 KV tokens. The steps starting in [a_r, h)
end by E: they hold all the steps before W of the requests arrived at or after a_r (their
tokens, samples and reads) and each earlier request q's last b_q - ceil((a_r - a_q) / m)
or more steps before W, each with a token and, within q's last s_q, a sample reading at
least P_q; their number is at least each request's count there, each holds a token, a
sequence and a KV read, and under every envelope piece (with a constant >= 0) they last at
most E - a_r. W's time is at least every such piece over its steps (at least each
request's O_r - s_r and its tokens over the budget), tokens, sequences, reads and samples.

One CP-SAT model per h minimises E + W's time over the counts; its bound, stopped by the
time limit or not, bounds the makespan. ``arrivals.makespan_floors`` lets each request's
steps before h fill [a_r, h) alone; here they must also hold the work the others do there.
"""

from __future__ import annotations

import math
import time

from ortools.sat.python import cp_model

from infersim.optimizer.schedule.arrivals import makespan_floors
from infersim.optimizer.schedule.instance import ScheduleInstance
from infersim.optimizer.schedule.model import IntEnvelope


def _window_model(inst: ScheduleInstance, ienv: IntEnvelope, h: int, upper: int):
    """The CP-SAT model for arrival ``h``; its objective is Q x (E + W's time) in
    ticks (Q: the envelope's scale)."""
    a = ienv.ticks(inst.arrival_s)
    P, out, L = inst.prompt.tolist(), inst.output.tolist(), inst.length.tolist()
    bud, m, Q = inst.max_num_batched_tokens, ienv.min_step, ienv.q
    pieces = [tuple(int(v) for v in row) for row in ienv.coef if row[0] >= 0]
    n, big = inst.n, 10**9
    md = cp_model.CpModel()
    before = [r for r in range(n) if a[r] < h]
    b: dict = dict.fromkeys(range(n), 0)
    s, x = dict(b), dict(b)
    reads_before = dict(b)
    reads_w = {r: sum(P[r] + j - 1 for j in range(1, out[r] + 1)) for r in range(n)}
    b_max = dict(b)
    for r in before:
        b_max[r] = min(L[r], -(-(h - int(a[r])) // m))  # starts a_r, a_r + m, ... < h
        b[r] = md.new_int_var(0, b_max[r], f"b{r}")
        s[r] = md.new_int_var(0, out[r], f"s{r}")
        x[r] = md.new_int_var(0, L[r], f"x{r}")
        sampled = md.new_bool_var(f"sampled{r}")
        md.add(s[r] >= 1).only_enforce_if(sampled)
        md.add(s[r] == 0).only_enforce_if(~sampled)
        md.add(x[r] == P[r] - 1 + s[r]).only_enforce_if(sampled)
        md.add(x[r] <= P[r] - 1).only_enforce_if(~sampled)
        md.add(s[r] <= b[r])
        md.add(x[r] >= b[r])
        md.add(x[r] <= bud * b[r])
        first = [sum(P[r] + j - 1 for j in range(1, k + 1)) for k in range(out[r] + 1)]
        reads_before[r] = md.new_int_var(0, first[-1], f"rb{r}")
        md.add_element(s[r], first, reads_before[r])
        reads_w[r] = md.new_int_var(0, first[-1], f"rw{r}")
        md.add_element(s[r], [first[-1] - v for v in first], reads_w[r])
    E = md.new_int_var(h, max(h, upper + int(a.min())), "E")
    # W: the steps starting at or after h
    steps_w = [out[r] - s[r] for r in range(n)]
    n_w = md.new_int_var(0, big, "steps_w")
    for r in range(n):
        md.add(n_w >= steps_w[r])
    tokens_w = sum(L[r] - x[r] for r in range(n))
    md.add(n_w * bud >= tokens_w)
    seqs_w, kv_w = md.new_int_var(0, big, "seqs_w"), md.new_int_var(0, big, "kv_w")
    md.add(seqs_w >= sum(steps_w))
    md.add(seqs_w >= n_w)
    md.add(kv_w >= sum(reads_w.values()))
    md.add(kv_w >= n_w)
    samples_w = sum(steps_w)
    w_time = md.new_int_var(0, Q * big, "w_time")
    for A, B, G, D, S in pieces:
        md.add(w_time >= A * n_w + B * tokens_w + G * seqs_w + D * kv_w + S * samples_w)
    # the steps starting in [a_r, h), for each arrival a_r before h
    for v in sorted({int(a[r]) for r in before}):
        count = md.new_int_var(0, big, f"count{v}")
        tok, seqs, smp, kv = [], [], [], []
        for q in before:
            if a[q] >= v:
                md.add(count >= b[q])
                tok.append(x[q])
                seqs.append(b[q])
                smp.append(s[q])
                kv.append(reads_before[q] + b[q] - s[q])
                continue
            c = -(-(v - int(a[q])) // m)  # q's steps that can start before v
            if b_max[q] <= c:
                continue
            w = md.new_int_var(0, b_max[q], f"w{q}_{v}")  # q's steps in [v, h)
            md.add(w >= b[q] - c)
            md.add(count >= w)
            ws = md.new_int_var(0, out[q], f"ws{q}_{v}")  # the sampling ones
            md.add_min_equality(ws, [w, s[q]])
            tok.append(w)
            seqs.append(w)
            smp.append(ws)
            kv.append(P[q] * ws + w - ws)
        T, N, K = (md.new_int_var(0, big, f"{c}{v}") for c in "TNK")
        for var, terms in ((T, tok), (N, seqs), (K, kv)):
            md.add(var >= sum(terms))
            md.add(var >= count)
        for A, B, G, D, S in pieces:
            md.add(Q * (E - v) >= A * count + B * T + G * N + D * K + S * sum(smp))
    md.minimize(Q * E + w_time)
    return md


def makespan_windows(inst: ScheduleInstance, ienv: IntEnvelope, seconds: float, upper: int,
                     num_workers: int = 2, seed: int = 0) -> int:
    """A lower bound on the model's makespan without preemption (last finish - first
    arrival, ticks), at most ``upper``: the best over arrivals of the model above,
    the arrivals with the highest ``makespan_floors`` first, each given half the time left
    (0 if none was solved in time)."""
    a_min = int(ienv.ticks(inst.arrival_s).min())
    floors = makespan_floors(inst, ienv)
    deadline = time.perf_counter() + seconds
    best = 0
    for h in sorted(floors, key=lambda v: (-floors[v], v)):
        left = deadline - time.perf_counter()
        if left <= 0.05 or best >= upper:
            break
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = left / 2
        solver.parameters.num_workers = num_workers
        solver.parameters.random_seed = seed
        status = solver.solve(_window_model(inst, ienv, h, upper))
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            value = math.ceil(solver.best_objective_bound / ienv.q - 1e-9) - a_min
            best = max(best, value)
    return min(best, upper)
