"""The latency bound without the engine's limits (``optimizer/schedule/uncapped.py``) on the
30 requests of the schedule targets arriving as Poisson streams of several rates.

Per rate: the arrival-wait floor, the relaxation's optimum (and the search's time), the
prompt tokens tau its exchanges allow per request (the first form), how many requests would
have to finish in one step for the second form (whole prompts, exact reads) to fail and the
least latency of such schedules, the best schedule the warm-start
heuristics find (greedy, serial orders, greedy with idling: the model's latency), and the
schedule without limits in which every request runs its whole prompt at its first step
and then decodes in every step, the engine never idle (what the relaxation would be with
tau = P and no idling), and the same with the idle times searched (``uncapped_schedule``,
a warm start of the solver where it keeps within the engine's limits), and the branch and
bound that fixes the first steps (``early_steps.py``, up to 60 s, closing what no better
schedule than the best of the above can be under; its own best schedule, its nodes and
time). Writes ``benchmarks/results/latency_relaxation.md``. Usage:
``python benchmarks/latency_relaxation.py``."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from _common import ROOT, machine, write

from infersim.errors import SolverError
from infersim.optimizer.schedule import fit_envelope, instance_from_config, shape_range
from infersim.optimizer.schedule.arrivals import latency_floor
from infersim.optimizer.schedule.early_steps import early_steps_latency
from infersim.optimizer.schedule.greedy import search_holds, search_orders
from infersim.optimizer.schedule.model import IntEnvelope, int_trace
from infersim.optimizer.schedule.solve import best_start
from infersim.optimizer.schedule.uncapped import (
    exchange_threshold,
    first_tokens,
    simultaneous_floor,
    uncapped_latency,
    uncapped_schedule,
)
from infersim.simulator import SimConfig
from infersim.simulator.schedulers.fixed import FixedStep

CONFIG = ROOT / "benchmarks" / "optimal_schedule_burst.yaml"
RATES = (200, 300, 400, 600)


def eager(inst, ienv) -> list[FixedStep]:
    """Every request in every step from the first one after its arrival (its whole prompt,
    then one decode a step) to its end; the engine never idle."""
    a = ienv.ticks(inst.arrival_s)
    made = np.zeros(inst.n, dtype=np.int64)  # tokens generated
    clock, steps = 0, []
    while (made < inst.output).any():
        ids = np.flatnonzero((a <= clock) & (made < inst.output))
        if not ids.size:
            clock = int(a[made < inst.output].min())
            continue
        run = tuple((int(r), int(inst.prompt[r]) if made[r] == 0 else 1) for r in ids)
        kv = int((inst.prompt[ids] + made[ids]).sum())  # context after the step
        clock += ienv.duration(sum(q for _, q in run), len(run), kv, len(run))
        steps.append(FixedStep(run))
        made[ids] += 1
    return steps


def _best_heuristic(inst, ienv):
    """(model latency -> seconds, the best warm-start heuristic's model latency)."""
    a = ienv.ticks(inst.arrival_s)

    def report(value: float) -> float:
        return (value + float(a.sum())) / ienv.per_s - float(inst.arrival_s.sum())

    def value(schedule) -> int:
        return round(int_trace(inst, ienv, schedule).objective("latency"))

    best = value(best_start(inst, ienv, "latency", [])[1])
    best = min(best, search_orders(inst, value, 30, 0, ienv.duration, a, max_evals=1000)[0])
    best = min(best, search_holds(inst, value, 30, 0, ienv.duration, a, max_evals=1000)[0])
    return report, best


def main() -> None:
    rows = []
    for rate in RATES:
        cfg = SimConfig.load(CONFIG, ["workload.arrival.process=poisson",
                                      f"workload.arrival.rate={rate}"])
        inst, cost, _ = instance_from_config(cfg, 30)
        env = fit_envelope(cost, shape_range(inst), samples=3000, seed=0)
        ienv = IntEnvelope.of(env)
        report, best = _best_heuristic(inst, ienv)
        free = dataclasses.replace(inst, num_blocks=10**6, max_num_batched_tokens=10**6,
                                   max_num_seqs=10**6)
        whole = int_trace(free, ienv, eager(free, ienv)).objective("latency")
        started = time.perf_counter()
        bound, proven = uncapped_latency(inst, ienv, 60)
        seconds = time.perf_counter() - started
        taus = first_tokens(inst, ienv)
        together = exchange_threshold(inst, ienv)
        floor = simultaneous_floor(inst, ienv, together) if together else None
        sched = uncapped_schedule(inst, ienv, 60)
        try:
            idling, fits = int_trace(inst, ienv, sched), "yes"
        except SolverError as exc:
            idling, fits = int_trace(free, ienv, sched), f"no ({exc})"
        idle = idling.start[1:] - idling.end[:-1]
        idle = idle[idle > 0]
        upper = min(best, round(idling.objective("latency")) if fits == "yes" else best)
        started = time.perf_counter()
        early = early_steps_latency(inst, ienv, 60, upper)
        early_s = time.perf_counter() - started
        rows.append((rate, inst, report(latency_floor(inst, ienv)), report(bound), proven,
                     seconds, taus, together, None if floor is None else report(floor),
                     report(best), report(whole),
                     report(idling.objective("latency")), idle, fits, report(early.bound),
                     early.proven, early.nodes, early_s, report(min(upper, early.value or
                                                                    upper))))
        print(rate, report(bound), proven, f"{seconds:.2f} s", report(best),
              report(early.bound), early.proven, f"{early_s:.1f} s", flush=True)
    lines = [
        "# Latency bound without the engine's limits",
        "",
        f"Machine: {machine()}. Config `benchmarks/optimal_schedule_burst.yaml` (Llama-3.1-8B "
        "on one H100, 60 KV blocks, 256-token budget), its first 30 requests arriving as a "
        "Poisson stream. Latency: sum over requests of finish - arrival, under the step "
        "envelope (the model's integer microseconds). Heuristics: the warm starts "
        "(greedy, 1,000 serial orders, 1,000 greedy schedules with idling; no CP-SAT).",
        "",
        "| rate (/s) | arrivals over (ms) | arrival-wait floor (s) | relaxation optimum (s) "
        "| proven | search (s) | tau / prompt (tokens) | finishing in one step for whole "
        "prompts to fail | floor of such schedules (s) | best heuristic (s) | gap to it "
        "| no limits, whole prompts, never idle (s) | the same, idling searched (s) "
        "| its idle periods (us) | within the engine's limits | bound's gap to it "
        "| first steps exactly: bound (s) | proven | nodes | search (s) "
        "| best schedule found (s) | gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        "---|---|",
    ]
    for (rate, inst, floor, bound, proven, seconds, taus, together, together_floor, best,
         whole, idling, idle, fits, early, closed, nodes, early_s, found) in rows:
        span = (inst.arrival_s.max() - inst.arrival_s.min()) * 1e3
        lines.append(
            f"| {rate} | {span:.0f} | {floor:.5f} | {bound:.5f} | {'yes' if proven else 'no'} "
            f"| {seconds:.2f} | {taus.min()}-{taus.max()} of {inst.prompt.min()}-"
            f"{inst.prompt.max()} | {together} | "
            f"{'-' if together_floor is None else f'{together_floor:.5f}'} | {best:.5f} "
            f"| {(best - bound) / best:.2%} | {whole:.5f} "
            f"| {idling:.5f} | {len(idle)}: {', '.join(str(int(v)) for v in idle)} "
            f"| {fits} | {(idling - bound) / idling:.2%} | {early:.6f} "
            f"| {'yes' if closed else 'no'} | {nodes:,} | {early_s:.1f} | {found:.6f} "
            f"| {(found - early) / found:.3%} |")
    lines += ["", "Command: `python benchmarks/latency_relaxation.py`", ""]
    print(f"wrote {write('latency_relaxation.md', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
