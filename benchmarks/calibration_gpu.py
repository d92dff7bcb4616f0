"""Calibrate a CUDA GPU with PyTorch: held-out kernel error and real-kernel step replay.

Two phases, so that only the first needs the GPU:

``measure`` (on the GPU; writes everything measured to --dir):
1. `calibrate run`'s CUDA runner over the full GPU grid for three models: Llama-3.1-8B
   (TP 1/2/4/8 shapes), Qwen3-32B (TP 1/2/4) and Phi-2 (TP 1/2; ungated GELU MLP, the
   model held out). Per-rank shapes of a TP split are timed on the one GPU.
2. A 200-request serving run of Llama-3.1-8B on the catalog device, and `calibrate replay`
   of up to --max-steps of its steps on a real 4-layer stack (measured forward times).
3. The optimum of the 30-request burst (`benchmarks/optimal_schedule_burst.yaml`, cost
   objective) replayed through the simulator, and its steps on the same real stack: what
   the schedule optimizer's step times are worth on the hardware.

``report`` (anywhere; reads --dir): fits the catalog device's efficiencies split by model
(Phi-2 held out) and by shape (every 3rd size), reports held-out MAPE per op class against
the uncalibrated catalog parameters and, when ../shared/data is here, against the A100 fit
of Vidur's tables transferred to this GPU's datasheet (`calibrate transfer`); re-predicts
the replayed steps with each device. Table: benchmarks/results/<name>.md.

Usage (``--clock graph``: each case or step captured in a CUDA graph, the GPU's own time;
``--clock wall``: eager launches; files are suffixed with the clock):
    python benchmarks/calibration_gpu.py measure [--clock graph|wall] [--dir D] [--quick]
    python benchmarks/calibration_gpu.py report [--dir D]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from _common import DATA, RESULTS, ROOT, fitted_table, write

from infersim.calibration import (
    evaluate,
    fit_device,
    import_tables,
    make_split,
    read_profile,
    replay,
    run_profile,
    summarize,
    transfer,
    write_device,
    write_profile,
)
from infersim.calibration.replay import predict_replayed
from infersim.hardware import get_device
from infersim.models import get_model

MODELS = {"llama-3.1-8b": (1, 2, 4, 8), "qwen3-32b": (1, 2, 4), "phi-2": (1, 2)}
REPLAY_MODEL = "llama-3.1-8b"
CATALOG = {"H100": "h100-sxm", "H200": "h200", "A100": "a100-80gb-sxm", "A40": "a40",
           "L40S": "l40s", "4090": "rtx-4090"}
BURST = ROOT / "benchmarks" / "optimal_schedule_burst.yaml"


def catalog_name(hardware: str) -> str:
    for key, name in CATALOG.items():
        if key in hardware:
            return name
    raise SystemExit(f"no catalog device for GPU {hardware!r}; known: {', '.join(CATALOG)}")


def serving_run(base: str, out: Path) -> Path:
    from infersim.simulator import SimConfig, simulate
    from infersim.simulator.output import write_result

    cfg = SimConfig.from_dict({
        "model": REPLAY_MODEL, "device": base,
        "scheduler": {"max_num_seqs": 128, "max_num_batched_tokens": 2048},
        "workload": {"arrival": {"process": "poisson", "rate": 6.0},
                     "prompt": {"dist": "lognormal", "mean": 600, "cv": 1.0, "max": 4096},
                     "output": {"dist": "lognormal", "mean": 150, "cv": 1.0, "max": 1024},
                     "num_requests": 200},
        "seed": 0,
    })
    write_result(simulate(cfg), out, plot=False)
    return out / "steps.csv"


def burst_runs(base: str, out: Path, seconds: float, workers: int) -> dict:
    """The cost optimum of the 30-request burst and vllm_v1's schedule of it, each replayed
    through the simulator: {label: (steps.csv, facts)}."""
    from infersim.optimizer.schedule.study import instance_from_config, optimize_schedule
    from infersim.optimizer.schedule.study import replay as replay_schedule
    from infersim.simulator.output import write_result

    rep = optimize_schedule(BURST, 30, "cost", time_limit_s=seconds, num_workers=workers,
                            overrides=[f"device={base}"])
    _inst, cost, table = instance_from_config(rep.config, 30)
    v1 = next(r for r in rep.runs if r.name == "vllm_v1")
    runs = {}
    for label, schedule, facts in (
            ("optimum", rep.solution.schedule,
             {"status": rep.result.status, "incumbent": rep.result.incumbent,
              "bound": rep.result.bound, "cost_model": rep.optimum}),
            ("vllm_v1", v1.schedule, {"cost_model": v1.value})):
        write_result(replay_schedule(rep.config, table, schedule, cost), out / label,
                     plot=False)
        runs[label] = (out / label / "steps.csv", facts)
    return runs


def measure(args) -> None:
    import torch

    out = args.dir
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.torch_device == "cuda"
    hardware = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    base = args.base or catalog_name(hardware)
    info: dict = {"hardware": hardware, "base": base, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "quick": args.quick, "clock": args.clock}
    tag = args.clock
    frames = []
    for name, tps in MODELS.items():
        t0 = time.perf_counter()
        frames.append(run_profile(get_model(name), base, "torch", quick=args.quick, tps=tps,
                                  device=args.torch_device, clock=args.clock))
        info[f"profile_s {name}"] = round(time.perf_counter() - t0, 1)
        print(f"profiled {name}: {len(frames[-1])} kernels in {info[f'profile_s {name}']} s",
              flush=True)
        write_profile(pd.concat(frames, ignore_index=True), out / f"profile-{tag}.csv")
    device = get_device(base)
    runs = {"serving": (serving_run(base, out / "serving"), {})}
    if args.optimum_seconds > 0:
        runs.update(burst_runs(base, out / "burst", args.optimum_seconds, args.workers))
    for label, (steps, extra) in runs.items():
        t0 = time.perf_counter()
        every = label != "serving"  # a burst's schedules are replayed whole
        rep = replay(steps, device, max_steps=10**6 if every else args.max_steps,
                     layers=args.layers,
                     repeats=5, torch_device=args.torch_device, clock=args.clock)
        rep.steps.to_csv(out / f"replay-{label}-{tag}.csv", index=False)
        info[f"replay {label}"] = {**rep.summary, **extra,
                                   "seconds": round(time.perf_counter() - t0, 1)}
        print(f"replayed {label}: {rep.summary['steps']} steps, catalog MAPE "
              f"{rep.summary['mape']:.1%}", flush=True)
    (out / f"measure-{tag}.json").write_text(json.dumps(info, indent=1, default=str) + "\n")


# --- report ------------------------------------------------------------------------------------
def error_rows(summary: pd.DataFrame, label: str) -> list[str]:
    return [f"| {label} | {r.op_class} | {r.set} | {r.kernels} | {r.mape:.1%} | "
            f"{r.median_ape:.1%} | {r.worst:+.1%} |" for r in summary.itertuples()]


def a100_transfer(base):
    """The A100 fit of Vidur's tables (held out by model) on ``base``'s datasheet, or None
    when the shared data is not here."""
    kernels = DATA / "kernels"
    if not kernels.exists():
        return None
    a100 = import_tables(kernels, "a100")
    fit = fit_device(a100, get_device("a100-80gb-sxm"), "vidur-a100", make_split(a100))
    return transfer(fit.device, base)


def predicted_forwards(steps: pd.DataFrame, device) -> pd.Series:
    """``device``'s forward time of each replayed step."""
    return pd.Series(predict_replayed(steps, device, REPLAY_MODEL), index=steps.index)


def burst_rows(src: Path, tag: str, info: dict, devices: dict) -> list[str]:
    """The burst's cost optimum against vllm_v1 on the same requests: what the cost model
    says each schedule's steps take, and what they took on the GPU."""
    got = {label: pd.read_csv(src / f"replay-{label}-{tag}.csv")
           for label in ("optimum", "vllm_v1") if (src / f"replay-{label}-{tag}.csv").exists()}
    if len(got) < 2:
        return []
    opt = info["replay optimum"]
    lines = ["", "### The schedule optimizer's cost optimum against vllm_v1, on the GPU", "",
             f"The 30-request burst of `benchmarks/optimal_schedule_burst.yaml` on the catalog "
             f"{info['base']}, cost objective: CP-SAT {opt['status']}, {opt['incumbent']:.6g} "
             f"device-s (bound {opt['bound']:.6g}) under the step envelope. Each schedule's "
             "steps replayed through the simulator, then on the GPU (forward of every step, "
             "summed).", "",
             "| schedule | steps | cost model: device-s | " + " | ".join(
                 f"{d}: forward ms" for d in devices) + " | measured forward ms |",
             "|---|---|---|" + "---|" * (len(devices) + 1)]
    sums = {}
    for label, steps in got.items():
        predicted = [predicted_forwards(steps, dev).sum() for dev in devices.values()]
        sums[label] = [*predicted, steps["measured_s"].sum()]
        lines.append(f"| {label} | {len(steps)} | "
                     f"{info[f'replay {label}']['cost_model']:.6g} | "
                     + " | ".join(f"{v * 1e3:.2f}" for v in sums[label]) + " |")
    ratio = [v / o for v, o in zip(sums["vllm_v1"], sums["optimum"], strict=True)]
    model_ratio = info["replay vllm_v1"]["cost_model"] / opt["cost_model"]
    lines.append(f"| vllm_v1 / optimum | | {model_ratio:.3f} | "
                 + " | ".join(f"{r:.3f}" for r in ratio) + " |")
    return lines


CLOCK_WORDS = {"graph": "each case or step captured in a CUDA graph, CUDA events around "
                        "its replay (GPU time, no launch cost)",
               "wall": "CUDA events around eager launches (small kernels are launch-bound)"}


def clock_section(src: Path, tag: str) -> list[str]:
    """Fits, kernel errors and step replay of the measurements taken with clock ``tag``."""
    info = json.loads((src / f"measure-{tag}.json").read_text())
    profile_path = src / f"profile-{tag}.csv"
    profile = read_profile(profile_path)
    base = get_device(info["base"])
    rel = profile_path.relative_to(ROOT) if profile_path.is_relative_to(ROOT) else profile_path
    devices = {"catalog " + base.name: base}
    lines = [f"## Clock `{tag}`: {CLOCK_WORDS[tag]}", "",
             f"{info['hardware']}, torch {info['torch']}, CUDA {info['cuda']}, bf16. Measured "
             f"with `python benchmarks/calibration_gpu.py measure --clock {tag}`. Profile "
             f"{rel}: {len(profile)} kernels: " + ", ".join(
                 f"{m} ({(profile['model'] == m).sum()}, TP {'/'.join(map(str, t))})"
                 for m, t in MODELS.items()) + ".", ""]
    tables = []
    for kind in ("model", "shape"):
        split = make_split(profile, kind, holdout=("phi-2",) if kind == "model" else None)
        fit = fit_device(profile, base, rel, split)
        if kind == "model":
            write_device(fit.device, src / f"{base.name}-{tag}.yaml", fit.header)
            devices[f"fitted without {', '.join(split.holdout)}"] = fit.device
        lines += [f"### Fit split {split.describe()}", "",
                  *fitted_table(fit.fitted, base, "catalog default"), ""]
        tables += [f"**Split {split.describe()}**", "",
                   "| parameters | op class | set | kernels | MAPE | median APE | worst |",
                   "|---|---|---|---|---|---|---|",
                   *error_rows(summarize(evaluate(profile, base, split)), "catalog"),
                   *error_rows(fit.summary, "fitted"), ""]
        if kind == "model":
            moved = a100_transfer(base)
            if moved is not None:
                devices["A100 fit transferred"] = moved
                tables[-1:-1] = error_rows(summarize(evaluate(profile, moved, split)),
                                           "A100 fit transferred")
    lines += ["### Kernel errors (predicted / measured - 1)", "", *tables]
    lines += ["### Step replay", "",
              f"Forward of a real {info['replay serving']['layers_run']}-layer stack, scaled "
              "to the model's layers, plus embedding and LM head, against the predicted "
              "forward (engine step and sequence overheads excluded).", "",
              "| steps of | steps | measured total ms | " + " | ".join(
                  f"{d}: MAPE / worst" for d in devices) + " |",
              "|---|---|---|" + "---|" * len(devices)]
    for label in ("serving", "optimum", "vllm_v1"):
        path = src / f"replay-{label}-{tag}.csv"
        if not path.exists():
            continue
        steps = pd.read_csv(path)
        cells = []
        for dev in devices.values():
            e = predicted_forwards(steps, dev) / steps["measured_s"] - 1
            cells.append(f"{e.abs().mean():.1%} / {e.iloc[int(e.abs().argmax())]:+.1%}")
        lines.append(f"| {label} | {len(steps)} | {steps['measured_s'].sum() * 1e3:.2f} | "
                     + " | ".join(cells) + " |")
    lines += burst_rows(src, tag, info, devices)
    return [*lines, ""]


def report(args) -> None:
    tags = [t for t in CLOCK_WORDS if (args.dir / f"measure-{t}.json").exists()]
    if not tags:
        raise SystemExit(f"no measurements in {args.dir}: run the measure phase first")
    lines = ["# Calibration of a GPU from PyTorch CUDA kernels", "",
             "Analysed with `python benchmarks/calibration_gpu.py report` (this machine; the "
             "A100 transfer needs ../shared/data).", ""]
    for tag in tags:
        lines += clock_section(args.dir, tag)
    text = "\n".join(lines)
    print(text)
    print("wrote", write(f"{args.name}.md", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("measure", "report"))
    parser.add_argument("--dir", type=Path, default=RESULTS / "calibration_gpu")
    parser.add_argument("--name", default="calibration_gpu", help="results table name")
    parser.add_argument("--quick", action="store_true", help="the quick kernel grid")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--optimum-seconds", type=float, default=30,
                        help="time limit of the burst optimum (0: skip it)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--base", help="catalog device (default: from the GPU's name)")
    parser.add_argument("--torch-device", default="cuda", help="cuda, or cpu for a dry run")
    parser.add_argument("--clock", default="graph", help="graph (CUDA graphs) or wall (eager)")
    args = parser.parse_args()
    (measure if args.phase == "measure" else report)(args)


if __name__ == "__main__":
    main()
