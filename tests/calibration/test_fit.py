"""Fitting: recovers known parameters, splits fit from held-out rows, writes a grade-C
device file that every command accepts, the same file for the same profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infersim.calibration.fit import fit_device
from infersim.calibration.predict import make_split, predict
from infersim.calibration.profile import new_row, read_profile, to_frame, write_profile
from infersim.costmodels import CostModel, Placement, parse_batch
from infersim.errors import ConfigError
from infersim.hardware import Quantity, get_device, load_device_file
from infersim.models import get_model

TRUE = {"gemm_efficiency": 0.6, "memory_efficiency": 0.7, "overlap": 0.5,
        "kernel_overhead": 8e-6, "attention_efficiency": 0.3,
        "decode_attention_efficiency": 0.05, "attention_causal_skip": 0.3,
        "elementwise_efficiency": 0.5, "elementwise_overhead": 0.4, "attention_overhead": 2.5}


def truth(base: str = "a100-80gb-sxm"):
    dev = get_device(base)
    eff = {k: Quantity(value=v, unit="s" if k == "kernel_overhead" else "1", source="truth",
                       grade="C") for k, v in TRUE.items()}
    return dev.model_copy(update={"efficiency": eff})


def synthetic(models=("a", "b", "c"), noise: float = 0.01):
    rows = []
    for i, model in enumerate(models):
        h = 1024 * (i + 2)
        for m in (1, 4, 16, 64, 256, 1024, 4096):
            for name, n, k in (("qkv_proj", 3 * h, h), ("mlp_down", h, 4 * h)):
                rows.append(new_row(op="gemm", name=name, m=m, n=n, k=k, model=model,
                                    dtype="bf16", median_s=1.0, device_name="gpu"))
            rows.append(new_row(op="elementwise", name="add", tokens=m, width=h,
                                bytes=6.0 * m * h, model=model, dtype="bf16", median_s=1.0,
                                device_name="gpu"))
        for b, q, c in ((1, 128, 0), (4, 512, 1024), (2, 2048, 0), (8, 64, 4096)):
            rows.append(new_row(op="attn_prefill", name="attention", batch=b, q_len=q, kv_len=c,
                                heads=32, kv_heads=8, head_dim=128, model=model, dtype="bf16",
                                median_s=1.0, device_name="gpu"))
        for b, c in ((1, 512), (16, 2048), (64, 4096), (256, 8192)):
            rows.append(new_row(op="attn_decode", name="attention", batch=b, q_len=1, kv_len=c,
                                heads=32, kv_heads=8, head_dim=128, model=model, dtype="bf16",
                                median_s=1.0, device_name="gpu"))
    df = to_frame(rows)
    rng = np.random.default_rng(0)
    df["median_s"] = predict(df, truth()) * (1 + noise * rng.standard_normal(len(df)))
    return df


def test_recovers_known_parameters():
    df = synthetic(noise=0.005)
    result = fit_device(df, get_device("a100-80gb-sxm"), "synthetic.csv")
    for key, value in TRUE.items():
        assert result.fitted[key] == pytest.approx(value, rel=0.05), key
    s = result.summary.set_index(["op_class", "set"])
    assert s.loc[("gemm", "held-out"), "mape"] < 0.02
    assert s.loc[("attention", "held-out"), "mape"] < 0.02
    assert result.split.kind == "model" and result.split.holdout == ("c",)


def test_device_file_is_grade_c_loads_everywhere_and_is_deterministic(tmp_path: Path):
    profile = write_profile(synthetic(), tmp_path / "prof.csv")
    df = read_profile(profile)
    one = fit_device(df, get_device("a100-80gb-sxm"), profile).write(tmp_path / "one.yaml")
    two = fit_device(read_profile(profile), get_device("a100-80gb-sxm"), profile).write(
        tmp_path / "two.yaml")
    assert one.read_bytes() == two.read_bytes()
    dev = load_device_file(one)
    assert dev.calibrated_from == str(profile)
    assert dev.name == "a100-80gb-sxm-calibrated"
    for key in TRUE:
        assert dev.efficiency[key].grade == "C"
        assert "prof.csv" in dev.efficiency[key].source
    assert "held-out MAPE" in dev.efficiency["gemm_efficiency"].source
    assert dev.grade == "D"  # the catalog price is an assumption
    step = CostModel(get_model("llama-3.1-8b"), Placement(dev)).step(parse_batch("decode:8x512"))
    assert step.seconds > 0
    text = one.read_text()
    assert text.startswith("# Calibrated by `infersim calibrate fit`")
    assert "gemm        held-out" in text


def test_fitting_a_calibrated_file_again_keeps_its_name(tmp_path: Path):
    profile = write_profile(synthetic(), tmp_path / "prof.csv")
    first = fit_device(read_profile(profile), get_device("a100"), profile)
    second = fit_device(read_profile(profile), first.device, profile)
    assert second.device.name == "a100-80gb-sxm-calibrated"
    assert second.device.display_name.count("(calibrated)") == 1


def test_only_classes_present_are_fitted():
    df = synthetic()
    gemm_only = df[df["op"] == "gemm"].reset_index(drop=True)
    result = fit_device(gemm_only, get_device("a100"), "g.csv")
    assert set(result.fitted) == {"gemm_efficiency", "memory_efficiency", "overlap",
                                  "kernel_overhead"}
    assert "attention_efficiency" not in result.device.efficiency
    decode_only = df[df["op"] != "attn_prefill"].reset_index(drop=True)
    fitted = fit_device(decode_only, get_device("a100"), "d.csv").fitted
    assert "decode_attention_efficiency" in fitted and "attention_causal_skip" not in fitted


def test_split_by_shape_holds_out_every_third_size():
    df = synthetic(models=("only",))
    split = make_split(df)
    assert split.kind == "shape"
    held = split.held_out(df)
    gemm_m = sorted(set(df.loc[held & (df["op"] == "gemm").to_numpy(), "m"]))
    assert gemm_m == [4, 256]  # sizes 1, 4, 16, 64, 256, 1024, 4096: the 2nd and 5th
    assert 1 not in gemm_m and 4096 not in gemm_m
    decode = df[held & (df["op"] == "attn_decode").to_numpy()]
    assert list(decode["batch"]) == [16]


def test_split_errors():
    df = synthetic()
    with pytest.raises(ConfigError, match="not in the profile"):
        make_split(df, "model", ("zzz",))
    with pytest.raises(ConfigError, match="every model"):
        make_split(df, "model", ("a", "b", "c"))
    with pytest.raises(ConfigError, match="allowed"):
        make_split(df, "random")
    assert make_split(df, "model", ("b",)).holdout == ("b",)
    assert not make_split(df, "none").held_out(df).any()


def test_transfer_carries_fitted_values_with_grade_d(tmp_path: Path):
    from infersim.calibration import transfer

    fitted = fit_device(synthetic(), get_device("a100"), "prof.csv").device
    a40 = transfer(fitted, get_device("a40"))
    assert a40.name == "a40-from-a100-80gb-sxm"
    assert a40.peak_flops == get_device("a40").peak_flops
    for key in TRUE:
        assert a40.efficiency[key].value == fitted.efficiency[key].value
        assert a40.efficiency[key].grade == "D" and "assumption" in a40.efficiency[key].source
    with pytest.raises(ConfigError, match="grade C"):
        transfer(get_device("a100"), get_device("a40"))
