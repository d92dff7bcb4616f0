"""Baseline error of the roofline GEMM model against measured GPU GEMMs (Vidur tables).

Compares ``infersim.costmodels.kernels.gemm_time`` with its DEFAULT (uncalibrated, sourced)
parameters against the per-layer GEMM times Vidur measured on an A100 80GB SXM and an A40
(../shared/data/kernels/compute/{a100,a40}/<hf-id>/mlp.csv, fp16, PyTorch/CUDA kernels).
Nothing here is fitted: it is the number calibration has to beat.

The four GEMMs of a decoder layer, per GPU (the n_* columns hold the FULL model dims on every
row; TP divides them here):

  attn_pre_proj   QKV   m = num_tokens, n = (n_head + 2 n_kv_head) head_dim / tp, k = n_embd
  attn_post_proj  O     m = num_tokens, n = n_embd, k = n_head head_dim / tp
  mlp_up_proj     up    n = (2 if use_gated_mlp else 1) n_expanded_embd / tp, k = n_embd
  mlp_down_proj   down  n = n_embd, k = n_expanded_embd / tp

Usage: python benchmarks/gemm_baseline.py [--data PATH]   (writes benchmarks/results/
gemm_baseline.{md,csv}; exits 0 with a message when the data folder is absent).
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from infersim.costmodels.kernels import gemm_time
from infersim.costmodels.params import resolve_params
from infersim.hardware import get_device

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kernels" / "compute"
RESULTS = ROOT / "benchmarks" / "results"
GPUS = {"a100": "a100-80gb-sxm", "a40": "a40"}
OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
BANDS = ((1, 16), (17, 128), (129, 512), (513, 2048), (2049, 4096))
DTYPE = "fp16"


def gemm_shapes(df: pd.DataFrame, op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, n, k) per row of a Vidur mlp.csv for one op, per GPU (dims divided by TP)."""
    tp = df["num_tensor_parallel_workers"].to_numpy()
    head_dim = df["n_embd"].to_numpy() // df["n_head"].to_numpy()
    h = df["n_embd"].to_numpy()
    inter = df["n_expanded_embd"].to_numpy()
    m = df["num_tokens"].to_numpy()
    if op == "attn_pre_proj":
        n = (df["n_head"].to_numpy() + 2 * df["n_kv_head"].to_numpy()) * head_dim / tp
        return m, n, h
    if op == "attn_post_proj":
        return m, h, df["n_head"].to_numpy() * head_dim / tp
    if op == "mlp_up_proj":
        gates = np.where(df["use_gated_mlp"].astype(bool).to_numpy(), 2, 1)
        return m, gates * inter / tp, h
    if op == "mlp_down_proj":
        return m, h, inter / tp
    raise ValueError(op)


def load_rows(data: Path) -> pd.DataFrame:
    """One row per (gpu, model, op, tp, num_tokens): measured and predicted seconds."""
    frames = []
    for gpu, device_name in GPUS.items():
        device = get_device(device_name)
        for path in sorted((data / gpu).glob("**/mlp.csv")):
            model = str(path.parent.relative_to(data / gpu))
            df = pd.read_csv(path)
            for op in OPS:
                m, n, k = gemm_shapes(df, op)
                predicted = [gemm_time(device, int(a), int(b), int(c), DTYPE)
                             for a, b, c in zip(m, n, k, strict=True)]
                frames.append(pd.DataFrame({
                    "gpu": gpu, "device": device_name, "model": model, "op": op,
                    "tp": df["num_tensor_parallel_workers"].to_numpy(), "m": m, "n": n, "k": k,
                    "measured_s": df[f"time_stats.{op}.median"].to_numpy() * 1e-3,  # ms -> s
                    "predicted_s": predicted,
                }))
    rows = pd.concat(frames, ignore_index=True)
    rows["ape"] = (rows.predicted_s - rows.measured_s).abs() / rows.measured_s
    rows["ratio"] = rows.predicted_s / rows.measured_s
    labels = [f"{lo}-{hi}" for lo, hi in BANDS]
    edges = [BANDS[0][0] - 0.5, *(hi + 0.5 for _, hi in BANDS)]
    rows["band"] = pd.cut(rows.m, edges, labels=labels).astype(str)
    # groups are reported in order of first appearance: GPUs, ops and bands in order
    order = {op: i for i, op in enumerate(OPS)}
    rows = rows.sort_values(["gpu", "op", "m"], key=lambda c: c.map(order) if c.name == "op"
                            else c, kind="stable")
    return rows.reset_index(drop=True)


def summarise(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    out = []
    for key, g in rows.groupby(by, sort=False):
        worst = g.loc[g.ape.idxmax()]
        out.append({
            **dict(zip(by, key, strict=True)),
            "shapes": len(g),
            "mape_pct": 100 * g.ape.mean(),
            "median_ape_pct": 100 * g.ape.median(),
            "worst_ape_pct": 100 * worst.ape,
            "worst_shape": f"{worst.model} {worst.op} tp{worst.tp} m={worst.m} "
                           f"n={worst.n:g} k={worst.k:g}",
            "median_pred_over_meas": g.ratio.median(),
        })
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.1f}" if c.endswith("_pct") else f"{v:.2f}" if c.startswith(
                "median_pred") else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA,
                        help="folder holding {a100,a40}/<hf-id>/mlp.csv")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: the Vidur kernel tables are not at {args.data} "
              "(see ../shared/data/README.md); nothing to compare against")
        return 0
    rows = load_rows(args.data)
    overall = summarise(rows, ["gpu"])
    per_op = summarise(rows, ["gpu", "op"])
    per_band = summarise(rows, ["gpu", "band"])
    per_op_band = summarise(rows, ["gpu", "op", "band"])
    params = {g: resolve_params(get_device(d)).values for g, d in GPUS.items()}
    used = ("gemm_efficiency", "memory_efficiency", "kernel_overhead", "overlap")
    header = [
        "# GEMM baseline: roofline with default parameters vs measured (Vidur)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"(Python {platform.python_version()}); data: {args.data}.",
        f"{len(rows):,} GEMM shapes ({DTYPE}, median of Vidur's repeats), models: "
        f"{', '.join(sorted(rows.model.unique()))}; TP 1-8; num_tokens 1-4096.",
        "Predictions: `infersim.costmodels.kernels.gemm_time`, DEFAULT parameters "
        "(nothing fitted to these tables): "
        + "; ".join(f"{GPUS[g]}: " + ", ".join(f"{k}={params[g][k]:g}" for k in used)
                    for g in GPUS) + ".",
        "APE = |predicted - measured| / measured; ratio = predicted / measured "
        "(< 1: the model is optimistic).",
    ]
    sections = [("Overall", overall), ("Per op", per_op), ("Per token band", per_band),
                ("Per op and token band", per_op_band)]
    text = "\n".join(header) + "\n"
    for title, table in sections:
        text += f"\n## {title}\n\n{markdown(table)}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gemm_baseline.md").write_text(text)
    summary = pd.concat([t.assign(group=title) for title, t in sections], ignore_index=True)
    summary.to_csv(args.out / "gemm_baseline.csv", index=False, float_format="%.6g")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        for title, table in sections[:3]:
            print(f"\n{title}\n{table.drop(columns=['worst_shape']).to_string(index=False)}")
        print("\nworst shapes:\n" + overall[["gpu", "worst_ape_pct", "worst_shape"]]
              .to_string(index=False))
    print(f"\nwrote {args.out / 'gemm_baseline.md'} and gemm_baseline.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
