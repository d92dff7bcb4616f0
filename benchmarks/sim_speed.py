"""Simulator speed and memory.

1. The whole Azure 2023 conversation trace (19,366 requests, ~1 h) on one H100 replica
   serving Llama-3.1-8B with vLLM V1 defaults: wall time, requests per wall-second,
   simulated seconds per wall-second, engine steps per wall-second; fast-forward on and off.
2. A synthetic run of 1,000,000 requests (Poisson at 10 req/s, chat lengths, per-request
   records kept, per-step log off): wall time and peak resident memory of the process.

Each case runs in its own process, pinned to one core (taskset) with one BLAS thread.

    python benchmarks/sim_speed.py [--skip-million]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from _common import DATA, machine, write

TRACE = DATA / "traces" / "azure2023_conv.csv"


def child(case: str, fast: bool) -> None:
    from infersim.simulator import SimConfig, simulate

    if case == "azure":
        cfg = SimConfig.from_dict({"workload": {"trace": {"path": str(TRACE)}},
                                   "fast_forward": fast})
    else:
        cfg = SimConfig.from_dict({"workload": {"arrival": {"process": "poisson", "rate": 10},
                                                "num_requests": 1_000_000},
                                   "record_steps": False, "fast_forward": fast})
    started = time.perf_counter()
    result = simulate(cfg)
    wall = time.perf_counter() - started
    s = result.summary
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall_s": wall, "requests": s["num_requests"], "steps": s["num_steps"],
                      "simulated_s": s["duration_s"], "peak_rss_bytes": peak,
                      "completed": s["completed"]}))


def run(case: str, fast: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", case] + ([] if fast else ["--no-fast"])
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--no-fast", action="store_true")
    parser.add_argument("--skip-million", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args.child, not args.no_fast)
    lines = ["# Simulator speed", "", f"machine: {machine()}; one core (taskset -c 0), one "
             "BLAS thread; `python benchmarks/sim_speed.py`", "",
             "| case | fast-forward | requests | engine steps | simulated s | wall s | "
             "requests/wall-s | simulated s/wall-s | steps/wall-s | peak RSS (MiB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cases = []
    if TRACE.exists():
        cases += [("azure conv trace, 1 x H100", "azure", True),
                  ("azure conv trace, 1 x H100", "azure", False)]
    else:
        print(f"skipping the trace case: {TRACE} is not here")
    if not args.skip_million:
        cases.append(("1,000,000 synthetic requests, 1 x H100", "million", True))
    for label, case, fast in cases:
        r = run(case, fast)
        lines.append(
            f"| {label} | {'on' if fast else 'off'} | {r['requests']:,} | {r['steps']:,} | "
            f"{r['simulated_s']:,.0f} | {r['wall_s']:.2f} | {r['requests'] / r['wall_s']:,.0f}"
            f" | {r['simulated_s'] / r['wall_s']:,.0f} | {r['steps'] / r['wall_s']:,.0f} | "
            f"{r['peak_rss_bytes'] / 2**20:,.0f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(f"written to {write('sim_speed.md', text)}")


if __name__ == "__main__":
    main()
