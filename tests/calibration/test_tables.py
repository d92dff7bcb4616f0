"""Vidur's measured tables as profiles: shapes per rank, seconds, bytes, bad files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from infersim.calibration.fit import fit_device
from infersim.calibration.predict import make_split, select_device_rows
from infersim.calibration.tables import import_tables
from infersim.errors import ConfigError, TraceFormatError
from infersim.hardware import get_device

OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj", "input_layernorm",
       "add", "mlp_act")


def table(root: Path, gated=True, drop: str | None = None) -> Path:
    rows = []
    for tp in (1, 2):
        for t in (1, 64):
            row = {"n_head": 32, "n_kv_head": 8, "n_embd": 4096, "n_expanded_embd": 14336,
                   "vocab_size": 32768, "use_gated_mlp": gated, "num_tokens": t,
                   "num_tensor_parallel_workers": tp}
            for op in OPS:
                for s, v in (("min", 0.09), ("max", 0.2), ("mean", 0.1), ("median", 0.1),
                             ("std", 0.01)):
                    row[f"time_stats.{op}.{s}"] = v
            rows.append(row)
    df = pd.DataFrame(rows)
    if drop:
        df = df.drop(columns=[drop])
    path = root / "compute" / "a100" / "meta-llama" / "Llama-3.1-8B" / "mlp.csv"
    path.parent.mkdir(parents=True)
    df.to_csv(path, index=False)
    return path


def test_shapes_are_divided_by_tp(tmp_path: Path):
    table(tmp_path)
    df = import_tables(tmp_path)
    assert set(df["device_name"]) == {"a100"} and set(df["model"]) == {"llama-3.1-8b"}
    g = df[(df["op"] == "gemm") & (df["m"] == 64)].set_index(["name", "tp"])
    assert (g.loc[("qkv_proj", 1), "n"], g.loc[("qkv_proj", 1), "k"]) == (6144, 4096)
    assert g.loc[("qkv_proj", 2), "n"] == (16 + 2 * 4) * 128
    assert g.loc[("o_proj", 2), "k"] == 2048
    assert g.loc[("mlp_up", 2), "n"] == 14336  # gate + up of 7168 each
    assert g.loc[("mlp_down", 2), "k"] == 7168
    assert g.loc[("qkv_proj", 1), "median_s"] == pytest.approx(1e-4)
    e = df[(df["op"] == "elementwise") & (df["tokens"] == 64) & (df["tp"] == 2)]
    e = e.set_index("name")
    assert e.loc["rmsnorm", "bytes"] == 2 * 64 * 4096 * 2
    assert e.loc["add", "bytes"] == 3 * 64 * 4096 * 2
    assert e.loc["act", "bytes"] == 3 * 64 * 7168 * 2
    assert set(df["dtype"]) == {"fp16"}


def test_ungated_mlp(tmp_path: Path):
    table(tmp_path, gated=False)
    df = import_tables(tmp_path)
    up = df[(df["name"] == "mlp_up") & (df["tp"] == 1)]
    assert set(up["n"]) == {14336}
    act = df[(df["name"] == "act") & (df["tp"] == 1) & (df["tokens"] == 64)]
    assert set(act["bytes"]) == {2 * 64 * 14336 * 2}


def test_missing_dims_column_names_file_and_column(tmp_path: Path):
    path = table(tmp_path, drop="num_tokens")
    with pytest.raises(TraceFormatError) as err:
        import_tables(tmp_path)
    assert err.value.field == "num_tokens" and err.value.path == str(path)


def test_empty_folder_and_unknown_gpu(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"no mlp\.csv"):
        import_tables(tmp_path)
    table(tmp_path)
    with pytest.raises(ConfigError, match="no tables"):
        import_tables(tmp_path, gpu="h100")


def test_a100_by_model_gemm_target(kernels_dir: Path):
    """Issue 4 target: fit on four models, predict internlm-20b and phi-2, GEMM MAPE <= 8%."""
    df = select_device_rows(import_tables(kernels_dir, gpu="a100"), "a100", "tables")
    split = make_split(df)
    assert split.holdout == ("internlm-20b", "phi-2")
    result = fit_device(df, get_device("a100-80gb-sxm"), "a100.csv", split)
    s = result.summary.set_index(["op_class", "set"])
    assert s.loc[("gemm", "held-out"), "mape"] <= 0.08
    assert s.loc[("gemm", "held-out"), "kernels"] == 4 * (261 * 4 + 261)  # internlm + phi-2
