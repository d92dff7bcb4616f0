"""Disaggregated prefill/decode vs co-located serving at equal GPU count.

Llama-3.1-8B on four H100s serving the Azure 2023 conversation trace sped up (rate_scale),
with vLLM V1 scheduling: four mixed replicas (least outstanding requests) against one
prefill + three decode replicas and two + two, with the KV cache sent over InfiniBand NDR
layer by layer. Reported: TTFT and TPOT percentiles and the share of requests meeting
TTFT <= 500 ms and TPOT <= 50 ms.

    python benchmarks/disaggregation.py
"""

from __future__ import annotations

import time

from _common import DATA, machine, require, write

from infersim.simulator import SimConfig, simulate

TRACE = DATA / "traces" / "azure2023_conv.csv"
LAYOUTS = {
    "4 mixed": {"replicas": 4, "router": "least_outstanding"},
    "1 prefill + 3 decode": {"pools": [{"name": "prefill", "role": "prefill", "replicas": 1},
                                       {"name": "decode", "role": "decode", "replicas": 3}]},
    "2 prefill + 2 decode": {"pools": [{"name": "prefill", "role": "prefill", "replicas": 2},
                                       {"name": "decode", "role": "decode", "replicas": 2}],
                             "router": "least_outstanding"},
}
SCALES = (4, 8, 12)


def main() -> None:
    require(TRACE)
    lines = ["# Disaggregated vs co-located, 4 x H100, Llama-3.1-8B", "",
             f"machine: {machine()}; Azure conv trace, first 20 minutes, rate x scale; "
             "`python benchmarks/disaggregation.py`", "",
             "| layout | rate scale | req/s | TTFT p50 (ms) | TTFT p90 | TPOT p50 (ms) | "
             "TPOT p90 | SLO attainment | KV moved (GB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    started = time.perf_counter()
    for scale in SCALES:
        for name, layout in LAYOUTS.items():
            cfg = SimConfig.from_dict({
                **layout,
                "workload": {"trace": {"path": str(TRACE), "rate_scale": scale,
                                       "end_s": 1200}},
                "slo": {"ttft_ms": 500, "tpot_ms": 50}, "record_steps": False})
            s = simulate(cfg).summary
            lines.append(
                f"| {name} | {scale} | {s['num_requests'] / (1200 / scale):.1f} | "
                f"{s['median_ttft_ms']:,.0f} | {s['p90_ttft_ms']:,.0f} | "
                f"{s['median_tpot_ms']:.1f} | {s['p90_tpot_ms']:.1f} | "
                f"{s['slo_attainment']:.1%} | {s['kv_transfer_bytes'] / 1e9:,.1f} |")
            print(lines[-1], flush=True)
    lines += ["", f"wall time {time.perf_counter() - started:.0f} s"]
    print(f"written to {write('disaggregation.md', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
