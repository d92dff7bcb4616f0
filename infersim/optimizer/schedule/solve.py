"""Solve the schedule model: horizon, warm start, time limit, workers, and the result."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from infersim.errors import SolverError
from infersim.optimizer.schedule.arrivals import latency_floor, makespan_floor
from infersim.optimizer.schedule.early_steps import early_steps_latency
from infersim.optimizer.schedule.evaluate import ScheduleTrace, run_schedule
from infersim.optimizer.schedule.greedy import greedy_schedules, search_holds, search_orders
from infersim.optimizer.schedule.instance import OBJECTIVES, ScheduleInstance
from infersim.optimizer.schedule.linearize import StepEnvelope
from infersim.optimizer.schedule.model import (
    MICROSECOND,
    IntEnvelope,
    ScheduleModel,
    busy_floor,
    int_trace,
    sampling_step_bounds,
)
from infersim.optimizer.schedule.patterns import PatternRelaxation, best_piece, pattern_count
from infersim.optimizer.schedule.prefix import makespan_prefix
from infersim.optimizer.schedule.request_steps import fewest_request_steps
from infersim.optimizer.schedule.result import SolveResult, relative_gap
from infersim.optimizer.schedule.trajectory import TrajectoryRelaxation
from infersim.optimizer.schedule.uncapped import uncapped_latency, uncapped_schedule
from infersim.simulator.schedulers.fixed import FixedStep, as_steps

PREFIX_SOURCE = "steps before an arrival"
EARLY_SOURCE = "first steps exactly"
EARLY_GAP = 0.02  # the relaxation without limits this near the incumbent: the tree's full share
# the fewest request-steps' proof took 22-64 s on the 30-request burst of the targets: a
# shorter share ends before it and takes the branching's time
REQUEST_STEPS_MIN_S = 30.0
PATTERN_SOURCE = "patterns"
# the pattern relaxation (HiGHS) replaces the trajectory relaxation on instances of at most
# this many patterns (the 30-request burst of the targets has 1,308; the 100-request one
# 4,486, where HiGHS left a 23-26% gap in 300 s against 7% for the trajectory relaxation)
MAX_PATTERNS = 2_500
STATUS = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE",
          cp_model.INFEASIBLE: "INFEASIBLE", cp_model.UNKNOWN: "UNKNOWN",
          cp_model.MODEL_INVALID: "MODEL_INVALID"}


@dataclass
class ScheduleSolution:
    """A solve's result, its best complete schedule, and that schedule run under the
    envelope (float seconds): ``trace.objective`` is the optimum recomputed with the
    linearised durations."""

    result: SolveResult
    schedule: list[FixedStep]
    trace: ScheduleTrace
    envelope: StepEnvelope
    progress: list[tuple[float, float, float]]  # (wall s, incumbent, bound) as reported


def model_envelope(inst: ScheduleInstance, envelope: StepEnvelope, objective: str
                   ) -> IntEnvelope:
    """``envelope`` in the model's integer ticks for ``objective``: microseconds, but tenths
    of one for the makespan with arrivals spread in time. The model rounds each step up to a
    tick, and that makespan's bound (``prefix.makespan_prefix``) rounds W once, so whole
    microseconds can leave more than the 0.01% gap limit between them; finer ticks slow the
    search for the other objectives and gain nothing there."""
    spread = inst.n > 0 and float(inst.arrival_s.max()) > float(inst.arrival_s.min())
    fine = objective == "makespan" and spread
    return IntEnvelope.of(envelope, 10 * MICROSECOND if fine else MICROSECOND)


def serial_schedule(inst: ScheduleInstance) -> list[FixedStep]:
    """The simplest feasible schedule: requests one at a time in arrival order, prompts in
    budget-sized chunks, then one decode per step."""
    steps = []
    bud = inst.max_num_batched_tokens
    for r in range(inst.n):
        left = int(inst.prompt[r])
        while left > 0:
            q = min(bud, left)
            steps.append(FixedStep(((r, q),)))
            left -= q
        steps.extend(FixedStep(((r, 1),)) for _ in range(int(inst.output[r]) - 1))
    return steps


def best_start(inst: ScheduleInstance, ienv: IntEnvelope, objective: str,
               candidates: Sequence[tuple[str, Sequence]], preemption: bool = True
               ) -> tuple[str, list[FixedStep]]:
    """The best of ``candidates`` (name, schedule), the greedy schedules and the serial one
    by the model's objective; candidates the model cannot run are skipped (with
    ``preemption`` false, those that preempt)."""
    pool = [*candidates, *greedy_schedules(inst, ienv.duration, ienv.ticks(inst.arrival_s)),
            ("serial", serial_schedule(inst))]
    best = None
    for name, schedule in pool:
        try:
            tr = int_trace(inst, ienv, schedule)
        except SolverError:
            continue  # e.g. swap preemption or padding: not a schedule of the model
        if tr.preemptions and not preemption:
            continue
        value = _model_value(tr, objective, inst, ienv)
        if best is None or value < best[0]:
            best = (value, name, list(as_steps(schedule)))
    return best[1], best[2]


def _groups_bound(inst: ScheduleInstance, envelope: StepEnvelope, ienv: IntEnvelope,
                  preemption: bool, seconds: float, size: int, num_workers: int, seed: int
                  ) -> tuple[int, float]:
    """A lower bound on the model's latency objective: the requests in arrival order cut
    into groups of about ``size``, each solved alone within its share of ``seconds`` (what
    one leaves goes to the next), their bounds (at least their floors) summed. Any schedule
    of all the requests, restricted to a group (the others' tokens and steps removed), is a
    schedule of the group in which no step starts later, so the group's latency there is
    at least the group's optimum. Returns (bound, solver seconds)."""
    order = np.argsort(inst.arrival_s, kind="stable")
    parts = np.array_split(order, -(-inst.n // size))
    end = time.perf_counter() + seconds
    total, spent = 0, 0.0
    for i, idx in enumerate(parts):
        sub = dataclasses.replace(inst, arrival_s=inst.arrival_s[idx], prompt=inst.prompt[idx],
                                  output=inst.output[idx])
        floor = latency_floor(sub, ienv)
        left = (end - time.perf_counter()) / (len(parts) - i)
        res = None
        if left > 0.1:
            res = solve_schedule(sub, envelope, "latency", preemption=preemption,
                                 time_limit_s=left, num_workers=num_workers, seed=seed,
                                 group_size=0).result
            spent += res.solve_time_s
        if res is not None and math.isfinite(res.bound):
            # back to the model's integer ticks (which the group's optimum is in)
            a = ienv.ticks(sub.arrival_s)
            value = (res.bound + float(sub.arrival_s.sum())) * ienv.per_s - float(a.sum())
            floor = max(floor, math.floor(value + 1e-3))
        total += floor
    return total, spent


def to_report_units(inst: ScheduleInstance, ienv: IntEnvelope, objective: str,
                    value: float) -> float:
    """A model objective (integer ticks, offsets included) in reported units."""
    a = ienv.ticks(inst.arrival_s)
    if objective == "latency":
        return (value + float(a.sum())) / ienv.per_s - float(inst.arrival_s.sum())
    if objective == "makespan":
        return (value + float(a.min())) / ienv.per_s - float(inst.arrival_s.min())
    if objective == "cost":
        return value / ienv.per_s * inst.devices
    return float(value)


def _model_value(tr: ScheduleTrace, objective: str, inst: ScheduleInstance,
                 ienv: IntEnvelope) -> int:
    """The model's objective of a complete integer trace."""
    if objective == "slo":
        return int(tr.objective("slo", inst.slo_ms, ienv.per_s / 1000))
    if objective == "cost":
        return int(tr.duration.sum())
    return round(tr.objective(objective))


class _Progress(cp_model.CpSolverSolutionCallback):
    """Keeps the best complete schedule; stops the search when one would shorten the horizon
    enough to rebuild the model around it (objective <= ``shrink_at``)."""

    def __init__(self, sm: ScheduleModel, shrink_at: float) -> None:
        super().__init__()
        self.sm = sm
        self.shrink_at = shrink_at
        self.shrink = False
        self.best: float = math.inf
        self.best_steps: list[FixedStep] | None = None
        self.log: list[tuple[float, float, float]] = []
        self.count = 0

    def on_solution_callback(self) -> None:
        self.count += 1
        obj = self.objective_value
        self.log.append((self.wall_time, obj, self.best_objective_bound))
        if obj < self.best and self.sm.complete(self.value):
            self.best = obj
            self.best_steps = self.sm.extract(self.value)
            if obj <= self.shrink_at:
                self.shrink = True
                self.stop_search()


def needed_steps(inst: ScheduleInstance, ienv: IntEnvelope, objective: str, upper: int,
                 arrival) -> float:
    """At most how many non-empty steps a schedule whose model objective is <= ``upper``
    can have (each lasts at least ``ienv.min_step``); inf when nothing bounds it (slo)."""
    a0 = ienv.min_step
    if a0 < 1 or objective == "slo":
        return math.inf
    if objective in ("cost", "makespan"):
        return float(upper // a0)
    # latency: requests' [arrival, finish] intervals cover every non-empty step, so the steps
    # fit in the latency sum; and all of them end by the latest any request can finish
    first = -(-inst.prompt // inst.max_num_batched_tokens)
    own = a0 * (first + inst.output - 1)  # the model's per-request lower bound
    latest = arrival + upper - (own.sum() - own)  # finish of r if all others are at their bound
    return float(min(upper, int(latest.max()) - int(arrival.min())) // a0)


def solve_schedule(inst: ScheduleInstance, envelope: StepEnvelope, objective: str = "latency",
                   *, preemption: bool = False, warm_start: Sequence | None = None,
                   warm_start_name: str | None = None, time_limit_s: float = 60.0,
                   num_workers: int = 2, seed: int = 0, max_horizon: int | None = None,
                   kv_granularity: str = "block", gap_limit: float = 1e-4,
                   max_request_steps: int = 100_000, log: bool = False,
                   order_evals: int = 1000, relax_share: float = 0.2, steps_share: float = 0.3,
                   lns_share: float = 0.3, trajectory_share: float = 0.7,
                   group_size: int = 6, groups_share: float = 0.3,
                   uncapped_share: float = 0.1, prefix_share: float = 0.5,
                   early_share: float = 0.5, request_steps_share: float = 0.25,
                   patterns_share: float = 0.95) -> ScheduleSolution:
    """Minimise ``objective`` (latency | makespan | cost | slo) over all schedules of
    ``inst`` under ``envelope``.

    ``warm_start`` (a complete schedule; default: the best greedy one) hints the solver and
    caps the objective; ``order_evals`` request orders of serial schedule generation may
    replace it. The horizon is the number of steps a better schedule can have (objective cap
    / shortest step), at most ``max_horizon`` (default 3 x the warm start's steps + 10; for
    latency, a third more than its steps); when it is cut, a relaxed tail keeps the bound
    valid. Large instances first solve the model without the KV limit (``relax_share`` of
    the time; its bound is one here) and run LNS alone (``lns_share``); small ones run LNS
    alone (cost, makespan) and then two bound-search workers. When a better schedule
    shortens the horizon a lot, the model is rebuilt around it for the remaining time (the
    reported bound is the best of the phases, each valid). The latency of a burst without
    preemption first gets, where it has at most ``MAX_PATTERNS`` patterns, the pattern
    relaxation (``patterns.PatternRelaxation``, for ``patterns_share`` of the time, from the
    best start: its bound holds, its solutions that keep the engine's rules are candidate
    incumbents), and otherwise the trajectory relaxation (``trajectory_share`` of
    the time; on
    small instances, after its integer master, the fewest request-steps
    (``request_steps.fewest_request_steps``, ``request_steps_share`` more, taken from the
    CP-SAT phase, when that is at least ``REQUEST_STEPS_MIN_S``) become a row of its
    master): its column-generation bound, raised by branching on the unfinished counts, is
    a lower limit on the model's objective, and the schedules of its integer master are
    candidate incumbents. With arrivals spread in time
    the latency bound is at least the arrival-wait floor (``arrivals.latency_floor``), at
    least the optimum of the relaxation without the engine's limits
    (``uncapped.uncapped_latency``; half of ``uncapped_share`` of the time, the other half
    to the same search with whole prompts, ``uncapped_schedule``, a warm start), at least
    the branch and bound that fixes the first steps and relaxes the rest that way
    (``early_steps.early_steps_latency``, where that relaxation is proven: up to
    ``early_share`` of the time if it is within ``EARLY_GAP`` of the incumbent, a fifth of
    that otherwise; its schedules are candidate incumbents, and where it closes the gap
    nothing else runs) and at least the sum of the optima (bounds) of groups of
    ``group_size`` requests in arrival order, each solved alone (``groups_share`` of the
    time). The makespan with
    arrivals spread in time is at least the work left after an arrival
    (``arrivals.makespan_floor``) and, without preemption, at least the least over k of
    the model of the k steps that start before an arrival with the work after it summed
    (``prefix.makespan_prefix``, ``prefix_share`` of the time; its models' optima,
    completed, are candidate incumbents; LNS then searches for schedules for the rest).
    The makespan of a burst is solved as its busy time (the engine never needs to idle).
    ``gap_limit``: stop and call the incumbent optimal once (incumbent - bound) /
    incumbent is below it (default 0.01%). The model rounds each step up to a tick
    (``model_envelope``), which bounds that round once do not see.
    Multi-worker CP-SAT is not bit-deterministic when the time limit stops it: the same
    seed can give a different incumbent and bound. docs/optimizer.md has the details."""
    if objective not in OBJECTIVES:
        raise SolverError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
    if time_limit_s <= 0 or num_workers < 1:
        raise SolverError("time limit must be > 0 and num_workers >= 1")
    if objective == "slo" and not inst.slo_ms:
        raise SolverError("objective slo needs limits: set slo.ttft_ms, slo.tpot_ms or "
                          "slo.e2el_ms in the config")
    started = time.perf_counter()
    # with every request queued at once the engine never needs to idle, so the makespan of
    # the best schedule is its busy time: solve the smaller untimed cost model (same values)
    burst = inst.n > 0 and float(inst.arrival_s.min()) == float(inst.arrival_s.max())
    report_objective = objective
    if objective == "makespan" and burst:
        objective = "cost"
    ienv = model_envelope(inst, envelope, report_objective)
    arrival = ienv.ticks(inst.arrival_s)
    if warm_start is None:
        warm_start_name, warm_start = best_start(inst, ienv, objective, [], preemption)
    warm = list(as_steps(warm_start))
    hint_trace = int_trace(inst, ienv, warm)
    if hint_trace.preemptions and not preemption:
        raise SolverError("the warm start preempts requests but preemption is off: give a "
                          "schedule without preemption")
    upper = _model_value(hint_trace, objective, inst, ienv)
    # more warm starts: serial schedule generation over searched request orders (a fixed
    # number of orders, so deterministic unless a tenth of the time limit runs out first)
    if order_evals > 0:
        def value(schedule) -> int:
            return _model_value(int_trace(inst, ienv, schedule), objective, inst, ienv)

        timing = (ienv.duration, arrival) if objective != "cost" else (None, None)
        v, sched, name = search_orders(inst, value, 0.1 * time_limit_s, seed, *timing,
                                       max_evals=order_evals)
        if v < upper:
            warm, warm_start_name = list(as_steps(sched)), name
            hint_trace = int_trace(inst, ienv, warm)
            upper = v
        # with arrivals spread in time, idling for an arrival can pay (greedy schedules
        # that wait before some steps, searched like the orders)
        if not burst and objective != "cost":
            v, sched, name = search_holds(inst, value, 0.05 * time_limit_s, seed, ienv.duration,
                                          arrival, max_evals=order_evals)
            if v < upper:
                warm, warm_start_name = list(as_steps(sched)), name
                hint_trace = int_trace(inst, ienv, warm)
                upper = v
    # latency with arrivals: every request in every step from its arrival to its end, idling
    # where that pays without the engine's limits, if it keeps within them
    if objective == "latency" and not burst and uncapped_share > 0:
        sched = uncapped_schedule(inst, ienv, uncapped_share / 2 * time_limit_s)
        if sched is not None:
            with contextlib.suppress(SolverError):  # it breaks the budget or the cache
                tr = int_trace(inst, ienv, sched)
                if (v := _model_value(tr, objective, inst, ienv)) < upper:
                    warm, warm_start_name, hint_trace, upper = (
                        sched, "every request every step, idling searched", tr, v)
    first_upper = upper
    n_hint = hint_trace.num_steps
    # latency: a horizon a third beyond the warm start's steps (the relaxed tail keeps the
    # bound valid; a longer one weakens the LP relaxation more than it helps)
    default_limit = n_hint + max(4, n_hint // 3) if objective == "latency" else 3 * n_hint + 10
    limit = max_horizon if max_horizon is not None else default_limit
    if limit < n_hint:
        raise SolverError(f"max_horizon {limit} is shorter than the warm start ({n_hint} steps)")
    best_steps, best = warm, float(upper)
    bound = -math.inf
    status, solve_time, solutions = "UNKNOWN", 0.0, 0
    steps, tail, size = 0, False, {}
    deadline = started + time_limit_s
    phases = 0
    lower = None
    bound_source = None
    progress_log: list = []

    def horizon(upper: int, n_hint: int) -> tuple[int, bool]:
        needed = needed_steps(inst, ienv, objective, upper, arrival)
        steps = int(max(min(needed, limit), n_hint, 1))
        if inst.n * steps > max_request_steps:
            raise SolverError(
                f"the model would have {inst.n} requests x {steps} steps = "
                f"{inst.n * steps:,} request-steps (limit {max_request_steps:,}): use fewer "
                "requests (--requests) or shorter outputs, or raise max_request_steps")
        return steps, steps < needed

    def run(sm: ScheduleModel, seconds: float, shrink_at: float = -math.inf,
            lns_only: bool = False, gap: float = gap_limit, first: bool = False,
            relaxed: bool = False):
        """Solve ``sm``; ``first``: stop at its first schedule (a model of fewer steps: its
        bound holds for it alone), ``relaxed``: its schedules are not the instance's (its
        bound holds). The progress log keeps what holds for the instance."""
        solver = cp_model.CpSolver()
        prm = solver.parameters
        prm.max_time_in_seconds = float(seconds)
        prm.num_workers = int(num_workers)
        prm.random_seed = int(seed)
        prm.log_search_progress = bool(log)
        prm.relative_gap_limit = float(gap)
        prm.stop_after_first_solution = first
        if lns_only:
            prm.use_lns_only = True
        elif bound_search and not first:
            prm.subsolvers.extend(["lb_tree_search" if objective == "latency"
                                   else "objective_lb_search", "max_lp"])
        nonlocal solve_time, solutions
        cb = _Progress(sm, shrink_at)
        code = solver.solve(sm.model, cb)
        solve_time += solver.wall_time
        solutions += cb.count
        offset = time.perf_counter() - started - solver.wall_time
        progress_log.extend((offset + w, best if relaxed else o, bound if first else b)
                            for w, o, b in cb.log)
        status = STATUS.get(code, "UNKNOWN")
        if status == "MODEL_INVALID":
            raise SolverError(f"the schedule model is invalid: {sm.model.validate()}")
        return solver, cb, status

    def take_bound(solver: cp_model.CpSolver, status: str) -> None:
        """Take a phase's bound (its model capped at ``upper``) when it beats the bound."""
        nonlocal bound, bound_source
        if status in ("OPTIMAL", "FEASIBLE") and solver.best_objective_bound > bound:
            bound = min(solver.best_objective_bound, upper)
            bound_source = "CP-SAT"

    def adopt(schedule: list[FixedStep] | None, value: float) -> None:
        """Take a phase's best complete schedule (the model's objective ``value``) when it
        beats the incumbent."""
        nonlocal best_steps, best, upper, hint_trace, n_hint
        if schedule is not None and value < best:
            best_steps, best, upper = schedule, float(value), int(value)
            hint_trace = int_trace(inst, ienv, best_steps)
            n_hint = hint_trace.num_steps

    # 0. latency of a burst without preemption: on small instances the pattern relaxation (a
    # MIP: its bound, and its solutions that are schedules); on larger ones the trajectory
    # relaxation's bound and the schedules of its integer master (on mid-sized ones the
    # fewest request-steps, proven after the integer master, are a row of its master)
    patterns = (objective == "latency" and burst and not preemption and patterns_share > 0
                and pattern_count(inst, n_hint + 1) <= MAX_PATTERNS)
    if patterns:
        left = deadline - time.perf_counter()
        rel = PatternRelaxation(inst, ienv, n_hint + 1, kv_granularity,
                                best_piece(inst, ienv, best_steps))
        found = rel.solve(best_steps, min(patterns_share * time_limit_s, left), gap_limit, seed)
        solve_time += found.seconds
        adopt(found.schedule, found.value)
        if min(found.bound, upper) > bound:
            bound, bound_source = min(found.bound, upper), PATTERN_SOURCE
            lower = bound
        progress_log.append((time.perf_counter() - started, best, bound))
        if relative_gap(best, bound) <= gap_limit:
            deadline = time.perf_counter()  # proven: nothing left for CP-SAT
    elif objective == "latency" and burst and not preemption and trajectory_share > 0:
        t_steps = n_hint + max(5, n_hint // 2)
        rel = TrajectoryRelaxation(inst, ienv, t_steps, kv_granularity)
        share = trajectory_share
        count = None
        if (request_steps_share * time_limit_s >= REQUEST_STEPS_MIN_S
                and inst.n * t_steps < 1500):
            share += request_steps_share  # its time comes from the CP-SAT phase after

            def count(schedule: Sequence[FixedStep]) -> int:
                return fewest_request_steps(inst, schedule, t_steps,
                                            request_steps_share * time_limit_s, num_workers,
                                            seed, kv_granularity).bound

        traj = rel.solve(hint_trace, min(share * time_limit_s, deadline - time.perf_counter()),
                         upper, gap_limit, count)
        solve_time += traj.seconds
        if traj.schedule is not None:
            adopt(traj.schedule,
                  _model_value(int_trace(inst, ienv, traj.schedule), objective, inst, ienv))
        lower = min(traj.bound, upper)
        bound = lower
        bound_source = ("trajectory LP" + (", fewest request-steps" if rel.min_request_steps
                                           else "") + (" and branching" if traj.nodes else ""))
        progress_log.append((time.perf_counter() - started, best, bound))
        if relative_gap(best, bound) <= gap_limit:
            deadline = time.perf_counter()  # proven: nothing left for CP-SAT
    # 0'. latency with arrivals spread in time: the waits for first steps plus own times (a
    # bound only: as a limit in the model it would not help CP-SAT, far below the incumbent)
    if objective == "latency" and not burst:
        floor = min(latency_floor(inst, ienv), upper)
        if floor > bound:
            bound, bound_source = floor, "arrival waits"
    # 0'+. the best schedule without the KV cache, budget and sequence cap (a lower limit in
    # the model too: CP-SAT's search starts from it)
    if objective == "latency" and not burst and uncapped_share > 0:
        t0 = time.perf_counter()
        found = uncapped_latency(inst, ienv, uncapped_share / 2 * time_limit_s)
        solve_time += time.perf_counter() - t0
        if found is not None and min(found[0], upper) > bound:
            bound, bound_source = min(found[0], upper), "no engine limits"
            lower = bound
        # the first steps exactly, the rest without the engine's limits (its schedules are
        # the instance's), where that relaxation's optimum is known: its full share when
        # that optimum is near the incumbent, a fifth of it otherwise (further off, the cache
        # or many crowded arrivals are what it misses, and on large instances the tree
        # rarely closes: the time goes to the groups and CP-SAT)
        if early_share > 0 and found is not None and found[1]:
            t0 = time.perf_counter()
            near = relative_gap(upper, found[0]) <= EARLY_GAP
            early = early_steps_latency(inst, ienv, early_share * time_limit_s
                                        / (1 if near else 5), upper)
            solve_time += time.perf_counter() - t0
            if early is not None:
                adopt(early.schedule, early.value)
                if min(early.bound, upper) > bound:
                    bound, bound_source = min(early.bound, upper), EARLY_SOURCE
                    lower = bound
                if relative_gap(best, bound) <= gap_limit:
                    deadline = time.perf_counter()  # the incumbent is proven optimal
    # 0'++. and the groups of requests solved alone: a schedule restricted to a group is one
    # of the group's, no slower, so the groups' bounds add up to a bound
    if (objective == "latency" and not burst and 0 < group_size < inst.n and groups_share > 0
            and deadline > time.perf_counter()):
        grouped, spent = _groups_bound(inst, envelope, ienv, preemption,
                                       groups_share * time_limit_s, group_size, num_workers,
                                       seed)
        solve_time += spent
        grouped = min(grouped, upper)
        if grouped > bound:
            bound, bound_source, lower = grouped, "groups solved alone", grouped
    # 0''. makespan with arrivals spread in time: the work left after an arrival (a bound,
    # and a lower limit in the model, so that CP-SAT's search starts from it)
    if objective == "makespan" and not burst:
        floor = min(makespan_floor(inst, ienv), upper)
        if floor > bound:
            bound, bound_source, lower = floor, "work after arrivals", floor
        # without preemption: the steps before an arrival exactly, the work after it summed
        # (its models' optima, completed, are schedules too)
        if not preemption and prefix_share > 0:
            t0 = time.perf_counter()
            found = makespan_prefix(inst, ienv, prefix_share * time_limit_s, upper,
                                    num_workers, seed, gap_limit)
            solve_time += time.perf_counter() - t0
            adopt(found.schedule, found.value)
            if found.bound > bound:
                bound, bound_source, lower = found.bound, PREFIX_SOURCE, found.bound
            if relative_gap(best, bound) <= gap_limit:
                deadline = time.perf_counter()  # the incumbent is proven optimal
    blocks = int((-(-inst.length // inst.block_size)).sum())
    big = inst.n * horizon(upper, n_hint)[0] >= 1500
    # small instances: after a short LNS phase for the incumbent the bound is the hard part,
    # so both workers search for it (objective lower-bound search and the strongest LP)
    bound_search = not big and objective != "slo" and num_workers == 2
    # 1. a relaxation without the KV-cache limit (same envelope): its bound is a bound here
    if objective in ("cost", "makespan") and blocks > inst.num_blocks and big:
        relaxed = dataclasses.replace(inst, num_blocks=blocks)
        steps, tail = horizon(upper, n_hint)
        sm = ScheduleModel(relaxed, ienv, objective, preemption, steps, tail, upper,
                           kv_granularity)
        sm.hint(hint_trace)
        solver, cb, st = run(sm, relax_share * time_limit_s, gap=5e-3, relaxed=True)
        if st in ("OPTIMAL", "FEASIBLE"):
            lower = max(lower or 0, math.ceil(solver.best_objective_bound - 1e-6))
            if min(lower, upper) > bound:
                bound, bound_source = min(lower, upper), "CP-SAT without the KV limit"
    # 2. fewest steps (cost): when a step's fixed time dominates, the cheapest schedules have
    # the fewest steps; look for one with k < incumbent steps, k down from there while each
    # is found, to a lower bound on the steps (the longest request's chain, the sampling-step
    # bound). Any schedule of k steps (with the incumbent's cost as a cap the first one can
    # take long to find; without it, seconds) starts the LNS below, and a proof that k steps
    # are too few is a bound: the least busy time of k + 1 steps. (The makespan with
    # arrivals waits for them: fewer steps do not make it shorter, and LNS gets the time.
    # With preemption the first k gets a third of the phase: its model can neither find
    # nor refute a schedule in the whole phase, and the bound search needs the time.)
    if objective == "cost" and steps_share > 0:
        k_min = max(int((-(-inst.prompt // inst.max_num_batched_tokens) + inst.output - 1).max()),
                    sampling_step_bounds(inst, kv_granularity)[-1][1])
        phase_end = min(time.perf_counter() + steps_share * time_limit_s, deadline)
        k = first_k = n_hint - 1
        while k >= k_min:
            left = phase_end - time.perf_counter()
            if preemption and k == first_k:
                left = min(left, steps_share * time_limit_s / 3)
            if left <= 0.05:
                break
            sm = ScheduleModel(inst, ienv, objective, preemption, k, False, None, kv_granularity)
            _, found, found_status = run(sm, left, first=True)
            adopt(found.best_steps, found.best)
            if found.best_steps is None:
                k_min = k + 1 if found_status == "INFEASIBLE" else k_min
                break
            k = min(k, n_hint) - 1
        floor = min(busy_floor(inst, ienv, k_min), upper)
        if floor > bound:
            bound, bound_source, lower = floor, "fewest steps", floor
            if relative_gap(best, bound) <= gap_limit:
                deadline = time.perf_counter()  # the incumbent is proven optimal
    # 3. large neighbourhood search alone for a better incumbent, then the full model (all
    # of the time left when the steps before an arrival gave the bound: CP-SAT's own bound
    # search does not come near it)
    lns_time = min((1.0 if bound_source == PREFIX_SOURCE else lns_share)
                   * time_limit_s, deadline - time.perf_counter())
    if (big or (bound_search and objective != "latency")) and lns_time > 0.05:
        steps, tail = horizon(upper, n_hint)
        sm = ScheduleModel(inst, ienv, objective, preemption, steps, tail, upper,
                           kv_granularity, lower=lower)
        sm.hint(hint_trace)
        solver, cb, status = run(sm, lns_time, lns_only=True)
        take_bound(solver, status)
        adopt(cb.best_steps, cb.best)
    while True:
        steps, tail = horizon(upper, n_hint)
        sm = ScheduleModel(inst, ienv, objective, preemption, steps, tail, upper,
                           kv_granularity, lower=lower)
        sm.hint(hint_trace)
        size = sm.size
        left = deadline - time.perf_counter()
        if left <= 0.05:
            break
        # a schedule good enough to shorten the horizon by 15% stops the search (at most
        # three times) and the model is rebuilt around it
        shrink_at = -math.inf
        if phases < 3 and objective != "slo" and left > 0.2 * time_limit_s:
            lo, hi = 0, upper  # the largest objective whose horizon is 15% shorter
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if needed_steps(inst, ienv, objective, mid, arrival) < 0.85 * steps:
                    lo = mid
                else:
                    hi = mid - 1
            shrink_at = lo if needed_steps(inst, ienv, objective, lo, arrival) < 0.85 * steps \
                else -math.inf
        solver, cb, status = run(sm, left, shrink_at)
        phases += 1
        if status == "INFEASIBLE":
            raise SolverError("the schedule model is infeasible although the warm start ran "
                              "(a bug; please report it with the instance)")
        take_bound(solver, status)
        adopt(cb.best_steps, cb.best)
        if not cb.shrink or deadline - time.perf_counter() < 1.0:
            break
    bound = min(bound, best)
    inc = to_report_units(inst, ienv, report_objective, best)
    bnd = (to_report_units(inst, ienv, report_objective, bound) if math.isfinite(bound)
           else -math.inf)
    gap = relative_gap(inc, bnd)
    status = ("OPTIMAL" if gap <= gap_limit else
              "FEASIBLE" if math.isfinite(bnd) else "UNKNOWN")
    result = SolveResult(
        objective=report_objective, status=status, incumbent=inc, bound=bnd, gap=gap,
        solve_time_s=solve_time, wall_time_s=time.perf_counter() - started,
        num_workers=int(num_workers), seed=int(seed), time_limit_s=float(time_limit_s),
        preemption=preemption, horizon=steps, tail=tail, warm_start=warm_start_name,
        warm_start_value=to_report_units(inst, ienv, report_objective, first_upper),
        solutions=solutions, model_size=size, bound_source=bound_source)
    trace = run_schedule(inst, best_steps, envelope.seconds)
    progress = [(w, to_report_units(inst, ienv, report_objective, o),
                 to_report_units(inst, ienv, report_objective, b) if math.isfinite(b)
                 else -math.inf) for w, o, b in progress_log]
    return ScheduleSolution(result, best_steps, trace, envelope, progress)
