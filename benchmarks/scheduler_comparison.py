"""Schedulers side by side on two synthetic workloads (Llama-3.1-8B, one H100).

- decode-heavy: short prompts (lognormal mean 300), long outputs (mean 600);
- prefill-heavy: long prompts (mean 3000), short outputs (mean 60).

Each at two loads. Sarathi-Serve's stall-free chunked prefill should give a much lower p99
inter-token latency than vLLM V0's prefill-first steps on the decode-heavy mix; on the
prefill-heavy mix V0's whole-prompt prefills favour TTFT at the price of ITL.

    python benchmarks/scheduler_comparison.py
"""

from __future__ import annotations

import time

from _common import machine, write

from infersim.simulator import SimConfig, simulate

# (name, scheduler, token budget): V0 cannot chunk, so like vLLM it needs a budget of at
# least the longest prompt (max_model_len); Sarathi-Serve is also run with its small
# chunk budget of 512 tokens
SCHEDULERS = (("static", "static", 8192), ("orca", "orca", 8192),
              ("vllm_v0", "vllm_v0", 8192), ("vllm_v1", "vllm_v1", 2048),
              ("sarathi", "sarathi", 2048), ("sarathi-512", "sarathi", 512))
WORKLOADS = {
    "decode-heavy": ({"dist": "lognormal", "mean": 300, "cv": 0.8, "max": 4096},
                     {"dist": "lognormal", "mean": 600, "cv": 0.5, "max": 2048}, (8, 16)),
    "prefill-heavy": ({"dist": "lognormal", "mean": 3000, "cv": 0.5, "max": 8000},
                      {"dist": "lognormal", "mean": 60, "cv": 0.5, "max": 500}, (8, 14)),
}


def run(workload: str, rate: float, scheduler: str, budget: int) -> dict:
    prompt, output, _ = WORKLOADS[workload]
    cfg = SimConfig.from_dict({
        "scheduler": {"name": scheduler, "max_num_batched_tokens": budget,
                      "max_num_seqs": 256},
        "workload": {"arrival": {"process": "poisson", "rate": rate}, "num_requests": 1500,
                     "prompt": prompt, "output": output},
        "record_steps": False, "seed": 1})
    return simulate(cfg).summary


def main() -> None:
    lines = ["# Schedulers compared", "", f"machine: {machine()}; Llama-3.1-8B on one H100 "
             "(default efficiencies), max_num_seqs 256, token budget per row, 1,500 Poisson "
             "requests, seed 1; `python benchmarks/scheduler_comparison.py`", ""]
    started = time.perf_counter()
    for workload, (_, _, rates) in WORKLOADS.items():
        for rate in rates:
            lines += [f"## {workload}, {rate} req/s", "",
                      "| scheduler | budget | TTFT mean (ms) | TTFT p99 | TPOT mean | "
                      "ITL p99 (ms) | E2E mean (s) | throughput (tok/s) | preemptions |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for label, name, budget in SCHEDULERS:
                s = run(workload, rate, name, budget)
                assert s["rejected"] == 0, (label, s["rejected"])
                lines.append(
                    f"| {label} | {budget} | {s['mean_ttft_ms']:,.0f} | {s['p99_ttft_ms']:,.0f} | "
                    f"{s['mean_tpot_ms']:.1f} | {s['p99_itl_ms']:.1f} | "
                    f"{s['mean_e2el_ms'] / 1e3:.2f} | {s['output_throughput']:,.0f} | "
                    f"{s['num_preemptions']} |")
                print(lines[-1], flush=True)
            lines.append("")
    lines.append(f"wall time {time.perf_counter() - started:.0f} s")
    print(f"written to {write('scheduler_comparison.md', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
