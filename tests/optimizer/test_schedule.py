"""The CP-SAT schedule optimizer on tiny instances: valid bounds, known optima, replays."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from infersim.cli import app
from infersim.costmodels import BatchShape, CostModel, Placement
from infersim.errors import ConfigError, SolverError
from infersim.hardware import get_device
from infersim.models import get_model
from infersim.optimizer.schedule import (
    LinearizedCost,
    ScheduleInstance,
    ShapeRange,
    fit_envelope,
    optimize_schedule,
    run_schedule,
    serial_schedule,
    solve_schedule,
)
from infersim.optimizer.schedule.model import IntEnvelope, int_trace
from infersim.simulator import SimConfig
from infersim.simulator.schedulers.fixed import FixedStep

runner = CliRunner()


@pytest.fixture(scope="module")
def cost() -> CostModel:
    return CostModel(get_model("llama-3.2-1b"), Placement(get_device("h100-sxm")))


def instance(arrival, prompt, output, budget=64, seqs=8, blocks=12, bs=4, slo=()):
    return ScheduleInstance(np.asarray(arrival, float), np.asarray(prompt), np.asarray(output),
                            budget, seqs, blocks, bs, 1, slo)


def envelope_for(cost, inst, samples=400):
    L = inst.length
    r = ShapeRange(int(min(inst.max_num_batched_tokens, L.sum())),
                   int(min(inst.max_num_seqs, inst.n)), int(L.max()),
                   int(min(inst.capacity_tokens, L.sum())))
    return fit_envelope(cost, r, samples=samples, seed=0)


def tiny_config(**scheduler) -> SimConfig:
    sched = {"num_gpu_blocks": 10, "block_size": 4, "max_num_batched_tokens": 32,
             "max_num_seqs": 4, "enable_prefix_caching": False, **scheduler}
    return SimConfig.from_dict({
        "model": "llama-3.2-1b", "scheduler": sched,
        "workload": {"arrival": {"process": "poisson", "rate": 400},
                     "prompt": {"dist": "uniform", "low": 4, "high": 20},
                     "output": {"dist": "uniform", "low": 1, "high": 5}, "num_requests": 20},
        "slo": {"ttft_ms": 20, "tpot_ms": 3}})


# --- the envelope --------------------------------------------------------------------------------
def test_envelope_stays_below_the_cost_model_and_is_close(cost):
    env = fit_envelope(cost, ShapeRange(512, 16, 600, 4000), samples=600)
    assert env.fit.holdout_violations == 0
    assert env.fit.mean_rel_error < 0.1
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 16))
        q = rng.integers(1, 512 // n + 1, n)
        k = rng.integers(0, 100, n)
        shape = BatchShape.from_sequences(q, k)
        assert env.step_time(shape) <= cost.step_time(shape) * (1 + 1e-9)
    lin = LinearizedCost(cost, env)
    assert lin.step_time(BatchShape()) == 0.0
    runs = lin.step_time(BatchShape(decode_seqs=3, decode_context=np.array([10, 20]),
                                    sampled=3))
    assert runs.shape == (2,) and runs[1] > runs[0]


def test_integer_durations_never_exceed_the_envelope(cost):
    inst = instance([0, 0], [10, 20], [3, 2])
    env = envelope_for(cost, inst)
    for per_s in (10**6, 10**7):
        ienv = IntEnvelope.of(env, per_s)
        for t, n, k, s in itertools.product((1, 7, 40), (1, 2), (1, 30), (0, 1)):
            d = ienv.duration(t, n, k, s)
            assert env.seconds(t, n, k, s) * per_s - 1.5 <= d <= env.seconds(t, n, k, s) * per_s
        assert ienv.min_step >= 1
        assert ienv.ticks([0.5, 1e-6]).tolist() == [per_s // 2, per_s // 10**6]


# --- semantics -----------------------------------------------------------------------------------
def test_run_schedule_follows_the_engine_rules():
    inst = instance([0.0, 0.5], [8, 4], [3, 1], budget=16, blocks=4, bs=4)
    unit = run_schedule(inst, [[(0, 8)], [(0, 1)], [(0, 1), (1, 4)]], lambda *f: 1.0)
    assert unit.start.tolist() == [0.0, 1.0, 2.0]
    assert unit.finish.tolist() == [3.0, 3.0] and unit.first_token.tolist() == [1.0, 3.0]
    assert unit.objective("latency") == pytest.approx(3.0 + 2.5)
    with pytest.raises(SolverError, match="max_num_batched_tokens"):
        run_schedule(instance([0, 0], [8, 4], [3, 1], budget=10), [[(0, 8), (1, 4)]],
                     lambda *f: 1.0)
    with pytest.raises(SolverError, match="KV blocks"):
        run_schedule(instance([0, 0], [8, 9], [3, 1], blocks=4), [[(0, 8), (1, 9)]],
                     lambda *f: 1.0)
    with pytest.raises(SolverError, match="unfinished"):
        run_schedule(inst, [[(0, 8)]], lambda *f: 1.0)


def test_too_large_requests_and_missing_slos_are_clear_errors(cost):
    with pytest.raises(SolverError, match="request 1 needs 60 tokens"):
        instance([0, 0], [4, 50], [2, 10], blocks=10, bs=4)
    inst = instance([0, 0], [4, 5], [2, 3])
    env = envelope_for(cost, inst)
    with pytest.raises(SolverError, match="slo"):
        solve_schedule(inst, env, "slo", time_limit_s=1)
    with pytest.raises(SolverError, match="unknown objective"):
        solve_schedule(inst, env, "throughput", time_limit_s=1)


# --- optima --------------------------------------------------------------------------------------
def test_one_request_alone_is_served_as_fast_as_it_can_be(cost):
    inst = instance([0.1], [40], [4], budget=64)
    env = envelope_for(cost, inst)
    sol = solve_schedule(inst, env, "latency", time_limit_s=10)
    assert sol.result.status == "OPTIMAL"
    alone = run_schedule(inst, serial_schedule(inst), env.seconds).objective("latency")
    assert sol.result.incumbent == pytest.approx(alone, rel=1e-3)
    assert sol.result.bound <= alone + 1e-9


def _all_orders_serial(inst):
    """Requests one at a time in every order: a brute-force family of schedules."""
    out = []
    for order in itertools.permutations(range(inst.n)):
        steps = []
        for r in order:
            steps.append(FixedStep(((r, int(inst.prompt[r])),)))
            steps += [FixedStep(((r, 1),))] * (int(inst.output[r]) - 1)
        out.append(steps)
    return out


def test_with_room_for_one_request_the_optimum_is_the_best_order(cost):
    # one block of 16 tokens: a request holding any KV fills the cache, so every schedule
    # serves them one by one, each prompt best in one chunk; the best order (brute force) is
    # the optimum
    inst = instance([0, 0, 0], [12, 4, 8], [2, 5, 3], budget=16, blocks=1, bs=16)
    env = envelope_for(cost, inst)
    ienv = IntEnvelope.of(env)
    for objective in ("latency", "cost"):
        best = min(int_trace(inst, ienv, s).objective(objective)
                   for s in _all_orders_serial(inst))
        sol = solve_schedule(inst, env, objective, time_limit_s=20)
        assert sol.result.status == "OPTIMAL"
        got = int_trace(inst, ienv, sol.schedule).objective(objective)
        assert got == pytest.approx(best, rel=2e-4)


def test_bound_is_below_every_heuristic_and_preemption_never_hurts(cost):
    cfg = tiny_config()
    off = optimize_schedule(cfg, 6, "latency", time_limit_s=10, envelope_samples=400)
    on = optimize_schedule(cfg, 6, "latency", preemption=True, time_limit_s=10,
                           envelope_samples=400)
    for report in (off, on):
        res = report.result
        assert res.bound <= res.incumbent + 1e-9
        for run in report.runs:
            if run.error is None:
                assert res.bound <= run.value_linearized * (1 + 1e-6)
                assert res.bound <= run.value * (1 + 1e-6)
        # replaying the optimum reproduces the solver's objective; the cost model is slower
        assert report.replay_error < 0.01
        assert report.optimum >= report.replay_linearized * (1 - 1e-9)
    assert on.result.incumbent <= off.result.incumbent * (1 + 1e-4)
    if off.result.optimal and on.result.optimal:
        assert on.result.bound <= off.result.bound * (1 + 1e-4)


@pytest.mark.parametrize("objective", ["makespan", "cost", "slo"])
def test_every_objective_solves_and_replays(objective):
    report = optimize_schedule(tiny_config(), 5, objective, time_limit_s=10,
                               envelope_samples=400)
    res = report.result
    assert res.status in ("OPTIMAL", "FEASIBLE")
    assert res.bound <= res.incumbent + 1e-9
    assert report.replay_error < 0.01
    table = report.table()
    best = "optimal" if res.optimal else "best found (not proven)"
    assert {best, "bound", "vllm_v1"} <= set(table["scheduler"])
    assert (table["above_bound"].dropna() >= -1e-6).all()


def test_optimizer_rejects_multi_replica_configs():
    cfg = tiny_config().model_copy(update={"replicas": 2})
    with pytest.raises(ConfigError, match="replicas"):
        optimize_schedule(cfg, 3, "latency", time_limit_s=1, envelope_samples=200)


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_prints_json_with_status_bound_and_schedulers(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config().to_yaml())
    result = runner.invoke(app, ["optimize", "schedule", "--config", str(path), "--requests", "4",
                                 "--objective", "makespan", "--time-limit", "5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("status", "incumbent", "bound", "gap", "solve_time_s", "num_workers"):
        assert key in data["result"]
    assert data["replay_error"] < 0.01
    assert any(row["scheduler"] == "vllm_v1" for row in data["schedulers"])
    table = runner.invoke(app, ["optimize", "schedule", "--config", str(path), "-n", "3",
                                "--time-limit", "5"])
    assert table.exit_code == 0, table.output
    assert "bound" in table.stdout and "vllm_v1" in table.stdout


def test_cli_errors_are_one_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from infersim.cli import main; main()",
                          "optimize", "schedule", "--preemption", "maybe"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "--preemption" in out.stderr and "Traceback" not in out.stderr


def test_replay_reports_steps_left_after_everyone_finished(cost):
    from infersim.optimizer.schedule import replay
    from infersim.workloads import RequestTable

    cfg = tiny_config()
    reqs = RequestTable(np.array([0.0]), np.array([6]), np.array([2]))
    ok = replay(cfg, reqs, [FixedStep(((0, 6),)), FixedStep(((0, 1),))], cost)
    assert ok.requests["finished"].all()
    with pytest.raises(SolverError, match="left over"):
        replay(cfg, reqs, [FixedStep(((0, 6),)), FixedStep(((0, 1),)), FixedStep(((0, 1),))],
               cost)
    with pytest.raises(SolverError, match="not among"):
        replay(cfg, reqs, [FixedStep(((3, 6),))], cost)


def test_too_large_a_model_is_refused_with_advice(cost):
    inst = instance([0, 0], [40, 40], [60, 60], budget=64, blocks=20, bs=16)
    env = envelope_for(cost, inst)
    with pytest.raises(SolverError, match="request-steps"):
        solve_schedule(inst, env, "cost", time_limit_s=1, max_request_steps=50)


# --- serial schedule generation, order search and the finish-time cuts --------------------------
def _random_instance(seed, n=6):
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 0.002, n)) * (seed % 2)  # bursts and spread arrivals
    return instance(arrival, rng.integers(3, 30, n), rng.integers(1, 7, n), budget=32, seqs=4,
                    blocks=10, bs=4)


@pytest.mark.parametrize("seed", range(4))
def test_serial_generation_gives_engine_valid_schedules_without_preemption(cost, seed):
    from infersim.optimizer.schedule.greedy import serial_schedule_order

    inst = _random_instance(seed)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    rng = np.random.default_rng(seed)
    for _ in range(5):
        order = rng.permutation(inst.n)
        for timing in ((None, None), (ienv.duration, ienv.ticks(inst.arrival_s))):
            schedule = serial_schedule_order(inst, order, *timing)
            tr = int_trace(inst, ienv, schedule)  # raises on any broken engine rule
            assert tr.preemptions == 0
            assert (tr.finish >= tr.first_token).all()


def test_order_search_never_returns_worse_than_the_named_orders(cost):
    from infersim.optimizer.schedule.greedy import ORDERS, search_orders, serial_schedule_order

    inst = _random_instance(1)
    ienv = IntEnvelope.of(envelope_for(cost, inst))

    def value(schedule):
        return int_trace(inst, ienv, schedule).objective("latency")

    named = min(value(serial_schedule_order(inst, np.argsort(key(inst), kind="stable")))
                for key in ORDERS.values())
    v, schedule, _name = search_orders(inst, value, seconds=5, seed=0, max_evals=200)
    assert v <= named and v == value(schedule)


def _feasible_in_model(inst, ienv, objective, preemption, tr) -> bool:
    """Whether the schedule of integer trace ``tr``, fixed in the model (every cut
    included, no tail), is feasible: a real schedule must always be."""
    from ortools.sat.python import cp_model

    from infersim.optimizer.schedule.model import ScheduleModel

    sm = ScheduleModel(inst, ienv, objective, preemption, tr.num_steps, tail=False)
    sm.hint(tr)
    solver = cp_model.CpSolver()
    solver.parameters.fix_variables_to_their_hinted_value = True
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 10
    return solver.solve(sm.model) in (cp_model.OPTIMAL, cp_model.FEASIBLE)


@pytest.mark.parametrize("objective", ["latency", "makespan", "cost"])
def test_finish_time_cuts_cut_off_no_real_schedule(cost, objective):
    # every schedule the engine can run, fixed in the model with its cuts (finish-time
    # cuts, the sampling-step bound, KV held before the finish), stays feasible

    from infersim.optimizer.schedule.greedy import serial_schedule_order

    for seed in range(3):
        inst = _random_instance(seed)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        rng = np.random.default_rng(seed)
        for _ in range(3):
            schedule = serial_schedule_order(inst, rng.permutation(inst.n), ienv.duration,
                                             ienv.ticks(inst.arrival_s))
            tr = int_trace(inst, ienv, schedule)
            assert _feasible_in_model(inst, ienv, objective, False, tr)


# --- the sampling-step bound --------------------------------------------------------------------
def test_co_sampling_steps_is_the_largest_monotone_matching():
    from infersim.optimizer.schedule.model import co_sampling_steps

    rng = np.random.default_rng(0)
    for _ in range(200):
        a = np.sort(rng.integers(1, 6, rng.integers(1, 9)))
        b = np.sort(rng.integers(1, 6, rng.integers(1, 9)))
        cap = int(rng.integers(2, 10))
        best = np.zeros((len(a) + 1, len(b) + 1), dtype=int)  # longest-common-subsequence DP
        for i, j in itertools.product(range(len(a) - 1, -1, -1), range(len(b) - 1, -1, -1)):
            pair = 1 + best[i + 1, j + 1] if a[i] + b[j] <= cap else 0
            best[i, j] = max(best[i + 1, j], best[i, j + 1], pair)
        assert co_sampling_steps(a, b, cap) == best[0, 0]


def _moves(inst, state, preemption):
    """Every step the engine rules allow from ``state`` (per request: tokens computed,
    tokens generated): each request waits, computes any number of tokens it may, or with
    preemption drops its cache first. Yields (next state, FixedStep)."""
    P, OUT = inst.prompt.tolist(), inst.output.tolist()
    options = []
    for r, (c, g) in enumerate(state):
        if g == OUT[r]:
            options.append([(False, 0)])
            continue
        opts = [(False, x) for x in range(P[r] + g - c + 1)]
        if preemption and c > 0:
            opts += [(True, x) for x in range(P[r] + g + 1)]
        options.append(opts)
    for moves in itertools.product(*options):
        total = sum(x for _, x in moves)
        if not 1 <= total <= inst.max_num_batched_tokens:
            continue
        new, blocks, holding = [], 0, 0
        for r, ((c, g), (drop, x)) in enumerate(zip(state, moves, strict=True)):
            after = (0 if drop else c) + x
            if g < OUT[r] and after > 0:
                holding += 1
                blocks += -(-after // inst.block_size)
            new.append((after, g + (after == P[r] + g)) if g < OUT[r] else (c, g))
        if blocks <= inst.num_blocks and holding <= inst.max_num_seqs:
            yield tuple(new), FixedStep(tuple((r, x) for r, (_, x) in enumerate(moves) if x),
                                        tuple(r for r, (drop, _) in enumerate(moves) if drop))


def _done(inst, state):
    return all(g == o for (_, g), o in zip(state, inst.output.tolist(), strict=True))


def _fewest_steps(inst, preemption):
    """The fewest non-empty steps of any schedule, by breadth-first search over every move
    (``_moves``); (steps, one such schedule)."""
    start = tuple((0, 0) for _ in range(inst.n))
    parent = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for state in frontier:
            for new, step in _moves(inst, state, preemption):
                if new in parent:
                    continue
                parent[new] = (state, step)
                if _done(inst, new):
                    steps = []
                    while parent[new] is not None:
                        new, step = parent[new]
                        steps.append(step)
                    return len(steps), steps[::-1]
                nxt.append(new)
        frontier = nxt
    raise AssertionError("no schedule")


def _random_schedule(inst, rng, preemption):
    """A random engine-valid schedule (random moves, pauses included; restarts when the
    cache deadlocks)."""
    while True:
        state, steps = tuple((0, 0) for _ in range(inst.n)), []
        while not _done(inst, state):
            moves = list(_moves(inst, state, preemption))
            if not moves or len(steps) > 60:
                break
            state, step = moves[rng.integers(len(moves))]
            steps.append(step)
        else:
            return steps


def test_model_cuts_keep_random_schedules_with_pauses_feasible(cost):
    # random walks over the engine's moves pause, chunk and (with preemption) drop requests;
    # fixed in the model with every cut, each such schedule stays feasible


    rng = np.random.default_rng(5)
    for trial in range(6):
        preemption = bool(trial % 2)
        inst = instance([0, 0, 0.0001 * trial], rng.integers(2, 5, 3), rng.integers(2, 4, 3),
                        budget=6, seqs=3, blocks=5, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        tr = int_trace(inst, ienv, _random_schedule(inst, rng, preemption))
        for objective in ("cost", "latency", "makespan"):
            assert _feasible_in_model(inst, ienv, objective, preemption, tr), (trial, objective)


@pytest.mark.parametrize("seed", range(4))
def test_sampling_step_bound_is_valid_and_exact_for_two_requests(cost, seed):
    # two requests that fit alone but not together at their peaks; with recompute in one
    # step the bound (outputs minus co-sampling steps) is the true fewest steps

    from infersim.optimizer.schedule.model import sampling_step_bounds

    rng = np.random.default_rng(seed)
    prompt, output = rng.integers(2, 5, 2), rng.integers(3, 6, 2)
    peak = -(-(prompt + output - 1) // 2)
    inst = instance([0, 0], prompt, output, budget=32, seqs=2, blocks=int(peak.sum()) - 1,
                    bs=2)
    bound = sampling_step_bounds(inst)[-1][1]
    fewest, schedule = _fewest_steps(inst, preemption=True)
    assert bound == fewest
    assert _fewest_steps(inst, preemption=False)[0] >= fewest
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    tr = int_trace(inst, ienv, schedule)  # an engine-valid schedule with the fewest steps
    for objective in ("cost", "latency"):  # fixed in the model with every cut: feasible
        assert _feasible_in_model(inst, ienv, objective, True, tr)


def test_sampling_step_bound_holds_for_three_requests():
    from infersim.optimizer.schedule.model import sampling_step_bounds

    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        inst = instance([0, 0, 0], rng.integers(2, 4, 3), rng.integers(2, 5, 3), budget=8,
                        seqs=3, blocks=5, bs=2)
        bounds = sampling_step_bounds(inst)
        assert bounds[-1][1] <= _fewest_steps(inst, preemption=True)[0]
        assert [b for _, b in bounds] == sorted(b for _, b in bounds)


def test_large_instances_keep_a_valid_bound_through_every_phase(cost):
    # big enough for the relaxation without the KV limit and the LNS phase to run
    rng = np.random.default_rng(3)
    n = 60
    inst = instance(np.zeros(n), rng.integers(8, 40, n), rng.integers(2, 10, n), budget=256,
                    seqs=64, blocks=60, bs=8)
    env = envelope_for(cost, inst)
    ienv = IntEnvelope.of(env)
    sol = solve_schedule(inst, env, "cost", time_limit_s=8)
    res = sol.result
    assert res.bound <= res.incumbent * (1 + 1e-9)
    from infersim.optimizer.schedule.greedy import greedy_schedules

    for _name, schedule in greedy_schedules(inst, ienv.duration, ienv.ticks(inst.arrival_s)):
        tr = int_trace(inst, ienv, schedule)
        assert res.bound <= tr.duration.sum() / 1e6 * (1 + 1e-9)
    assert int_trace(inst, ienv, sol.schedule).duration.sum() / 1e6 == pytest.approx(
        res.incumbent, rel=1e-6)


def test_makespan_of_a_burst_equals_its_smallest_busy_time(cost):
    inst = instance([0.0] * 4, [12, 4, 8, 20], [2, 5, 3, 4], budget=16, blocks=6, bs=8)
    env = envelope_for(cost, inst)
    makespan = solve_schedule(inst, env, "makespan", time_limit_s=20).result
    busy = solve_schedule(inst, env, "cost", time_limit_s=20).result
    assert makespan.objective == "makespan" and makespan.optimal and busy.optimal
    assert makespan.incumbent == pytest.approx(busy.incumbent, rel=2e-4)
    # with spread arrivals the engine may have to idle: the makespan is at least the busy time
    late = instance([0.0, 0.0, 0.05, 0.05], [12, 4, 8, 20], [2, 5, 3, 4], budget=16, blocks=6,
                    bs=8)
    spread = solve_schedule(late, env, "makespan", time_limit_s=20).result
    assert spread.bound >= 0.05


# --- the trajectory relaxation (latency of a burst without preemption) --------------------------
def _best_latency(inst, ienv):
    """The least model latency of any schedule without preemption (exact): a shortest path
    over engine states (``_moves``), a step costing its duration times the requests
    unfinished during it."""
    P, OUT = inst.prompt.tolist(), inst.output.tolist()

    @functools.cache
    def go(state):
        if _done(inst, state):
            return 0
        waiting = sum(g < o for (_, g), o in zip(state, OUT, strict=True))
        best = np.inf
        for new, step in _moves(inst, state, False):
            kv = sum(state[r][0] + x for r, x in step.run)
            smp = sum(state[r][0] + x == P[r] + state[r][1] for r, x in step.run)
            d = ienv.duration(sum(x for _, x in step.run), len(step.run), kv, smp)
            best = min(best, waiting * d + go(new))
        return best

    return go(tuple((0, 0) for _ in range(inst.n)))


def _trajectories(inst, r, steps):
    """Every trajectory of request r over ``steps`` steps (computed tokens after each)."""
    P, L, bud = int(inst.prompt[r]), int(inst.length[r]), inst.max_num_batched_tokens
    out = []

    def walk(prefix, c):
        if len(prefix) == steps:
            out.append(np.array(prefix))
            return
        nxt = [c]
        if c < P:
            nxt += list(range(c + 1, min(P, c + bud) + 1))
        elif c < L:
            nxt.append(c + 1)
        for v in nxt:
            walk([*prefix, v], v)

    walk([], 0)
    return out


def test_pricing_finds_the_cheapest_trajectory(cost):
    from infersim.optimizer.schedule.trajectory import FEATURES, TrajectoryRelaxation, _Columns

    inst = instance([0, 0], [5, 3], [3, 2], budget=3, seqs=2, blocks=4, bs=2)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    steps = 6
    rel = TrajectoryRelaxation(inst, ienv, steps)
    rng = np.random.default_rng(3)
    for _ in range(20):
        w = {f: rng.uniform(0, 50, steps) * rng.integers(0, 2) for f in FEATURES}
        w["unf"] = rng.uniform(0, 50, steps)
        w["left"] = np.array(-rng.uniform(0, 2 * ienv.min_step))  # the request-steps row
        for r in range(inst.n):
            paths = _trajectories(inst, r, steps)
            cols = _Columns(inst, steps, "block", ienv.min_step)
            for path in paths:
                cols.add(r, path)
            a = cols.arrays()
            a["xmy"] = a["x"] - a["y"]
            costs = (a["tail"] + w["left"] * a["left"]
                     + sum((w[f] * a[f]).sum(axis=1) for f in FEATURES))
            value, path = rel.price(r, w)
            assert value == pytest.approx(costs.min(), rel=1e-9, abs=1e-9)
            assert any((p == path).all() for p, c in zip(paths, costs, strict=True)
                       if c == pytest.approx(value, rel=1e-9, abs=1e-9))


def _small_burst(cost, seed):
    """Three queued requests whose cache and budget both bind: (rng, instance, its model
    envelope, its exact least latency)."""
    rng = np.random.default_rng(seed)
    inst = instance([0, 0, 0], rng.integers(2, 6, 3), rng.integers(2, 4, 3), budget=5,
                    seqs=3, blocks=5, bs=2)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    return rng, inst, ienv, _best_latency(inst, ienv)


@pytest.mark.parametrize("seed", range(4))
def test_trajectory_bound_is_below_the_exact_optimum(cost, seed):
    # the exact least latency (shortest path over every engine move) of small bursts whose
    # cache and budget both bind; the bound never exceeds it, also when column generation
    # is stopped after one round, branching brings it within 0.5%, and the integer master's
    # schedule is a real one
    from infersim.optimizer.schedule.trajectory import TrajectoryRelaxation

    rng, inst, ienv, best = _small_burst(cost, seed)
    start = int_trace(inst, ienv, serial_schedule(inst))
    steps = start.num_steps + 3
    full = TrajectoryRelaxation(inst, ienv, steps).solve(start, 20)
    assert full.converged and full.nodes > 0
    assert full.bound <= best
    assert full.bound >= 0.995 * best  # and it is close
    assert full.lp <= full.bound + 1  # the root master's optimum, before branching
    first = TrajectoryRelaxation(inst, ienv, steps).solve(start, 1e-9)
    assert first.iterations == 1 and first.bound <= full.lp
    assert full.schedule is not None
    assert int_trace(inst, ienv, full.schedule).objective("latency") >= best
    # the master never values a real schedule (pauses and chunks included) above its latency
    for _ in range(5):
        tr = int_trace(inst, ienv, _random_schedule(inst, rng, False))
        if tr.num_steps <= steps:
            assert TrajectoryRelaxation(inst, ienv, steps).valuation(tr) <= \
                tr.objective("latency") * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_pattern_bound_is_below_the_exact_optimum(cost, seed):
    # small bursts whose cache and budget both bind: the pattern relaxation's bound never
    # exceeds the exact least latency (shortest path over every engine move) and comes
    # close to it; its schedule is a real one
    from infersim.optimizer.schedule.patterns import PatternRelaxation, best_piece

    _, inst, ienv, best = _small_burst(cost, seed)
    start = serial_schedule(inst)
    steps = int_trace(inst, ienv, start).num_steps + 1
    piece = best_piece(inst, ienv, start)
    found = PatternRelaxation(inst, ienv, steps, piece=piece).solve(start, 20)
    assert found.bound <= best <= found.value
    assert found.value == int_trace(inst, ienv, found.schedule).objective("latency")
    assert found.bound >= 0.995 * best  # and close (0.00-0.15% under it here)


def test_pattern_relaxation_never_values_a_schedule_above_its_latency(cost):
    # random engine-valid schedules, pauses (longer than the patterns' too) and prompt
    # chunks included: under every envelope piece the relaxation's value of each (its
    # patterns fixed, the rest at its least) stays at or below its latency in the model's
    # ticks
    from infersim.optimizer.schedule.patterns import MAX_PAUSE, PatternRelaxation, pattern_count

    rng = np.random.default_rng(3)
    seen = longer = 0
    for trial in range(6):
        inst = instance([0, 0, 0, 0], rng.integers(2, 7, 4), rng.integers(2, 5, 4),
                        budget=6, seqs=4, blocks=6, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        for _ in range(6):
            schedule = _random_schedule(inst, rng, False)
            latency = int_trace(inst, ienv, schedule).objective("latency")
            for piece in range(len(ienv.coef)):
                for steps in (len(schedule), max(1, len(schedule) - 2)):  # a tail, too
                    rel = PatternRelaxation(inst, ienv, steps, piece=piece)
                    assert len(rel.patterns) == pattern_count(inst, steps)  # what routes it
                    value = rel.valuation(schedule)
                    assert value <= latency, (trial, piece, steps)
                    seen += 1
            done = np.cumsum([[dict(step.run).get(r, 0) for r in range(inst.n)]
                              for step in schedule], axis=0)
            pause = ((done < inst.length).sum(axis=0) - (done < inst.prompt).sum(axis=0)
                     - (inst.output - 1))
            longer += int((pause > MAX_PAUSE).any())
    assert seen == 6 * 6 * 2 * len(ienv.coef)
    assert longer >= 3  # the patterns of the longest pause stand for these


def test_fewest_request_steps_are_exact_and_a_valid_row_of_the_trajectory_master(cost,
                                                                                 monkeypatch):
    # small bursts whose cache and budget both bind: CP-SAT with one-tick steps proves the
    # fewest request-steps (the exact minimum: a shortest path over every engine move with
    # unit steps), no random schedule has fewer, and as a row of the trajectory master they
    # raise its root on some instances, never past the exact least latency or the latency
    # of a real schedule
    from infersim.optimizer.schedule.request_steps import (
        ONE_TICK,
        fewest_request_steps,
        request_steps,
    )
    from infersim.optimizer.schedule.trajectory import TrajectoryRelaxation

    raised = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        inst = instance([0, 0, 0], rng.integers(2, 6, 3), rng.integers(2, 4, 3), budget=5,
                        seqs=3, blocks=5, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        exact = _best_latency(inst, ONE_TICK)
        start = serial_schedule(inst)
        steps = len(start) + 3
        found = fewest_request_steps(inst, start, steps, 20)
        assert found.proven and found.bound == found.best == exact
        for _ in range(5):
            assert request_steps(inst, _random_schedule(inst, rng, False)) >= exact
        best = _best_latency(inst, ienv)
        trace = int_trace(inst, ienv, start)
        plain, cut = (TrajectoryRelaxation(inst, ienv, steps, min_request_steps=k)
                      .solve(trace, 20) for k in (0, exact))
        assert plain.converged and cut.converged
        assert plain.lp <= cut.lp <= best * (1 + 1e-9)  # the roots' linear programs
        assert cut.bound <= best
        raised += cut.lp > plain.lp * (1 + 1e-6)
        for _ in range(5):
            tr = int_trace(inst, ienv, _random_schedule(inst, rng, False))
            if tr.num_steps <= steps:
                rel = TrajectoryRelaxation(inst, ienv, steps, min_request_steps=exact)
                assert rel.valuation(tr) <= tr.objective("latency") * (1 + 1e-9)
    assert raised >= 1
    # the solver proves them after the trajectory relaxation's integer master when their
    # share of the time is long enough (not in a short run)
    from infersim.optimizer.schedule import solve as solve_module

    seen = []

    def recording(*args, **kwargs):
        seen.append(fewest_request_steps(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(solve_module, "fewest_request_steps", recording)
    env = envelope_for(cost, inst)
    solve_schedule(inst, env, "latency", time_limit_s=4, patterns_share=0)
    assert not seen
    res = solve_schedule(inst, env, "latency", time_limit_s=30, request_steps_share=1.0,
                         patterns_share=0).result
    assert [f.bound for f in seen] == [exact]
    assert res.status == "OPTIMAL" and res.incumbent * 1e6 == pytest.approx(best, abs=1)


def test_integer_master_values_picks_by_their_latency(cost):
    # with the trajectories of three schedules (and their mixtures) to choose from, the
    # integer master values its pick at no less than the pick's latency (under the
    # envelope's unrounded step times; the master's product bounds value it lower)
    from infersim.optimizer.schedule.evaluate import run_schedule
    from infersim.optimizer.schedule.trajectory import TrajectoryRelaxation

    rng = np.random.default_rng(1)
    inst = instance([0, 0, 0, 0], [4, 2, 6, 3], [2, 3, 1, 2], budget=4, seqs=4, blocks=8,
                    bs=2)
    ienv = IntEnvelope.of(envelope_for(cost, inst))

    def latency(schedule):  # the envelope's step times before rounding to microseconds
        def seconds(*features):
            return max(0.0, float((ienv.coef @ np.array([1, *features])).max()) / ienv.q)
        return run_schedule(inst, schedule, seconds).objective("latency")

    schedules = [_random_schedule(inst, rng, False) for _ in range(3)]
    steps = max(len(s) for s in schedules)
    rel = TrajectoryRelaxation(inst, ienv, steps)
    for schedule in schedules:
        rel._add_schedule(int_trace(inst, ienv, schedule))
    value, pick = rel._integer_master(rel._families(), 20)
    assert latency(pick) <= value * (1 + 1e-9)
    assert value < min(latency(s) for s in schedules)  # here a mixture beats them all
    valued = rel.valuation(int_trace(inst, ienv, pick))
    assert valued < latency(pick) * (1 - 5e-4)  # which the master's bounds would miss
    # with the pick's unfinished counts fixed the bound is valid for the pick, and tighter
    # than the root's
    root = rel._generate(time.perf_counter() + 10)[0]
    fixed = rel.bound_with_counts(int_trace(inst, ienv, pick), 10)
    assert root < fixed <= latency(pick) * (1 + 1e-9)


def test_unfinished_floor_holds_in_every_reachable_state(cost):
    # after s steps (any schedule, pauses and chunks included) at least floor[s] requests
    # are unfinished
    from infersim.optimizer.schedule.trajectory import unfinished_floor

    inst = instance([0, 0, 0, 0], [4, 2, 6, 3], [2, 3, 1, 2], budget=4, seqs=4, blocks=8,
                    bs=2)
    floor = unfinished_floor(inst, 8)
    level = {tuple((0, 0) for _ in range(inst.n))}
    for s in range(8):
        left = min(sum(g < o for (_, g), o in zip(state, inst.output.tolist(), strict=True))
                   for state in level)
        if left:
            assert floor[s] <= left, s
        level = {new for state in level for new, _ in _moves(inst, state, False)} or level
    assert floor[0] == inst.n and floor[3] < inst.n  # it binds, and it is not trivial


def test_latency_of_a_burst_keeps_the_trajectory_bound_and_schedule(cost, monkeypatch):
    # the solver runs the relaxation first: its bound is a floor for the reported bound and
    # its integer master's schedule a candidate incumbent
    from infersim.optimizer.schedule import trajectory

    seen = []
    solve = trajectory.TrajectoryRelaxation.solve

    def recording(self, *args, **kwargs):
        seen.append(solve(self, *args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(trajectory.TrajectoryRelaxation, "solve", recording)
    inst = _random_instance(0, n=10)  # a burst
    env = envelope_for(cost, inst)
    ienv = IntEnvelope.of(env)
    res = solve_schedule(inst, env, "latency", time_limit_s=4, patterns_share=0).result
    (traj,) = seen
    assert traj.bound > 0 and res.bound >= traj.bound / 1e6 - 1e-9
    # a 4 s run gives the fewest request-steps no share: they are not in the source
    assert res.bound_source in ("trajectory LP", "trajectory LP and branching", "CP-SAT")
    assert res.incumbent <= int_trace(inst, ienv, traj.schedule).objective("latency") / 1e6
    assert res.bound <= res.incumbent + 1e-9
    spread = _random_instance(1, n=10)  # arrivals spread in time: not used
    solve_schedule(spread, envelope_for(cost, spread), "latency", time_limit_s=2)
    assert len(seen) == 1


def test_latency_of_a_small_burst_takes_the_pattern_bound_and_schedules(cost):
    # where the pattern relaxation fits, it replaces the trajectory relaxation: its bound is
    # the reported one (below the exact least latency) and the solver proves the optimum
    inst = instance([0, 0, 0, 0], [5, 3, 4, 2], [3, 2, 2, 3], budget=6, seqs=4, blocks=6,
                    bs=2)
    env = envelope_for(cost, inst)
    best = _best_latency(inst, IntEnvelope.of(env))
    res = solve_schedule(inst, env, "latency", time_limit_s=10).result
    assert res.bound_source == "patterns"
    assert res.bound * 1e6 <= best + 1e-6
    assert res.status == "OPTIMAL" and res.incumbent * 1e6 == pytest.approx(best, abs=1)


# --- the arrival-wait floor (latency with arrivals spread in time) -----------------------------
def _least_waits(arrival, spacing):
    """Brute force: the least total wait for the first start at or after each arrival over
    integer start times at least ``spacing`` apart."""
    a = sorted(arrival)

    @functools.cache
    def go(last, i):
        if i == len(a):
            return 0
        best = np.inf
        for t in range(0 if last is None else last + spacing, a[-1] + spacing + 1):
            j = i
            while j < len(a) and a[j] <= t:
                j += 1
            if j > i:
                best = min(best, sum(t - v for v in a[i:j]) + go(t, j))
        return best

    return go(None, 0)


def test_wait_floor_is_the_least_total_wait():
    from infersim.optimizer.schedule.arrivals import wait_floor

    rng = np.random.default_rng(0)
    for _ in range(200):
        arrival = rng.integers(0, 25, rng.integers(1, 7)).tolist()
        spacing = int(rng.integers(1, 9))
        assert wait_floor(np.array(arrival), spacing) == _least_waits(arrival, spacing)
    assert wait_floor(np.array([5, 5, 5]), 3) == 0  # a burst waits for nothing


@pytest.mark.parametrize("preemption", [False, True])
def test_latency_floor_holds_for_every_schedule(cost, preemption):
    # random engine-valid schedules (pauses, chunks, preemptions) of instances whose requests
    # arrive over time: their waits for a first step and their latencies stay above the floors
    from infersim.optimizer.schedule.arrivals import latency_floor, wait_floor

    rng = np.random.default_rng(5)
    for seed in range(3):
        arrival = np.sort(np.random.default_rng(seed).uniform(0, 0.01, 4))
        inst = instance(arrival, [4, 2, 6, 3], [2, 3, 1, 2], budget=4, seqs=4, blocks=8, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        floor = latency_floor(inst, ienv)
        a = ienv.ticks(inst.arrival_s)
        for _ in range(10):
            tr = int_trace(inst, ienv, _random_schedule(inst, rng, preemption))
            first = tr.start[(tr.tokens > 0).argmax(axis=1)]
            assert (first - a).sum() >= wait_floor(a, ienv.min_step)
            assert tr.objective("latency") >= floor
        assert floor > 0 and wait_floor(a, ienv.min_step) > 0  # and they are not trivial


@pytest.mark.parametrize("objective", ["latency", "makespan"])
def test_solver_with_arrivals_starts_from_the_floor(cost, objective):
    from infersim.optimizer.schedule.arrivals import latency_floor, makespan_floor
    from infersim.optimizer.schedule.solve import model_envelope

    inst = _random_instance(1, n=8)  # arrivals spread in time
    env = envelope_for(cost, inst)
    sol = solve_schedule(inst, env, objective, time_limit_s=2)
    res = sol.result
    floor = {"latency": latency_floor, "makespan": makespan_floor}[objective]
    ienv = model_envelope(inst, env, objective)  # the makespan counts tenths of microseconds
    assert ienv.per_s == (10**7 if objective == "makespan" else 10**6)
    assert floor(inst, ienv) / ienv.per_s - 1e-9 <= res.bound <= res.incumbent + 1e-9
    # the progress log is in the reported units: each bound under its incumbent, none
    # above the final bound, no incumbent below the final one
    assert sol.progress
    assert all(b <= v + 1e-9 and b <= res.bound + 1e-9 and v >= res.incumbent - 1e-9
               for _, v, b in sol.progress)
    assert res.bound_source in ("arrival waits", "no engine limits", "groups solved alone",
                                "work after arrivals", "work before and after arrivals",
                                "CP-SAT")


def test_own_time_is_close_to_a_lone_request_s_latency(cost):
    # alone, a request's latency is its own time (up to the pieces' and microseconds'
    # rounding); the floor never exceeds it
    from infersim.optimizer.schedule.arrivals import own_time

    for prompt, output, budget in ((20, 4, 64), (50, 3, 16), (7, 1, 64)):
        inst = instance([0], [prompt], [output], budget=budget, seqs=4, blocks=20, bs=4)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        latency = int_trace(inst, ienv, serial_schedule(inst)).objective("latency")
        assert 0.99 * latency <= own_time(inst, ienv)[0] <= latency


def _proven_optimum(inst, ienv, objective, preemption, max_steps=None) -> int:
    """CP-SAT's proven optimum of the model alone (no floors, no tail; the serial schedule
    caps it; at most ``max_steps`` steps where given)."""
    from ortools.sat.python import cp_model

    from infersim.optimizer.schedule.model import ScheduleModel
    from infersim.optimizer.schedule.solve import needed_steps

    upper = int(int_trace(inst, ienv, serial_schedule(inst)).objective(objective))
    steps = needed_steps(inst, ienv, objective, upper, ienv.ticks(inst.arrival_s))
    steps = int(min(steps, max_steps or steps))
    sm = ScheduleModel(inst, ienv, objective, preemption, steps, tail=False, upper=upper)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 2
    solver.parameters.max_time_in_seconds = 30
    assert solver.solve(sm.model) == cp_model.OPTIMAL
    return round(solver.objective_value)


# --- the makespan floor with arrivals: work after an arrival ------------------------------------
def _short_prompts_arriving(seed):
    """Four requests with short prompts arriving over 4 ms: random walks over the engine's
    states stay small."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 0.004, 4))
    return instance(arrival - arrival[0], rng.integers(2, 8, 4), rng.integers(1, 4, 4),
                    budget=8, seqs=4, blocks=10, bs=2)


@pytest.mark.parametrize("preemption", [False, True])
def test_makespan_floor_holds_for_every_schedule_and_the_optimum(cost, preemption):
    # random engine-valid schedules (pauses, chunks, preemptions), greedy schedules that idle
    # for arrivals and CP-SAT's proven optimum (the model without the floor) all stay above
    # it; on these instances, floors that ignored a step running across the arrival (all of a
    # request's steps before it fitting before it) would exceed the optimum of seeds 2 to 5
    from infersim.optimizer.schedule.arrivals import makespan_floor, own_time
    from infersim.optimizer.schedule.greedy import greedy_schedule

    walk = np.random.default_rng(7)
    binding = tight = 0
    for seed in range(6):
        inst = _short_prompts_arriving(seed)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        floor = makespan_floor(inst, ienv)
        a = ienv.ticks(inst.arrival_s)
        for _ in range(5):
            tr = int_trace(inst, ienv, _random_schedule(inst, walk, preemption))
            assert tr.objective("makespan") >= floor
        for holds in ((), (0,), (1, 2), (0, 1, 2, 3)):
            sched = greedy_schedule(inst, "fcfs", ienv.duration, a, holds)
            assert int_trace(inst, ienv, sched).objective("makespan") >= floor
        optimum = _proven_optimum(inst, ienv, "makespan", preemption)
        assert floor <= optimum
        tight += floor >= 0.999 * optimum
        binding += floor > int((a + own_time(inst, ienv)).max() - a.min())
    assert binding and tight >= 2  # not trivial: above the lone-request bound, often tight


def test_prefix_bound_holds_for_every_schedule_and_passes_the_floor(cost):
    # without preemption: random engine-valid schedules (pauses, chunks), greedy schedules
    # that idle for arrivals and CP-SAT's proven optimum all stay above the bound from the
    # steps before an arrival; it never falls below the floor that lets each request's
    # steps before an arrival fill the time alone, passes it where the steps before an
    # arrival hold others' prompts, and meets the optimum on most; the schedules it finds
    # are the instance's, valued as it says
    from infersim.optimizer.schedule.arrivals import makespan_floor
    from infersim.optimizer.schedule.greedy import greedy_schedule
    from infersim.optimizer.schedule.prefix import makespan_prefix

    def bound_of(inst, ienv):
        upper = int(int_trace(inst, ienv, serial_schedule(inst)).objective("makespan"))
        found = makespan_prefix(inst, ienv, 10, upper)
        if found.schedule is not None:
            assert int_trace(inst, ienv, found.schedule).objective("makespan") == found.value
            assert found.bound <= found.value < upper
        return found.bound

    walk = np.random.default_rng(7)
    for seed in range(3):
        inst = _short_prompts_arriving(seed)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        bound = bound_of(inst, ienv)
        for _ in range(5):
            tr = int_trace(inst, ienv, _random_schedule(inst, walk, False))
            assert tr.objective("makespan") >= bound
    above = tight = equal = 0
    for seed in range(5):  # long prompts close together: steps before an arrival hold them
        rng = np.random.default_rng(seed)
        arrival = np.sort(rng.uniform(0, 0.002, 5))
        inst = instance(arrival - arrival[0], rng.integers(100, 250, 5), rng.integers(1, 4, 5),
                        budget=512, seqs=8, blocks=400, bs=4)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        a = ienv.ticks(inst.arrival_s)
        bound = bound_of(inst, ienv)
        for holds in ((), (0,), (1, 2), (0, 1, 2, 3)):
            sched = greedy_schedule(inst, "fcfs", ienv.duration, a, holds)
            assert int_trace(inst, ienv, sched).objective("makespan") >= bound
        optimum = _proven_optimum(inst, ienv, "makespan", False)
        floor = makespan_floor(inst, ienv)
        assert floor <= bound <= optimum
        above += bound > floor + 10  # microseconds: more than the two roundings
        tight += bound >= 0.999 * optimum
        equal += bound == optimum
    assert above == 5 and tight >= 3 and equal >= 2


def test_busy_floor_holds_for_every_schedule_with_as_many_steps(cost):
    # random engine-valid schedules (pauses, chunks, preemptions) of k non-empty steps are
    # busy at least busy_floor(k); on bursts where the step count is what costs, the solver
    # proves k - 1 steps too few and the floor of k closes all but a few microseconds
    from infersim.optimizer.schedule.model import busy_floor

    walk = np.random.default_rng(3)
    for trial in range(6):
        rng = np.random.default_rng(trial)
        inst = instance([0, 0, 0], rng.integers(2, 6, 3), rng.integers(1, 4, 3), budget=6,
                        seqs=3, blocks=8, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        for _ in range(5):
            tr = int_trace(inst, ienv, _random_schedule(inst, walk, bool(trial % 2)))
            assert tr.duration.sum() >= busy_floor(inst, ienv, tr.num_steps)
    inst = _random_instance(2, n=8)
    res = solve_schedule(inst, envelope_for(cost, inst), "cost", time_limit_s=20).result
    assert res.bound_source == "fewest steps" and res.gap < 1e-3


def test_greedy_holds_wait_for_the_next_arrival(cost):
    # a hold before step 0 makes the first step wait for the second arrival and take both
    from infersim.optimizer.schedule.greedy import greedy_schedule, search_holds

    inst = instance([0.0, 0.0005], [4, 4], [2, 2], budget=16, seqs=4, blocks=12, bs=4)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    a = ienv.ticks(inst.arrival_s)
    plain = greedy_schedule(inst, "fcfs", ienv.duration, a)
    held = greedy_schedule(inst, "fcfs", ienv.duration, a, holds={0})
    assert plain[0].run == ((0, 4),) and held[0].run == ((0, 4), (1, 4))
    value = lambda s: int_trace(inst, ienv, s).objective("makespan")  # noqa: E731
    v, sched, _ = search_holds(inst, value, 5, 0, ienv.duration, a, max_evals=50)
    assert v == value(sched) <= min(value(plain), value(held))


def test_groups_solved_alone_bound_the_latency_of_every_schedule(cost):
    # the requests cut into groups in arrival order, each solved alone: the sum of their
    # bounds stays below the proven optimum of all together and every schedule's latency,
    # and above the arrival-wait floor (they see each other's steps)
    from infersim.optimizer.schedule.arrivals import latency_floor
    from infersim.optimizer.schedule.greedy import serial_schedule_order
    from infersim.optimizer.schedule.solve import _groups_bound

    inst = _random_instance(1, n=6)  # arrivals spread in time
    env = envelope_for(cost, inst)
    ienv = IntEnvelope.of(env)
    full = solve_schedule(inst, env, "latency", time_limit_s=90, group_size=0).result
    assert full.status == "OPTIMAL"
    grouped, _ = _groups_bound(inst, env, IntEnvelope.of(env), False, 10, 3, 1, 0)
    a = ienv.ticks(inst.arrival_s)
    assert (grouped + a.sum()) / 1e6 - inst.arrival_s.sum() <= full.incumbent + 1e-9
    rng = np.random.default_rng(3)
    for _ in range(10):
        order = rng.permutation(inst.n)
        tr = int_trace(inst, ienv, serial_schedule_order(inst, order, ienv.duration, a))
        assert tr.objective("latency") >= grouped
    assert grouped > latency_floor(inst, ienv)
    res = solve_schedule(inst, env, "latency", time_limit_s=4, group_size=3).result
    assert res.bound >= (grouped + a.sum()) / 1e6 - inst.arrival_s.sum() - 1e-9


# --- latency with arrivals: the best schedule without the engine's limits -----------------------
def _arrivals_instance(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 6))
    arrival = np.sort(rng.uniform(0, [0.001, 0.003, 0.006][seed % 3], n))
    roomy = seed % 2 == 0  # room for everyone at once, or a small budget and cache
    return instance(arrival - arrival[0], rng.integers(2, 40, n), rng.integers(1, 5, n),
                    budget=64 if roomy else 16, seqs=8 if roomy else 3,
                    blocks=60 if roomy else 12, bs=4)


@pytest.mark.parametrize("preemption", [False, True])
def test_uncapped_bound_holds_for_every_schedule_and_the_optimum(cost, preemption):
    # random engine-valid schedules, greedy schedules that idle for arrivals and CP-SAT's
    # proven optimum all stay above the relaxation's optimum; with room for everyone it often
    # is the optimum, and it can pass the arrival-wait floor
    from infersim.optimizer.schedule.arrivals import latency_floor
    from infersim.optimizer.schedule.greedy import greedy_schedule
    from infersim.optimizer.schedule.uncapped import uncapped_latency

    walk = np.random.default_rng(11)
    for seed in range(3):  # short prompts: random walks over engine states stay small
        arrival = np.sort(np.random.default_rng(seed).uniform(0, 0.004, 4))
        inst = instance(arrival, [4, 2, 6, 3], [2, 3, 1, 2], budget=4, seqs=4, blocks=8, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        bound, proven = uncapped_latency(inst, ienv, 10)
        assert proven
        for _ in range(10):
            tr = int_trace(inst, ienv, _random_schedule(inst, walk, preemption))
            assert tr.objective("latency") >= bound
    tight = above = 0
    for seed in (0, 2, 3, 6):
        inst = _arrivals_instance(seed)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        bound, proven = uncapped_latency(inst, ienv, 10)
        assert proven
        a = ienv.ticks(inst.arrival_s)
        for holds in ((), (0,), (0, 1, 2)):
            sched = greedy_schedule(inst, "fcfs", ienv.duration, a, holds)
            assert int_trace(inst, ienv, sched).objective("latency") >= bound
        optimum = _proven_optimum(inst, ienv, "latency", preemption, max_steps=30)
        assert bound <= optimum
        tight += bound == optimum
        above += bound > latency_floor(inst, ienv)
    assert tight >= 2 and above >= 2


def test_uncapped_whole_prompts_with_exact_reads_bound_every_schedule(cost):
    # the second canonical form (whole prompts, sample i reading P + i) holds unless many
    # requests finish in one step: it is never below the form with prompts cut to tau,
    # passes it on one instance, and stays below random engine-valid schedules (with
    # preemption), greedy ones and CP-SAT's proven optimum with preemption; a schedule where
    # all finish together is above the floor for that
    from infersim.optimizer.schedule.greedy import greedy_schedule
    from infersim.optimizer.schedule.uncapped import (
        _best_idling,
        exchange_threshold,
        first_tokens,
        simultaneous_floor,
        uncapped_latency,
    )

    def forms(inst, ienv):
        count = exchange_threshold(inst, ienv)
        assert count >= inst.n  # a few requests: no step can hold that many finishing
        assert simultaneous_floor(inst, ienv, count) is None
        whole = _best_idling(inst, ienv, inst.prompt, 10, exact_reads=True)[0]
        cut = _best_idling(inst, ienv, first_tokens(inst, ienv), 10)[0]
        assert whole >= cut and uncapped_latency(inst, ienv, 10)[0] == whole
        return whole, cut

    walk = np.random.default_rng(5)
    for seed in range(3):  # short prompts: random walks over engine states stay small
        arrival = np.sort(np.random.default_rng(seed).uniform(0, 0.004, 4))
        inst = instance(arrival, [4, 2, 6, 3], [2, 3, 1, 2], budget=4, seqs=4, blocks=8, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        whole = forms(inst, ienv)[0]
        for _ in range(10):
            tr = int_trace(inst, ienv, _random_schedule(inst, walk, True))
            assert tr.objective("latency") >= whole
    passes = 0
    for seed in (0, 2, 3, 6):
        inst = _arrivals_instance(seed)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        whole, cut = forms(inst, ienv)
        passes += whole > cut
        a = ienv.ticks(inst.arrival_s)
        for holds in ((), (0,), (0, 1, 2)):
            sched = greedy_schedule(inst, "fcfs", ienv.duration, a, holds)
            assert int_trace(inst, ienv, sched).objective("latency") >= whole
        if seed in (0, 2):
            assert whole <= _proven_optimum(inst, ienv, "latency", True, max_steps=30)
    assert passes >= 1
    # three requests queued at once, finishing in the same step
    inst = instance([0, 0, 0], [8, 5, 3], [3, 3, 3], budget=64, seqs=4, blocks=40, bs=4)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    together = [FixedStep(((0, 8), (1, 5), (2, 3)))] + [FixedStep(((0, 1), (1, 1), (2, 1)))] * 2
    assert simultaneous_floor(inst, ienv, 3) <= int_trace(inst, ienv, together).objective(
        "latency")
    assert simultaneous_floor(inst, ienv, 4) is None


@pytest.mark.parametrize("preemption", [False, True])
def test_early_steps_bound_every_schedule_and_close_what_the_budget_leaves(cost, preemption):
    # prompts that arrive together and exceed the budget: fixing the first steps raises the
    # bound without the engine's limits, never past CP-SAT's proven optimum (with or without
    # preemption), random engine-valid schedules or the schedules it returns itself (run,
    # they take the value it reports); on some instances it reaches the optimum
    from infersim.optimizer.schedule.early_steps import early_steps_latency
    from infersim.optimizer.schedule.uncapped import uncapped_latency

    walk = np.random.default_rng(3)
    raised = closed = 0
    for seed in range(4):
        arrival = np.sort(np.random.default_rng(seed).uniform(0, 0.002, 4))
        inst = instance(arrival, [4, 2, 6, 3], [2, 3, 1, 2], budget=[4, 6][seed % 2], seqs=4,
                        blocks=8, bs=2)
        ienv = IntEnvelope.of(envelope_for(cost, inst))
        upper = int(int_trace(inst, ienv, serial_schedule(inst)).objective("latency"))
        found = early_steps_latency(inst, ienv, 20, upper)
        assert found.proven
        root = uncapped_latency(inst, ienv, 10)[0]
        optimum = _proven_optimum(inst, ienv, "latency", preemption)
        assert root <= found.bound <= optimum
        if found.schedule is not None:
            assert found.bound <= int_trace(inst, ienv, found.schedule).objective(
                "latency") == found.value
        for _ in range(10):
            tr = int_trace(inst, ienv, _random_schedule(inst, walk, preemption))
            assert tr.objective("latency") >= found.bound
        raised += found.bound > root
        closed += found.bound == optimum
    assert raised == closed == 4
    # the solver runs it (the relaxation is within 2% of the incumbent here) and stops there
    res = solve_schedule(inst, envelope_for(cost, inst), "latency", preemption=preemption,
                         time_limit_s=10).result
    assert res.status == "OPTIMAL" and res.bound_source == "first steps exactly"
    assert math.isclose(res.incumbent, (optimum + ienv.ticks(inst.arrival_s).sum()) / 1e6
                        - inst.arrival_s.sum(), abs_tol=1e-9)


def test_uncapped_search_out_of_time_still_bounds_and_refuses_costly_steps(cost):
    # stopped at once it returns the least bound of its open states (below the optimum);
    # where one more request lengthens a step by n-ths of the shortest step it gives nothing
    from infersim.optimizer.schedule.uncapped import first_tokens, uncapped_latency

    inst = _arrivals_instance(0)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    full, proven = uncapped_latency(inst, ienv, 10)
    early, done = uncapped_latency(inst, ienv, 0)
    assert proven and not done and 0 < early <= full
    taus = first_tokens(inst, ienv)
    assert (taus >= 1).all() and (taus <= inst.prompt).all()
    costly = IntEnvelope(ienv.q, ienv.coef * np.array([1, 1, 10**4, 1, 1]))  # per sequence
    assert first_tokens(inst, costly) is None and uncapped_latency(inst, costly, 1) is None


def test_uncapped_schedule_runs_everyone_every_step_and_idles_where_it_pays(cost):
    # the second request arrives just after the first: waiting for it lets both share every
    # step, which beats starting at once; the solver takes the schedule as its warm start
    from infersim.optimizer.schedule.uncapped import uncapped_latency, uncapped_schedule

    inst = instance([0.0, 0.0001], [4, 6], [4, 4], budget=64, seqs=4, blocks=20, bs=4)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    sched = uncapped_schedule(inst, ienv, 10)
    assert [step.run for step in sched] == [((0, 4), (1, 6))] + [((0, 1), (1, 1))] * 3
    eager = [FixedStep(((0, 4),)), FixedStep(((0, 1), (1, 6))), FixedStep(((0, 1), (1, 1))),
             FixedStep(((0, 1), (1, 1))), FixedStep(((1, 1),))]
    value = int_trace(inst, ienv, sched).objective("latency")
    assert uncapped_latency(inst, ienv, 10)[0] <= value < int_trace(
        inst, ienv, eager).objective("latency")
    res = solve_schedule(inst, envelope_for(cost, inst), "latency", time_limit_s=2).result
    assert res.incumbent <= (value + ienv.ticks(inst.arrival_s).sum()) / 1e6 + 1e-9
    # several requests (a budget for all their prompts): canonical, valid, above the bound
    inst = dataclasses.replace(_arrivals_instance(0), max_num_batched_tokens=256)
    ienv = IntEnvelope.of(envelope_for(cost, inst))
    tr = int_trace(inst, ienv, uncapped_schedule(inst, ienv, 10))
    ran = tr.tokens > 0
    first, last = ran.argmax(axis=1), ran.shape[1] - 1 - ran[:, ::-1].argmax(axis=1)
    assert all(ran[r, first[r]:last[r] + 1].all() for r in range(inst.n))
    assert (ran.sum(axis=1) == inst.output).all()
    assert tr.objective("latency") >= uncapped_latency(inst, ienv, 10)[0]
