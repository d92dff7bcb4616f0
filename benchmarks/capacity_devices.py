"""Capacity and cost per million tokens by device and scheduler.

The Azure 2023 conversation trace (19,366 requests, ~1 h, natural rate 5.5 req/s) replayed
faster or slower (trace.rate_scale) against Llama-3.1-8B (bf16) on one H100 SXM, one A100
80GB SXM and one L40S, each with vLLM V1 defaults for that device (H100: 8192 batched
tokens and 1024 sequences; A100 and L40S: 2048 and 256) and each scheduler asked for. For
each pair: the highest request rate at which TTFT p90 <= 500 ms and TPOT p90 <= 50 ms
(``find_capacity`` in percentile mode, attainment 0.9, tolerance 2%), and the cost per
million output tokens (and per million input + output tokens) at that rate from the
catalog's price per device-hour (grade D: assumptions).

    python benchmarks/capacity_devices.py [--schedulers vllm_v1,sarathi]
        [--devices h100-sxm,a100-80gb-sxm,l40s] [--window SECONDS] [--workers N]
        [--per-round K] [--tolerance 0.02]

``NAME@N`` in --schedulers runs scheduler NAME with a token budget
(max_num_batched_tokens) of N instead of the device's vLLM default, e.g. ``sarathi@512``
(Sarathi-Serve's small-chunk setting). Schedulers not registered in
``infersim.simulator.SCHEDULERS`` are skipped with a note.
Writes benchmarks/results/capacity_devices.md.
"""

from __future__ import annotations

import argparse
import math
import os
import time

from _common import DATA, machine, require, write

TRACE = DATA / "traces" / "azure2023_conv.csv"
SLO = {"ttft_ms": 500.0, "tpot_ms": 50.0}
ATTAINMENT = 0.9
MODEL = "llama-3.1-8b"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedulers", default="vllm_v1,sarathi",
                        help="comma-separated names; NAME@N sets its token budget "
                        "(max_num_batched_tokens) to N, e.g. sarathi@512")
    parser.add_argument("--devices", default="h100-sxm,a100-80gb-sxm,l40s")
    parser.add_argument("--window", type=float, default=None,
                        help="replay only the trace's first SECONDS (before scaling)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-round", type=int, default=2,
                        help="rates per round (fixed, so results do not depend on --workers)")
    parser.add_argument("--tolerance", type=float, default=0.02)
    args = parser.parse_args()

    from infersim.capacity import find_capacity
    from infersim.simulator import SCHEDULERS, SimConfig

    require(TRACE)
    schedulers, notes = [], []
    for entry in (s.strip() for s in args.schedulers.split(",") if s.strip()):
        name, _, budget = entry.partition("@")
        if name in SCHEDULERS:
            schedulers.append((entry, name, int(budget) if budget else None))
        else:
            note = (f"scheduler {name!r} is not registered (known: "
                    f"{', '.join(sorted(SCHEDULERS))}); skipped")
            print("note:", note)
            notes.append(note)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    trace: dict = {"path": str(TRACE)}
    if args.window is not None:
        trace["end_s"] = args.window

    rows = []
    started = time.perf_counter()
    for device in devices:
        for scheduler, name, budget in schedulers:
            engine = {"name": name}
            if budget is not None:
                engine["max_num_batched_tokens"] = budget
            cfg = SimConfig.from_dict({"model": MODEL, "device": device, "scheduler": engine,
                                       "workload": {"trace": trace}, "slo": SLO, "seed": 0})
            r = find_capacity(cfg, SLO, ATTAINMENT, "percentile", tolerance=args.tolerance,
                              workers=args.workers, per_round=args.per_round)
            best = r.best
            rows.append({"device": device, "scheduler": scheduler, "result": r, "best": best})
            rate = f"{r.max_rate:.3g} req/s" if r.max_rate > 0 else "none"
            print(f"{device:>14} {scheduler:>8}: max rate {rate}, "
                  f"{r.usd_per_million_output_tokens:.3g} USD/M output tokens, "
                  f"{len(r.probes)} probes, {r.wall_s:.0f} s", flush=True)
            for note in r.notes[:-1]:  # the last note is the price grade, said once below
                print("   note:", note)
                notes.append(f"{device} / {scheduler}: {note}")
    wall = time.perf_counter() - started

    first = rows[0]["result"] if rows else None
    requests = int(first.probes["num_requests"].iloc[0]) if first is not None else 0
    window = (f"its first {args.window:g} s" if args.window is not None
              else "the whole trace")
    lines = [
        "# Capacity and cost per million tokens by device and scheduler",
        "",
        f"machine: {machine()}; `python benchmarks/capacity_devices.py --schedulers "
        f"{args.schedulers} --devices {args.devices}"
        + (f" --window {args.window:g}" if args.window is not None else "")
        + f" --workers {args.workers} --per-round {args.per_round}`; total wall time "
        f"{wall:,.0f} s",
        "",
        f"Workload: Azure LLM inference trace 2023, conversation service ({window}, "
        f"{requests:,} requests), replayed with trace.rate_scale (rate = requests / arrival "
        f"span); lengths from the trace. Model {MODEL} (bf16), one device, one replica, "
        "vLLM V1 engine limits for the device (NAME@N: token budget N). SLO: TTFT p90 "
        "<= 500 ms and TPOT p90 <= 50 ms (percentile mode, over all requests, unfinished "
        "ones count as misses); search "
        f"tolerance {args.tolerance:g} (relative), {args.per_round} rates per round, seed 0.",
        "",
        "| device | scheduler | max rate (req/s) | rate_scale | TTFT p90 (ms) | TPOT p90 (ms) "
        "| output tok/s | USD/h | USD per M output tokens | USD per M tokens | probes "
        "| wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r, b = row["result"], row["best"]
        if b is None:
            lines.append(f"| {row['device']} | {row['scheduler']} | 0 | - | - | - | - | "
                         f"{r.price.usd_per_hour:.2f} | - | - | {len(r.probes)} | "
                         f"{r.wall_s:.0f} |")
            continue
        bracket = "" if r.converged else " (not converged)"
        lines.append(
            f"| {row['device']} | {row['scheduler']} | {r.max_rate:.3g}{bracket} | "
            f"{r.max_rate_scale:.3g} | {b['ttft_ms']:,.0f} | {b['tpot_ms']:.1f} | "
            f"{r.output_tokens_per_s:,.0f} | {r.price.usd_per_hour:.2f} | "
            f"{r.usd_per_million_output_tokens:.3f} | {r.usd_per_million_tokens:.4f} | "
            f"{len(r.probes)} | {r.wall_s:.0f} |")
    lines += [
        "",
        "Cost per million tokens = USD/h / (max rate x mean tokens per request x 3600) x 1e6: "
        "the device kept busy at exactly the max rate. Output tokens per request average "
        + (f"{first.best['mean_output_tokens']:.0f}" if first is not None
           and first.best is not None else "-")
        + ", input + output " + (f"{first.best['mean_total_tokens']:.0f}" if first is not None
                                 and first.best is not None else "-") + ".",
        "",
        "Caveats: prices per device-hour are catalog assumptions (grade D, typical 2025 "
        "on-demand cloud prices); step times come from the roofline cost model with default "
        "(uncalibrated) efficiencies for these devices, so the lowest grade of every number "
        f"here is {first.lowest_grade if first is not None else 'D'}. The search assumes "
        "that meeting the SLOs at a rate implies meeting them at every lower rate; probes "
        "that contradict this are listed below.",
    ]
    for device in devices:  # say when two schedulers behaved identically
        same = [row for row in rows if row["device"] == device]
        for i, a in enumerate(same):
            for b in same[i + 1:]:
                cols = ["rate", "passed", "ttft_ms", "tpot_ms"]
                if a["result"].probes[cols].equals(b["result"].probes[cols]):
                    notes.append(f"{device}: {a['scheduler']} and {b['scheduler']} produced "
                                 "identical probes (same token budget and, under FCFS, the "
                                 "same batches)")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Probes in the order run (rate in req/s):", ""]
    for row in rows:
        r = row["result"]
        probes = ", ".join(
            f"{p.rate:.4g}{'+' if p.passed else '-'}" for p in r.probes.itertuples())
        lines.append(f"- {row['device']} / {row['scheduler']}: {probes} (+ pass, - fail)")
    path = write("capacity_devices.md", "\n".join(lines) + "\n")
    print(f"wrote {path} ({wall:,.0f} s)")
    if any(math.isinf(row["result"].hi_rate) for row in rows):
        print("warning: some searches found no failing rate")


if __name__ == "__main__":
    main()
