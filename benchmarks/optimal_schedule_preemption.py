"""Does preemption lower the optimal cost? The INFERMAX question on our cost model.

Instances (Llama-3.1-8B on one H100, 512-token budget, 16-token KV blocks), each written as
a trace (``benchmarks/optimal_schedule_<name>.csv``, splitwise columns) with its config
(``benchmarks/optimal_schedule_<name>.yaml``) so every cell is one CLI command:

- ``pair``: two long requests (prompt 16, 64 output tokens) on 7 KV blocks: each fits
  alone, both do not fit at their peaks. The smallest case where recompute preemption pays.
- ``bimodal``: a burst of 16 requests, 12 short (outputs U[2, 8]) and 4 long (outputs
  U[40, 56]), prompts U[16, 48], on 14 blocks: at most two long ones fit at their peaks.
- ``bimodal-arrivals``: the same requests, the long ones first and the short ones arriving
  later (Poisson), objective latency.

For each, the optimum with preemption (recompute) allowed and not, and vllm_v1 (which
preempts when the cache runs out) next to both. CP-SAT, 2 workers, seed 0; the solve with
preemption is warm-started from the optimum without it. Writes
``benchmarks/results/optimal_schedule_preemption.md`` and a PNG.

    python benchmarks/optimal_schedule_preemption.py [--quick] [--time-limit S]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import RESULTS, ROOT, machine, write

from infersim.optimizer.schedule import optimize_schedule
from infersim.simulator import SimConfig

BENCH = ROOT / "benchmarks"


def requests(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival s, prompt, output) of an instance (seeded, so the files are reproducible)."""
    if name == "pair":
        return np.zeros(2), np.array([16, 16]), np.array([64, 64])
    rng = np.random.default_rng(7)
    n_short, n_long = 12, 4
    prompt = rng.integers(16, 49, n_short + n_long)
    output = np.concatenate([rng.integers(40, 57, n_long), rng.integers(2, 9, n_short)])
    arrival = np.zeros(n_short + n_long)
    if name == "bimodal-arrivals":  # long ones at 0, short ones later (Poisson, 100/s)
        arrival[n_long:] = 0.05 + np.cumsum(rng.exponential(0.01, n_short))
    return arrival, prompt, output


BLOCKS = {"pair": 7, "bimodal": 14, "bimodal-arrivals": 14}
OBJECTIVES = {"pair": ("cost", "latency"), "bimodal": ("cost",),
              "bimodal-arrivals": ("latency",)}


def write_instance(name: str) -> tuple[str, SimConfig]:
    """Write the trace and config of an instance; (config path, config)."""
    arrival, prompt, output = requests(name)
    csv = BENCH / f"optimal_schedule_{name}.csv"
    rows = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
    rows += [f"{a:.6f},{p},{o}" for a, p, o in zip(arrival, prompt, output, strict=True)]
    csv.write_text("\n".join(rows) + "\n")
    yaml = BENCH / f"optimal_schedule_{name}.yaml"
    yaml.write_text(
        f"# Preemption study instance '{name}' (written by "
        "benchmarks/optimal_schedule_preemption.py)\n"
        "model: llama-3.1-8b\ndevice: h100-sxm\n"
        "scheduler:\n  name: vllm_v1\n  max_num_batched_tokens: 512\n  max_num_seqs: 256\n"
        f"  num_gpu_blocks: {BLOCKS[name]}\n  enable_prefix_caching: false\n"
        f"workload:\n  trace: {{path: optimal_schedule_{name}.csv, format: splitwise}}\n"
        "seed: 0\n")
    return f"benchmarks/optimal_schedule_{name}.yaml", SimConfig.load(yaml)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--time-limit", type=float, default=90.0)
    args = ap.parse_args()
    limit = 10.0 if args.quick else args.time_limit
    rows = []
    for name in BLOCKS:
        path, cfg = write_instance(name)
        for objective in OBJECTIVES[name]:
            out = {}
            for mode in (False, True):
                starts = [("optimum without preemption", out[False].solution.schedule)] \
                    if mode else None  # a schedule without preemption is one with it
                rep = optimize_schedule(cfg, None, objective, preemption=mode,
                                        time_limit_s=limit, seed=0, warm_starts=starts)
                out[mode] = rep
                print(f"{name} {objective} preemption {'on' if mode else 'off'}: "
                      f"{rep.result.summary()}; realised {rep.optimum:.6g}", flush=True)
            rows.append((name, path, objective, out[False], out[True]))

    lines = [
        "# Optimal schedules with and without preemption",
        "",
        f"Machine: {machine()}. Llama-3.1-8B on one H100, 512-token budget, 16-token KV "
        f"blocks. CP-SAT {limit:g} s per solve, 2 workers, seed 0; the solve with preemption "
        "is warm-started from the optimum without it. Instances (see the script's "
        "docstring): `pair` = 2 requests (prompt 16, output 64) on 7 blocks; `bimodal` = a "
        "burst of 12 short (outputs 2-8) and 4 long (outputs 40-56) requests on 14 blocks; "
        "`bimodal-arrivals` = the same with the long ones at 0 and the short ones arriving "
        "from 50 ms on.",
        "",
        "Values under the step envelope (the model's own objective; cost in device-ms, "
        "latency = sum of end-to-end latencies in ms); the cost model's value of the replayed "
        "optimum in parentheses. An optimum not proven is an interval [bound, incumbent]. "
        "The saving is 1 - (optimum with) / (optimum without), as an interval when either "
        "is one.",
        "",
        "| instance | objective | optimum, no preemption | optimum, preemption | "
        "preemptions in it | saved by preemption | vllm_v1 (preemptions) | vllm_v1 above "
        "optimum, no preemption | vllm_v1 above optimum, preemption |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _path, objective, off, on in rows:
        v1 = next(r for r in off.runs if r.name == "vllm_v1")
        a, b = off.result.bound, off.result.incumbent
        c, d = on.result.bound, on.result.incumbent
        save_lo, save_hi = max(0.0, 1 - d / a), max(0.0, 1 - c / b)
        v = v1.value_linearized
        lines.append(
            f"| {name} | {objective} | {_interval(a, b)} ({off.optimum * 1e3:.1f}) | "
            f"{_interval(c, d)} ({on.optimum * 1e3:.1f}) | "
            f"{on.solution.trace.preemptions} | {_pct_range(save_lo, save_hi)} | "
            f"{v * 1e3:.1f} ({v1.preemptions}) | {_pct_range(v / b - 1, v / a - 1)} | "
            f"{_pct_range(v / d - 1, v / c - 1)} |")
    lines += ["", "Commands (one cell each; `--preemption off` for the other column):", ""]
    lines += [f"    infersim optimize schedule --config {path} --objective {objective} "
              f"--preemption on --time-limit {limit:g}" for _n, path, objective, *_ in rows]
    lines.append("")
    write("optimal_schedule_preemption.md", "\n".join(lines))
    _plot(rows)
    print("\n".join(lines))


def _interval(lo: float, hi: float) -> str:
    if hi - lo <= 1e-4 * hi:
        return f"{hi * 1e3:.1f} (optimal)"
    return f"[{lo * 1e3:.1f}, {hi * 1e3:.1f}]"


def _pct_range(lo: float, hi: float) -> str:
    if abs(hi - lo) < 5e-4:
        return f"{hi:+.1%}"
    return f"{lo:+.1%} to {hi:+.1%}"


def _plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.27
    labels = []
    for i, (name, _path, objective, off, on) in enumerate(rows):
        v1 = next(r for r in off.runs if r.name == "vllm_v1")
        base = off.result.incumbent
        vals = [(off.result.bound, off.result.incumbent), (on.result.bound, on.result.incumbent),
                (v1.value_linearized, v1.value_linearized)]
        for j, ((lo, hi), label) in enumerate(zip(vals, ("optimum, no preemption",
                                                          "optimum, preemption", "vllm_v1"),
                                                   strict=True)):
            ax.bar(i + (j - 1) * width, hi / base, width, color=f"C{j}",
                   label=label if i == 0 else None)
            if hi - lo > 1e-4 * hi:  # the proven range of an optimum not proven
                ax.plot([i + (j - 1) * width] * 2, [lo / base, hi / base], color="k", lw=2)
        labels.append(f"{name}\n{objective}")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("relative to the optimum\nwithout preemption")
    ax.legend(fontsize=7)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "optimal_schedule_preemption.png", dpi=120)


if __name__ == "__main__":
    main()
