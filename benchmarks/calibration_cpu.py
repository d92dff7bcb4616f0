"""Calibrate this machine's CPU with PyTorch and check it on held-out shapes and real steps.

1. `infersim calibrate local-device`: this CPU as a device (measured peak GEMM rate and
   bandwidths, grade A; efficiencies at the CPU family defaults).
2. `infersim calibrate run --backend torch`: Llama-3.2-1B's layer kernels (GEMMs at TP 1/2/4,
   SDPA attention prefill and decode on a KV cache, norms) over the full CPU grid.
3. `infersim calibrate fit` split by shape (every 3rd size held out) -> calibrated device;
   targets: GEMM MAPE <= 10%, attention <= 20% on held-out shapes.
4. `infersim run` of 30 requests on the calibrated device, then `infersim calibrate replay`
   of up to 40 of its steps on a real 2-layer Llama-3.2-1B stack; target: step time MAPE
   <= 15%.

Timings on a shared machine are only as good as the machine is quiet: the script waits (up
to --wait seconds) for the 1-minute load average to fall below --quiet, and reports the load
before and after. Files go to benchmarks/results/calibration_cpu/ (profile, device files,
replayed steps); the table to benchmarks/results/calibration_cpu.md.

Usage: python benchmarks/calibration_cpu.py [--quick] [--wait 900] [--max-steps 40]
"""

from __future__ import annotations

import argparse
import os
import time

from _common import RESULTS, fitted_table, machine, write

from infersim.calibration import (
    evaluate,
    fit_device,
    local_cpu_device,
    make_split,
    read_profile,
    replay,
    report,
    run_profile,
    summarize,
    write_device,
    write_profile,
    write_report,
)
from infersim.calibration.replay import predict_replayed
from infersim.hardware import load_device_file
from infersim.models import get_model

MODEL = "llama-3.2-1b"


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    start = time.time()
    while os.getloadavg()[0] > threshold and time.time() - start < max_wait:
        time.sleep(10)
    return time.time() - start


def rows(summary, label: str) -> list[str]:
    return [f"| {label} | {r.op_class} | {r.set} | {r.kernels} | {r.mape:.1%} | "
            f"{r.median_ape:.1%} | {r.worst:+.1%} |" for r in summary.itertuples()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick kernel grid")
    parser.add_argument("--wait", type=float, default=900, help="seconds to wait for quiet")
    parser.add_argument("--quiet", type=float, default=0.6, help="load average counted quiet")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads")
    parser.add_argument("--clock", default="wall", help="wall, or cpu (with --threads 1)")
    parser.add_argument("--name", default="calibration_cpu", help="results file/folder name")
    parser.add_argument("--require-quiet", action="store_true",
                        help="exit without measuring when the machine does not get quiet")
    args = parser.parse_args()
    timing = {"threads": args.threads, "clock": args.clock}
    out = RESULTS / args.name
    waited = wait_for_quiet(args.quiet, args.wait)
    load_before = os.getloadavg()
    if args.require_quiet and load_before[0] > args.quiet:
        print(f"skipped: load average {load_before[0]:.2f} stayed above {args.quiet} for "
              f"{waited:.0f} s")
        return
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    base = local_cpu_device(threads=args.threads, clock=args.clock)
    write_device(base, out / "local-cpu.yaml", "Built by `infersim calibrate local-device`.")
    model = get_model(MODEL)
    t0 = time.perf_counter()
    profile = run_profile(model, "local-cpu", "torch", quick=args.quick, **timing)
    t_profile = time.perf_counter() - t0
    profile_path = write_profile(profile, out / "profile-torch.csv")
    profile = read_profile(profile_path)
    rel_profile = profile_path.relative_to(RESULTS.parents[1])
    split = make_split(profile)
    fit = fit_device(profile, base, rel_profile, split)
    fit.write(out / "local-cpu-calibrated.yaml")
    calibrated = load_device_file(out / "local-cpu-calibrated.yaml")
    write_report(report(profile_path, calibrated), out / "report")  # plot, per-kernel errors
    uncal = summarize(evaluate(profile, base, split))

    # a short run on the calibrated device, then its steps on real kernels
    from infersim.simulator import SimConfig, simulate
    from infersim.simulator.output import write_result

    cfg = SimConfig.from_dict({
        "model": MODEL, "device": None, "device_file": str(out / "local-cpu-calibrated.yaml"),
        "scheduler": {"max_num_seqs": 16, "max_num_batched_tokens": 512},
        "workload": {"arrival": {"process": "poisson", "rate": 2.0},
                     "prompt": {"dist": "lognormal", "mean": 300, "cv": 0.8, "max": 1024},
                     "output": {"dist": "lognormal", "mean": 64, "cv": 0.8, "max": 200},
                     "num_requests": args.requests},
        "seed": 0,
    })
    result = simulate(cfg)
    write_result(result, out / "run", plot=False)
    t0 = time.perf_counter()
    rep = replay(out / "run" / "steps.csv", calibrated, max_steps=args.max_steps, **timing)
    t_replay = time.perf_counter() - t0
    steps = rep.steps
    steps["predicted_uncalibrated_s"] = predict_replayed(steps, base, model)
    steps.to_csv(out / "replay.csv", index=False)
    err_u = steps["predicted_uncalibrated_s"] / steps["measured_s"] - 1
    load_after = os.getloadavg()

    held = fit.summary.set_index(["op_class", "set"])
    s = rep.summary
    lines = [
        "# Calibration of this machine's CPU (PyTorch), held-out kernels and step replay",
        "",
        f"Machine: {machine()}; {s['threads']} PyTorch thread(s), torch {s['torch']}, "
        f"{s['clock']} clock. Load average "
        f"(1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}"
        f" (waited {waited:.0f} s for < {args.quiet}), after {load_after[0]:.2f}/"
        f"{load_after[1]:.2f}/{load_after[2]:.2f}. Command: `python "
        f"benchmarks/calibration_cpu.py{' --quick' if args.quick else ''}"
        f"{f' --threads {args.threads}' if args.threads else ''}"
        f"{f' --clock {args.clock}' if args.clock != 'wall' else ''}"
        f"{f' --name {args.name}' if args.name != 'calibration_cpu' else ''}`. Files: "
        f"benchmarks/results/{args.name}/.",
        "",
        f"Profile: {len(profile)} kernels of {MODEL} ({'quick' if args.quick else 'full'} "
        f"grid, bf16, torch-cpu) in {t_profile:.0f} s. Split: {split.describe()}.",
        "",
        "Local device (measured, grade A): " + ", ".join(
            f"peak {d} {q.value:g} {q.unit}" for d, q in base.peak_flops.items()) + "; " +
        ", ".join(f"{t.name} {t.bandwidth.value:g} {t.bandwidth.unit}" for t in base.memory)
        + ".",
        "",
        "## Fitted parameters",
        "",
        *fitted_table(fit.fitted, base, "CPU family default"),
    ]
    lines += [
        "",
        "## Kernel errors (predicted / measured - 1)",
        "",
        "| parameters | op class | set | kernels | MAPE | median APE | worst |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += rows(uncal, "CPU family defaults")
    lines += rows(fit.summary, "fitted")
    lines += [
        "",
        "## Step replay",
        "",
        f"{s['steps']} steps of a {args.requests}-request run (max_num_seqs 16, max batched "
        f"tokens 512) replayed on {s['layers_run']} of {s['num_layers']} layers "
        f"(median of {s['repeats']}), scaled, plus embedding and LM head; compared with the "
        "forward part of the prediction (engine step/sequence overheads excluded) in "
        f"{t_replay:.0f} s.",
        "",
        "| prediction | step MAPE | median APE | worst |",
        "|---|---|---|---|",
        f"| CPU family defaults | {err_u.abs().mean():.1%} | {err_u.abs().median():.1%} | "
        f"{err_u.iloc[int(err_u.abs().argmax())]:+.1%} |",
        f"| calibrated | {s['mape']:.1%} | {s['median_ape']:.1%} | {s['worst']:+.1%} |",
        "",
        "## Targets",
        "",
        f"- GEMM held-out MAPE **{held.loc[('gemm', 'held-out'), 'mape']:.1%}** (<= 10%), "
        f"attention held-out MAPE **{held.loc[('attention', 'held-out'), 'mape']:.1%}** "
        "(<= 20%).",
        f"- Step replay MAPE **{s['mape']:.1%}** (<= 15%).",
        "",
        f"Wall time {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print("wrote", write(f"{args.name}.md", text))


if __name__ == "__main__":
    main()
