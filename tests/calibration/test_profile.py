"""The profile CSV: one schema, written atomically, read back with errors that name the
file, the line and the column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from infersim.calibration.profile import (
    COLUMNS,
    new_row,
    read_profile,
    shape_key,
    to_frame,
    write_profile,
)
from infersim.errors import ConfigError, TraceFormatError


def sample() -> pd.DataFrame:
    return to_frame([
        new_row(op="gemm", name="qkv_proj", m=16, n=384, k=128, dtype="bf16", median_s=1e-5,
                min_s=9e-6, max_s=2e-5, std_s=1e-6, repeats=5, model="tiny",
                device_name="cpu", date="2026-01-01T00:00:00+00:00"),
        new_row(op="attn_decode", name="attention", batch=4, q_len=1, kv_len=100, heads=8,
                kv_heads=2, head_dim=64, dtype="bf16", median_s=3e-5, model="tiny"),
        new_row(op="elementwise", name="add", tokens=16, width=128, bytes=12288.0,
                dtype="fp16", median_s=2e-6, model="tiny"),
    ])


def test_round_trip_keeps_every_value(tmp_path: Path):
    df = sample()
    path = write_profile(df, tmp_path / "p.csv")
    back = read_profile(path)
    assert list(back.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert not list(tmp_path.glob(".p.csv*"))  # no temporary file left behind


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch):
    path = tmp_path / "p.csv"
    path.write_text("old")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(RuntimeError):
        write_profile(sample(), path)
    assert path.read_text() == "old"
    assert not list(tmp_path.glob(".p.csv*"))


def test_unknown_op_names_line_column_and_allowed(tmp_path: Path):
    df = sample()
    df.loc[2, "op"] = "softmax"
    write_profile(df, tmp_path / "p.csv")
    with pytest.raises(TraceFormatError) as err:
        read_profile(tmp_path / "p.csv")
    assert err.value.line == 4 and err.value.field == "op"
    assert "p.csv" in str(err.value) and "gemm" in str(err.value)


def test_missing_column(tmp_path: Path):
    sample().drop(columns=["median_s"]).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(TraceFormatError, match="median_s"):
        read_profile(tmp_path / "p.csv")


@pytest.mark.parametrize(("column", "value", "line"), [("median_s", -1.0, 2), ("m", 0, 2),
                                                      ("dtype", "fp64", 3), ("k", "x", 2)])
def test_bad_values(tmp_path: Path, column, value, line):
    df = sample().astype({column: object})
    df.loc[0 if line == 2 else 1, column] = value
    df.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(TraceFormatError) as err:
        read_profile(tmp_path / "p.csv")
    assert (err.value.line, err.value.field) == (line, column)


def test_absent_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_profile(tmp_path / "none.csv")


def test_shape_keys():
    keys = shape_key(sample())
    assert list(keys) == ["t16", "a4x1@100", "t16"]
