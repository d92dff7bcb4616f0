"""Golden step times: predictions for fixed cases must not move unnoticed.

The cases and their expected values live in golden/step_times.csv, written by
`python benchmarks/regen_golden.py`. When a change is meant to move predictions, rerun that
command and review the CSV's diff (which cases moved, by how much, in which direction)."""

from __future__ import annotations

import csv
from functools import reduce
from pathlib import Path

import pytest

from infersim.costmodels import CostModel, Placement, parse_batch
from infersim.hardware import get_device
from infersim.models import get_model

GOLDEN = Path(__file__).parent / "golden" / "step_times.csv"
REGEN = "python benchmarks/regen_golden.py"
REL = 1e-9


def rows() -> list[dict]:
    with GOLDEN.open(newline="") as f:
        return list(csv.DictReader(f))


def test_golden_file_covers_the_reference_cases():
    cases = {(r["model"], r["device"], r["tp"], r["batch"]) for r in rows()}
    for device in ("h100-sxm", "a100-80gb-sxm", "rtx-4090", "tpu-v5e", "xeon-8480-2s", "sn40l"):
        for b in ("decode:1x1024", "decode:64x2048", "prefill:1x2048"):
            assert ("llama-3.1-8b", device, "1", b) in cases
    for b in ("decode:1x1024", "decode:64x2048", "prefill:1x2048"):
        assert ("llama-3.1-70b", "h100-sxm", "4", b) in cases


@pytest.mark.parametrize("row", rows(), ids=lambda r: f"{r['model']}-{r['device']}-tp{r['tp']}-"
                         f"{r['batch']}")
def test_prediction_matches_golden(row):
    cm = CostModel(get_model(row["model"]),
                   Placement(get_device(row["device"]), tp=int(row["tp"]), pp=int(row["pp"]),
                             ep=int(row["ep"])))
    step = cm.step(reduce(lambda a, b: a + b, (parse_batch(s) for s in row["batch"].split("+"))))
    got = {"step_time_s": step.seconds, "mfu": step.mfu, "mbu": step.mbu, "flops": step.flops,
           "bytes": step.bytes}
    moved = {k: (float(row[k]), v) for k, v in got.items()
             if v != pytest.approx(float(row[k]), rel=REL)}
    changes = ", ".join(f"{k}: {old:.6g} -> {new:.6g}"
                        + (f" ({new / old - 1:+.2%})" if old else "")
                        for k, (old, new) in moved.items())
    assert not moved, (
        f"cost-model prediction moved from the golden file ({changes}). "
        f"If the change is intended, regenerate with `{REGEN}` and review the diff of "
        f"{GOLDEN.relative_to(GOLDEN.parents[3])}.")
