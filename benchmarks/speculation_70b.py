"""What-if: Llama-3.1-70B on 4 x H100 (TP4) with a Llama-3.2-1B draft model.

One replica, vLLM V1 defaults, Poisson arrivals of chat-like requests at 1, 8 and 32 req/s
(one replica serves roughly 7 req/s of these; 32 is far past saturation), per-token acceptance
a in {0.6, 0.8}. For each: TPOT and output throughput without speculation, with a fixed
K = 4 and with the load-aware policy (K = 0..8 every step), and the K the policy chose.
The drafter runs tensor parallel on the target's four GPUs (vLLM's default), so its passes
take turns with the verify and its weights and KV cache take room from the target's.

    python benchmarks/speculation_70b.py [--requests 1500]

Writes ``benchmarks/results/speculation_70b.md``.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from _common import machine, write

from infersim.simulator import SimConfig, simulate

RATES = (1, 8, 32)
ACCEPTANCE = (0.6, 0.8)
FIXED_K, MAX_K = 4, 8


def run(rate: float, requests: int, speculation: dict | None) -> dict:
    data = {"model": "llama-3.1-70b", "device": "h100-sxm", "placement": {"tp": 4},
            "seed": 0, "record_steps": False,
            "workload": {"arrival": {"process": "poisson", "rate": rate},
                         "num_requests": requests}}
    if speculation:
        data["speculation"] = {"method": "draft_model", "draft_model": "llama-3.2-1b",
                               **speculation}
    return simulate(SimConfig.from_dict(data)).summary


def k_distribution(counts: dict[str, int], least: float = 0.05) -> str:
    """Shares of the decodes with each K, those of at least ``least``."""
    total = sum(counts.values())
    return ", ".join(f"K={k}: {c / total:.0%}" for k, c in
                     sorted(counts.items(), key=lambda kv: int(kv[0])) if c >= least * total)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = ["# What-if: Llama-3.1-70B (TP4, H100) with a Llama-3.2-1B drafter", "",
             f"One replica of Llama-3.1-70B on 4 x H100 SXM (TP4, NVLink 4), vLLM V1 "
             f"defaults; draft model Llama-3.2-1B on the same four GPUs (TP4); Poisson "
             f"arrivals, chat lengths (prompt mean 1155, output mean 211), {args.requests} "
             f"requests per run, seed 0. Fixed: K = {FIXED_K}; load-aware: K in 0..{MAX_K} "
             "chosen every step for the batch (SmartSpec style). TPOT: mean over requests; "
             "tok/s: output throughput; speedup: plain TPOT / speculative TPOT. Costs come "
             "from the roofline cost model (lowest input grade D: uncalibrated efficiencies).",
             "", f"`python benchmarks/speculation_70b.py --requests {args.requests}`; "
             f"{machine()}; {datetime.now(UTC):%Y-%m-%d}", "",
             "| rate req/s | a | plain TPOT ms | fixed TPOT ms | load-aware TPOT ms | fixed "
             "speedup | load-aware speedup | plain tok/s | fixed tok/s | load-aware tok/s | "
             "load-aware mean K | load-aware K distribution | tokens/verify (LA) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for rate in RATES:
        plain = run(rate, args.requests, None)
        for a in ACCEPTANCE:
            fixed = run(rate, args.requests, {"k": FIXED_K, "acceptance": a})
            smart = run(rate, args.requests, {"k": MAX_K, "acceptance": a,
                                              "policy": "load_aware"})
            p, f, s = (x["mean_tpot_ms"] for x in (plain, fixed, smart))
            sp = smart["speculation"]
            lines.append(
                f"| {rate} | {a} | {p:.1f} | {f:.1f} | {s:.1f} | {p / f:.2f} | {p / s:.2f} | "
                f"{plain['output_throughput']:,.0f} | {fixed['output_throughput']:,.0f} | "
                f"{smart['output_throughput']:,.0f} | {sp['mean_k']:.2f} | "
                f"{k_distribution(sp['k_counts'])} | {sp['mean_accepted_length']:.2f} |")
            print(lines[-1], flush=True)
    lines += ["", "K distribution: shares (>= 5%) of all decodes of all steps with each K "
              "(K = 0: a plain decode); a few K below the policy's choice are requests within "
              "K tokens of their end. tokens/verify: mean tokens a verify emitted (accepted "
              "+ 1).",
              "", f"wall time {time.perf_counter() - started:.0f} s", ""]
    print(f"written to {write('speculation_70b.md', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
