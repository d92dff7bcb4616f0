"""Per-operator breakdowns of predicted step times (the `infersim cost` table), for review.

Llama-3.1-8B (bf16, one device, default parameters) on h100-sxm, tpu-v5e, xeon-8480-2s and
sn40l, for decode 1x1024, decode 64x2048 and prefill 1x2048. Each table shows op, time, share
of the step, what bounds it, GFLOP and MB (totals over ranks; fused families count weights
and KV only, since activations stay on chip), plus the step time, MFU and MBU, and whether
the model's memory plan fits the device (vLLM defaults: utilisation 0.9, 2048 batched tokens,
256 sequences, block size 16).

Usage: python benchmarks/cost_breakdowns.py   (writes benchmarks/results/cost_breakdowns.md)
"""

from __future__ import annotations

import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from infersim.costmodels import CostModel, Placement, parse_batch, plan_memory
from infersim.errors import ConfigError
from infersim.hardware import get_device
from infersim.models import get_model

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MODEL = "llama-3.1-8b"
DEVICES = ("h100-sxm", "tpu-v5e", "xeon-8480-2s", "sn40l")
BATCHES = ("decode:1x1024", "decode:64x2048", "prefill:1x2048")


def memory_note(cm: CostModel) -> str:
    try:
        plan = plan_memory(cm.model, cm.placement, 16, 0.9, 2048, 256,
                           cm.params.runtime_reserved)
    except ConfigError as exc:
        return f"memory plan: does NOT fit ({exc.allowed})"
    return (f"memory plan: fits, {plan.blocks:,} KV blocks of 16 tokens "
            f"({plan.kv_cache / 1e9:.2f} GB KV cache)")


def weight_tier(cm: CostModel) -> str:
    dev = cm.placement.device
    bw = cm.roofline.weight_bw / (cm.params.memory_efficiency * cm.params.numa_efficiency)
    tier = next((t.name for t in dev.memory if t.bandwidth.si == bw), "?")
    return f"weights {cm.shapes.weight_bytes / 1e9:.2f} GB per rank stream from {tier}"


def breakdown(device: str, spec: str) -> tuple[str, dict]:
    cm = CostModel(get_model(MODEL), Placement(get_device(device)))
    step = cm.step(parse_batch(spec))
    lines = ["| op | time (us) | share | bound | GFLOP | MB |", "|---|---:|---:|---|---:|---:|"]
    for o in step.ops:
        lines.append(f"| {o.name} | {o.time_s * 1e6:,.1f} | {o.time_s / step.seconds:.1%} | "
                     f"{o.bound} | {o.flops / 1e9:,.2f} | {o.bytes / 1e6:,.2f} |")
    head = (f"### {device}, {spec}\n\nstep time **{step.seconds * 1e3:.3f} ms**, "
            f"MFU {step.mfu:.1%}, MBU {step.mbu:.1%}, lowest input grade {step.grade}\n")
    row = {"device": device, "batch": spec, "step_ms": step.seconds * 1e3, "mfu": step.mfu,
           "mbu": step.mbu, "grade": step.grade}
    return head + "\n" + "\n".join(lines) + "\n", row


def main() -> int:
    sections, rows, notes = [], [], []
    for device in DEVICES:
        cm = CostModel(get_model(MODEL), Placement(get_device(device)))
        notes.append(f"- {device}: {weight_tier(cm)}; {memory_note(cm)}")
        for spec in BATCHES:
            text, row = breakdown(device, spec)
            sections.append(text)
            rows.append(row)
    summary = ["| device | batch | step (ms) | MFU | MBU | grade |", "|---|---|---:|---:|---:|---|"]
    summary += [f"| {r['device']} | {r['batch']} | {r['step_ms']:.3f} | {r['mfu']:.1%} | "
                f"{r['mbu']:.1%} | {r['grade']} |" for r in rows]
    text = "\n".join([
        f"# Cost breakdowns: {MODEL}, one device, default parameters",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"(Python {platform.python_version()}). Predictions only: nothing here is measured.",
        "",
        "## Summary",
        "",
        *summary,
        "",
        "## Placement notes",
        "",
        *notes,
        "",
        "## Breakdowns",
        "",
        "\n".join(sections),
    ])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cost_breakdowns.md").write_text(text)
    print("\n".join(summary))
    print("\n".join(notes))
    print(f"\nwrote {RESULTS / 'cost_breakdowns.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
