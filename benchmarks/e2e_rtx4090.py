"""Replay the real vLLM run on an RTX 4090 (../shared/data/e2e) and compare.

The run: vLLM 0.19.0, Llama-3.1-8B bf16, one RTX 4090, 300 ShareGPT requests at ~10 req/s,
max_num_seqs 256, max_num_batched_tokens 2048, block size 16, 2588 KV blocks (as the engine
reported). The simulator gets the same requests (arrival offsets, input and output lengths)
and engine settings; it predicts step times from the cost model only.

    python benchmarks/e2e_rtx4090.py [--device-file calibrated.yaml]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import DATA, machine, require, stats, write

from infersim.simulator import SimConfig, simulate
from infersim.workloads import RequestTable

RUN = DATA / "e2e" / "RTX4090-Llama-3.1-8B"


def measured() -> tuple[RequestTable, dict[str, np.ndarray]]:
    rows = [json.loads(line) for line in (RUN / "vllm" / "requests.jsonl").open()]
    rows.sort(key=lambda r: r["queued_ts"])
    queued = np.array([r["queued_ts"] for r in rows])
    first = np.array([r["first_token_ts"] for r in rows])
    last = np.array([r["last_token_ts"] for r in rows])
    out = np.array([r["output_toks"] for r in rows])
    table = RequestTable(queued - queued[0], np.array([r["input_toks"] for r in rows]), out)
    metrics = {
        "ttft": first - queued,
        "tpot": np.where(out > 1, (last - first) / np.maximum(out - 1, 1), np.nan),
        "e2el": last - queued,
    }
    return table, metrics


def simulated(device_file: str | None = None):
    """The simulator's run of the same requests with the engine's settings."""
    meta = json.loads((RUN / "vllm" / "meta.json").read_text())
    engine, kv = meta["engine_kwargs"], meta["kv_cache"]
    table, _ = measured()
    cfg = SimConfig.from_dict({
        "model": "llama-3.1-8b",
        "device": None if device_file else "rtx-4090",
        "device_file": device_file,
        "scheduler": {"max_num_seqs": engine["max_num_seqs"],
                      "max_num_batched_tokens": engine["max_num_batched_tokens"],
                      "block_size": kv["block_size"], "num_gpu_blocks": kv["num_gpu_blocks"]},
        "workload": {"arrival": {"process": "burst"}, "num_requests": len(table)},
    })
    result = simulate(cfg, requests=table)
    sim = result.requests.sort_values("request_id")
    predicted = {"ttft": sim["ttft_s"].to_numpy(), "tpot": sim["tpot_s"].to_numpy(),
                 "e2el": sim["e2el_s"].to_numpy()}
    return result, predicted


def mean_errors(device_file: str | None = None) -> dict[str, float]:
    """Relative error of the simulated mean TTFT, TPOT and E2E latency."""
    _, real = measured()
    _, predicted = simulated(device_file)
    return {k: stats(predicted[k])["mean"] / stats(real[k])["mean"] - 1 for k in real}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-file", help="a (calibrated) device YAML instead of rtx-4090")
    parser.add_argument("--out", default="e2e_rtx4090.md", help="results file name")
    args = parser.parse_args()
    require(RUN)
    meta = json.loads((RUN / "vllm" / "meta.json").read_text())
    table, real = measured()
    started = time.perf_counter()
    result, predicted = simulated(args.device_file)
    wall = time.perf_counter() - started
    lines = [f"# RTX 4090, Llama-3.1-8B: measured (vLLM {meta['vllm_version']}) vs simulated",
             "", f"device: {args.device_file or 'rtx-4090 (catalog, default efficiencies)'}; "
             f"{len(table)} requests; simulated in {wall:.2f} s on {machine()}", "",
             "`python benchmarks/e2e_rtx4090.py" +
             (f" --device-file {args.device_file}`" if args.device_file else "`"), "",
             "| metric | statistic | measured (ms) | simulated (ms) | error |",
             "|---|---|---:|---:|---:|"]
    for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2el", "E2E latency")):
        m, s = stats(real[name]), stats(predicted[name])
        for key in ("mean", "median", "p90", "p99"):
            err = (s[key] - m[key]) / m[key]
            lines.append(f"| {label} | {key} | {m[key] * 1e3:,.1f} | {s[key] * 1e3:,.1f} | "
                         f"{err:+.1%} |")
    summary = result.summary
    lines += ["", f"simulated: {summary['num_steps']:,} steps, {summary['num_preemptions']} "
              f"preemptions, duration {summary['duration_s']:.1f} s (measured "
              f"{(max(real['e2el'] + table.arrival_s)):.1f} s)"]
    text = "\n".join(lines) + "\n"
    print(text)
    print(f"written to {write(args.out, text)}")


if __name__ == "__main__":
    main()
