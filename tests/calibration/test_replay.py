"""Step replay: batches rebuilt from steps.csv run on a real (tiny) transformer and are
compared with the prediction for the same batch, engine overheads excluded."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from infersim.calibration.replay import (
    pick_steps,
    predict_replayed,
    read_steps,
    rebuild,
    replay,
)
from infersim.costmodels import CostModel, Placement
from infersim.costmodels.params import resolve_params
from infersim.errors import ConfigError, TraceFormatError
from infersim.hardware import Quantity, get_device
from infersim.simulator.metrics import StepLog


def steps_csv(path: Path, rows: list[dict]) -> Path:
    full = [{c: 0 for c in StepLog.COLUMNS} | {"duration_s": 0.01} | r for r in rows]
    pd.DataFrame(full, columns=list(StepLog.COLUMNS)).to_csv(path, index=False)
    return path


ROWS = [
    {"decode_tokens": 0, "prefill_seqs": 2, "prefill_tokens": 64, "prefill_context": 0,
     "sampled": 2},
    {"decode_tokens": 3, "decode_context": 90, "prefill_seqs": 1, "prefill_tokens": 16,
     "prefill_context": 32, "sampled": 3},
    {"decode_tokens": 4, "decode_context": 400, "sampled": 4},
    {},  # an idle row is skipped
]


def test_rebuild_uses_the_row_means():
    b = rebuild({"decode_tokens": 4, "decode_context": 402, "prefill_seqs": 2,
                 "prefill_tokens": 101, "prefill_context": 60, "sampled": 5})
    assert (b.decode_seqs, b.decode_context) == (4, 100)
    assert (b.prefill_seqs, b.prefill_len, b.prefill_context) == (2, 50, 30)
    assert b.sampled == 5 and b.tokens == 104
    shape = b.shape
    assert shape.decode_seqs == 4 and shape.prefill_tokens == 100 and shape.sampled == 5
    # one-token prefill chunks are decodes
    b = rebuild({"decode_tokens": 1, "decode_context": 10, "prefill_seqs": 1,
                 "prefill_tokens": 1, "prefill_context": 30, "sampled": 2})
    assert (b.decode_seqs, b.prefill_seqs, b.decode_context) == (2, 0, 20)


def test_pick_steps_spreads_over_the_run():
    df = pd.DataFrame({"decode_tokens": [1] * 100, "prefill_tokens": [0] * 100})
    picked = pick_steps(df, 5)
    assert list(picked.index) == [0, 25, 50, 74, 99]
    with pytest.raises(ConfigError):
        pick_steps(df, 0)


def test_replay_runs_and_compares_the_forward_part(torch, tiny_model, tmp_path: Path):
    path = steps_csv(tmp_path / "steps.csv", ROWS)
    device = get_device("xeon-8480-2s")
    result = replay(path, device, tiny_model, max_steps=10, layers=2, repeats=1,
                    torch_device="cpu")
    df = result.steps
    assert len(df) == 3 and (df["measured_s"] > 0).all() and (df["predicted_s"] > 0).all()
    assert df["measured_s"].to_numpy() == pytest.approx(
        (df["measured_layers_s"] * tiny_model.num_layers / 2 + df["measured_head_s"]).to_numpy())
    p = resolve_params(device)
    seqs = df["decode_seqs"] + df["prefill_seqs"]
    overhead = p.step_overhead + p.seq_overhead * seqs
    assert (df["predicted_step_s"] - df["predicted_s"]).to_numpy() == pytest.approx(
        overhead.to_numpy())
    first = rebuild(ROWS[0])
    assert df["predicted_step_s"].iloc[0] == pytest.approx(
        CostModel(tiny_model, Placement(device)).step_time(first.shape))
    s = result.summary
    assert s["steps"] == 3 and s["layers_run"] == 2 and s["mape"] >= 0
    assert s["backend"] == "torch-cpu"
    # judging the measured steps again: the same device gives the same predictions, one
    # whose kernels cost more to launch gives slower ones
    assert predict_replayed(df, device, tiny_model) == pytest.approx(df["predicted_s"].to_numpy())
    slow = device.model_copy(update={"efficiency": {**device.efficiency, "kernel_overhead":
                                                    Quantity(value=1e-3, unit="s", source="t",
                                                             grade="C")}})
    assert (predict_replayed(df, slow, tiny_model) > df["predicted_s"].to_numpy()).all()


def test_model_comes_from_the_runs_config(torch, tiny_config, tmp_path: Path):
    path = steps_csv(tmp_path / "steps.csv", ROWS[2:3])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": str(tiny_config),
                                                          "placement": {"tp": 1}}))
    result = replay(path, get_device("xeon-8480-2s"), max_steps=1, layers=1, repeats=1,
                    torch_device="cpu")
    assert result.summary["model"] == "tiny"


def test_bad_steps_files(tmp_path: Path, tiny_model):
    with pytest.raises(ConfigError, match="does not exist"):
        read_steps(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"decode_tokens": [1]}).to_csv(bad, index=False)
    with pytest.raises(TraceFormatError, match="decode_context"):
        read_steps(bad)
    path = steps_csv(tmp_path / "steps.csv", ROWS[:1])
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        replay(path, get_device("xeon-8480-2s"))
