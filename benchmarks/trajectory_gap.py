"""Where the trajectory relaxation's latency gap comes from, on the 30-request burst of the
targets benchmark: the root master's LP bound, the bound after branching on the unfinished
counts, the best schedule found (integer master or a node's integral LP) with its latency
under the envelope, and that schedule as the root master values it (the step from the
valuation to the latency is what the per-step product bounds miss). Writes
``benchmarks/results/trajectory_gap.md`` (with other ``--requests``:
``trajectory_gap_<N>.md``).

    python benchmarks/trajectory_gap.py [--seconds S] [--requests N] [--set key=value ...]
        [--branching S ...]
    (default 42 s: the solver's share of 60 s; --branching: also branch from the root
    alone for S seconds, each a fresh run, against the best schedule found, to show how
    fast the bound rises)
"""

from __future__ import annotations

import argparse
import time

from _common import ROOT, machine, write

from infersim.optimizer.schedule import fit_envelope, instance_from_config, shape_range
from infersim.optimizer.schedule.model import IntEnvelope, int_trace
from infersim.optimizer.schedule.solve import best_start
from infersim.optimizer.schedule.trajectory import TrajectoryRelaxation
from infersim.simulator import SimConfig

CONFIG = ROOT / "benchmarks" / "optimal_schedule_burst.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=42.0)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--branching", type=float, nargs="*", default=[])
    args = ap.parse_args()
    inst, cost, _ = instance_from_config(SimConfig.load(CONFIG, args.set), args.requests)
    ienv = IntEnvelope.of(fit_envelope(cost, shape_range(inst), samples=3000, seed=0))
    _, warm = best_start(inst, ienv, "latency", [], False)
    start = int_trace(inst, ienv, warm)
    steps = start.num_steps + max(5, start.num_steps // 2)  # as solve_schedule
    rel = TrajectoryRelaxation(inst, ienv, steps)
    res = rel.solve(start, args.seconds, start.objective("latency"))
    found = res.schedule is not None
    best = int_trace(inst, ienv, res.schedule if found else warm)
    real = float(best.objective("latency"))
    valued = rel.valuation(best)
    fixed = rel.bound_with_counts(best, args.seconds)
    name = ("best schedule found" if found else
            "the heuristic start (the integer master found none in its time)")
    rows = [("root master's LP value (the bound once converged)", res.lp),
            (f"bound (Lagrangian, then {res.nodes} branching nodes)", res.bound),
            (f"{name}, as the root master values it", valued),
            ("bound with that schedule's unfinished counts fixed", fixed),
            ("that schedule's latency", real)]
    lines = ["# Trajectory relaxation: where the latency gap comes from", "",
             f"Machine: {machine()}. {inst.describe()}; {args.seconds:g} s "
             f"({res.iterations} column-generation rounds at the root, converged: "
             f"{res.converged}; {res.columns} columns in all).", "",
             "| | latency (s) | above the bound |", "|---|---|---|"]
    lines += [f"| {name} | {v / 1e6:.5f} | {v / res.bound - 1:+.2%} |" for name, v in rows]
    if args.branching:
        lines += ["", "Branching alone from the root (column generation, then best-first "
                  f"branching on the unfinished counts against {real / 1e6:.5f} s; each a "
                  "fresh run):", "", "| seconds | nodes | bound (s) | gap |", "|---|---|---|---|"]
    for seconds in args.branching:
        alone = TrajectoryRelaxation(inst, ienv, steps)
        alone._add_schedule(start)
        alone._add_schedule(best)
        root = alone._generate(time.perf_counter() + seconds)[0]
        bound, nodes, _ = alone.branch_and_bound(root, real, time.perf_counter() + seconds,
                                                 1e-4)
        lines.append(f"| {seconds:g} | {nodes} | {bound / 1e6:.5f} | {1 - bound / real:.2%} |")
    sets = "".join(f" --set {kv}" for kv in args.set)
    more = (" --branching " + " ".join(f"{v:g}" for v in args.branching)
            if args.branching else "")
    lines += ["", f"Command: `python benchmarks/trajectory_gap.py --seconds {args.seconds:g} "
              f"--requests {args.requests}{sets}{more}`", ""]
    print("\n".join(lines))
    name = "" if args.requests == 30 else f"_{args.requests}"
    write(f"trajectory_gap{name}.md", "\n".join(lines))


if __name__ == "__main__":
    main()
