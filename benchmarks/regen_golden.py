"""Regenerate the cost model's golden step times: python benchmarks/regen_golden.py

Writes tests/costmodels/golden/step_times.csv: predicted step time, MFU, MBU, FLOPs and bytes
of fixed (model, placement, batch) cases with default parameters. tests/costmodels/
test_golden.py recomputes every row and fails when a prediction moves; after an intended
change, rerun this script and review the diff of the CSV like code.
"""

from __future__ import annotations

import csv
import sys
from functools import reduce
from pathlib import Path

from infersim.costmodels import CostModel, Placement, parse_batch
from infersim.hardware import get_device
from infersim.models import get_model

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "costmodels" / "golden" / \
    "step_times.csv"
BATCHES = ("decode:1x1024", "decode:64x2048", "prefill:1x2048")
# (model, device, tp, pp, ep)
PLACEMENTS = [
    *(("llama-3.1-8b", d, 1, 1, 1) for d in ("h100-sxm", "a100-80gb-sxm", "rtx-4090",
                                                 "tpu-v5e", "xeon-8480-2s", "sn40l")),
    ("llama-3.1-70b", "h100-sxm", 4, 1, 1),
    ("mixtral-8x7b", "h100-sxm", 2, 1, 2),  # MoE with expert parallelism
    ("jamba-v0.1", "mi300x", 1, 1, 1),  # attention/Mamba hybrid, MoE
    ("llama-3.1-8b", "gaudi2", 1, 1, 1),  # npu
    ("llama-3.1-8b", "alveo-u55c", 1, 1, 1),  # fpga
]
EXTRA = [("llama-3.1-8b", "h100-sxm", 1, 1, 1, "chunk:1x512@1024+decode:32x1500")]
FIELDS = ("model", "device", "tp", "pp", "ep", "batch", "step_time_s", "mfu", "mbu", "flops",
          "bytes")


def cases() -> list[tuple[str, str, int, int, int, str]]:
    return [(*p, b) for p in PLACEMENTS for b in BATCHES] + EXTRA


def predict(model: str, device: str, tp: int, pp: int, ep: int, batch: str) -> dict:
    """One row: the case and its prediction. ``batch`` joins `--batch` specs with '+'."""
    cm = CostModel(get_model(model), Placement(get_device(device), tp=tp, pp=pp, ep=ep))
    step = cm.step(reduce(lambda a, b: a + b, (parse_batch(s) for s in batch.split("+"))))
    return {"model": model, "device": device, "tp": tp, "pp": pp, "ep": ep, "batch": batch,
            "step_time_s": step.seconds, "mfu": step.mfu, "mbu": step.mbu, "flops": step.flops,
            "bytes": step.bytes}


def main() -> int:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    with GOLDEN.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, lineterminator="\n")
        writer.writeheader()
        for case in cases():
            row = predict(*case)
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    print(f"wrote {len(cases())} cases to {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
