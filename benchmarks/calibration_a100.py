"""Calibrate on Vidur's A100 kernel tables, hold out models and shapes, transfer to the A40.

1. Import ../shared/data/kernels (Vidur, MIT) into one profile.
2. A100 by model: fit on Llama-2-7b, Llama-2-70b, CodeLlama-34b and Qwen-72B; predict
   internlm-20b and phi-2 (target: GEMM MAPE <= 8%). Also by shape (every 3rd token count of
   all six models held out), and the uncalibrated catalog parameters for comparison.
3. A40 transfer: the A100-fitted efficiency parameters on the a40 catalog device (its
   datasheet peaks and bandwidth), no A40 data used; compared with the uncalibrated a40 and
   with an A40 fitted on its own four models (the best the model form can do there).

Same as (with the CLI):
    infersim calibrate import-tables ../shared/data/kernels --out vidur.csv
    infersim calibrate fit --profile vidur.csv --device-name a100 --base a100-80gb-sxm \
        --out a100-cal.yaml
    infersim calibrate report --profile vidur.csv --device-name a100 --device-file a100-cal.yaml
    infersim calibrate transfer --device-file a100-cal.yaml --base a40 --out a40-from-a100.yaml
    infersim calibrate report --profile vidur.csv --device-name a40 \
        --device-file a40-from-a100.yaml

Usage: python benchmarks/calibration_a100.py   (writes benchmarks/results/calibration_a100.md)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import DATA, fitted_table, machine, require, write

from infersim.calibration import (
    evaluate,
    fit_device,
    import_tables,
    make_split,
    summarize,
    transfer,
)
from infersim.calibration.predict import select_device_rows
from infersim.hardware import get_device

KERNELS = DATA / "kernels"


def table(summary: pd.DataFrame, label: str) -> list[str]:
    rows = []
    for r in summary.itertuples():
        rows.append(f"| {label} | {r.op_class} | {r.set} | {r.kernels:,} | {r.mape:.1%} | "
                    f"{r.median_ape:.1%} | {r.worst:+.1%} |")
    return rows


def main() -> None:
    require(KERNELS / "compute")
    started = time.perf_counter()
    profile = import_tables(KERNELS)
    a100 = select_device_rows(profile, "a100", "tables")
    a40 = select_device_rows(profile, "a40", "tables")
    base_a100, base_a40 = get_device("a100-80gb-sxm"), get_device("a40")
    by_model = make_split(a100)
    by_shape = make_split(a100, "shape")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vidur-a100.csv"
        fit_m = fit_device(a100, base_a100, path.name, by_model)
        fit_s = fit_device(a100, base_a100, path.name, by_shape)
        fit_40 = fit_device(a40, base_a40, "vidur-a40.csv", make_split(a40))
    moved = transfer(fit_m.device, base_a40)
    a40_split = make_split(a40)
    lines = [
        "# Calibration on Vidur's A100 tables, and transfer to the A40",
        "",
        f"Machine: {machine()}. Data: ../shared/data/kernels (Vidur, MIT): per-layer GEMM "
        "(QKV, O, gate/up, down) and elementwise times, fp16, 6 models x TP 1-8 (phi-2: TP 1) "
        f"x 259 token counts per GPU ({len(a100):,} A100 and {len(a40):,} A40 kernels). Error = "
        "predicted / measured - 1; MAPE = mean |error|. Command: `python "
        "benchmarks/calibration_a100.py`.",
        "",
        "## Fitted A100 parameters (fit on four models)",
        "",
        *fitted_table(fit_m.fitted, base_a100, "catalog default"),
    ]
    lines += [
        "",
        "## Errors",
        "",
        "| device / parameters | op class | set | kernels | MAPE | median APE | worst |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += table(summarize(evaluate(a100, base_a100, by_model)),
                   "A100, catalog defaults (split by model)")
    lines += table(fit_m.summary, f"A100, fitted ({by_model.describe()})")
    lines += table(fit_s.summary, f"A100, fitted ({by_shape.describe()})")
    lines += table(summarize(evaluate(a40, base_a40, a40_split)),
                   "A40, catalog defaults (split by model)")
    lines += table(summarize(evaluate(a40, moved, a40_split)),
                   "A40, A100 fit on the A40 datasheet (transfer)")
    lines += table(fit_40.summary, f"A40, fitted on its own four models ({a40_split.describe()})")
    ev_t = evaluate(a40, moved, a40_split)
    gemm_t = ev_t[ev_t["op_class"] == "gemm"]
    ev_d = evaluate(a40, base_a40, a40_split)
    gemm_d = ev_d[ev_d["op_class"] == "gemm"]
    held = fit_m.summary.set_index(["op_class", "set"])
    lines += [
        "",
        "## Targets",
        "",
        f"- A100, fit on four models, predict internlm-20b and phi-2: GEMM MAPE "
        f"**{held.loc[('gemm', 'held-out'), 'mape']:.1%}** (target <= 8%).",
        f"- A40 predicted from its datasheet plus the A100 fit (no A40 data): GEMM MAPE "
        f"**{gemm_t['error'].abs().mean():.1%}** over all {len(gemm_t):,} A40 GEMMs "
        f"(uncalibrated catalog a40: {gemm_d['error'].abs().mean():.1%}; median error of the "
        f"transfer {gemm_t['error'].median():+.1%}, i.e. the A40 runs its GEMMs "
        f"{'slower' if gemm_t['error'].median() < 0 else 'faster'} relative to its datasheet "
        "than the A100 does).",
        "",
        f"Wall time {time.perf_counter() - started:.1f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print("wrote", write("calibration_a100.md", text))


if __name__ == "__main__":
    main()
