"""The fewest request-steps of the 30-request burst of the targets benchmark, and what they
add to the trajectory relaxation's bound on its latency. Writes
``benchmarks/results/request_steps.md``.

1. The trajectory relaxation for --seconds (root, integer master, branching on the
   unfinished counts) without the row: its bound and the best schedule.
2. CP-SAT with one-tick steps (``request_steps.fewest_request_steps``, two workers) hinted
   with that schedule, once per seed for up to --count-seconds: the proven fewest
   request-steps and the time to the proof (it varies much with the seed).
3. The share of the best schedule's latency that is the envelope's constant times its
   request-steps.
4. The trajectory relaxation for --seconds again, with the fewest request-steps as a row.

    python benchmarks/request_steps.py [--count-seconds S] [--seeds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import time

from _common import ROOT, machine, write

from infersim.optimizer.schedule import fit_envelope, instance_from_config, shape_range
from infersim.optimizer.schedule.model import IntEnvelope, int_trace
from infersim.optimizer.schedule.request_steps import fewest_request_steps, request_steps
from infersim.optimizer.schedule.solve import best_start
from infersim.optimizer.schedule.trajectory import TrajectoryRelaxation
from infersim.simulator import SimConfig

CONFIG = ROOT / "benchmarks" / "optimal_schedule_burst.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count-seconds", type=float, default=120.0)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    inst, cost, _ = instance_from_config(SimConfig.load(CONFIG), 30)
    ienv = IntEnvelope.of(fit_envelope(cost, shape_range(inst), samples=3000, seed=0))
    _, warm = best_start(inst, ienv, "latency", [], False)
    start = int_trace(inst, ienv, warm)
    steps = start.num_steps + max(5, start.num_steps // 2)  # as solve_schedule
    # the best schedule: the trajectory relaxation's own search, without the row
    rel = TrajectoryRelaxation(inst, ienv, steps)
    t0 = time.perf_counter()
    plain = rel.solve(start, args.seconds, start.objective("latency"))
    rows = [(0, plain, time.perf_counter() - t0)]
    best = int_trace(inst, ienv, plain.schedule or warm)
    if best.objective("latency") > start.objective("latency"):
        best = start
    latency = best.objective("latency")
    best_steps = request_steps(inst, best.steps)
    lines = ["# Fewest request-steps of a burst", "",
             f"Machine: {machine()}. {inst.describe()} (`benchmarks/optimal_schedule_burst.yaml`,"
             f" 30 requests); horizon {steps} steps with a relaxed tail, as the solver's.", "",
             "## CP-SAT with one-tick steps", "",
             f"Hinted and capped by the best schedule found by the trajectory relaxation "
             f"below ({best_steps} request-steps); a run stops when its bound reaches the "
             "fewest it found.", "",
             "| seed | fewest found | bound | proven | seconds |", "|---|---|---|---|---|"]
    fewest = 0
    for seed in range(args.seeds):
        found = fewest_request_steps(inst, best.steps, steps, args.count_seconds, 2, seed)
        lines.append(f"| {seed} | {found.best} | {found.bound} | "
                     f"{'yes' if found.proven else 'no'} | {found.seconds:.1f} |")
        fewest = max(fewest, found.bound)
    rel = TrajectoryRelaxation(inst, ienv, steps, min_request_steps=fewest)
    t0 = time.perf_counter()
    rows.append((fewest, rel.solve(start, args.seconds, latency), time.perf_counter() - t0))
    constant = float(ienv.coef[:, 0].max()) / ienv.q
    lines += ["", "## The constant times the request-steps", "",
              f"Best schedule: latency {latency / 1e6:.6f} s, {best_steps} request-steps; the "
              f"envelope's constant {constant:.1f} us per step, so "
              f"{constant * best_steps / 1e6:.6f} s ({constant * best_steps / latency:.1%}) "
              "of its latency is the constant; the rest is what the steps' tokens, sequences "
              "and KV reads add, times the requests waiting.", "",
              "## Trajectory relaxation without and with the row", "",
              f"{args.seconds:g} s each, from the same start.", "",
              "| fewest request-steps row | root LP (s) | bound after branching (s) | nodes | "
              "gap to the best schedule | seconds |", "|---|---|---|---|---|---|"]
    for k, res, spent in rows:
        lines.append(f"| {k if k else 'none'} | {res.lp / 1e6:.6f} | {res.bound / 1e6:.6f} | "
                     f"{res.nodes} | {(latency - res.bound) / latency:.2%} | {spent:.1f} |")
    lines += ["", "Command: `python benchmarks/request_steps.py "
              f"--count-seconds {args.count_seconds:g} --seeds {args.seeds} "
              f"--seconds {args.seconds:g}`. CP-SAT runs stopped by their time limit and "
              "HiGHS's MIP in the trajectory relaxation are not bit-reproducible."]
    write("request_steps.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
