"""Runners time real kernels (tiny shapes here) and fill every profile column."""

from __future__ import annotations

import sys

import pytest

from infersim.calibration.profile import COLUMNS
from infersim.calibration.runners import (
    GRIDS,
    Case,
    MissingExtraError,
    context_mask,
    get_runner,
    model_cases,
    run_profile,
)
from infersim.errors import ConfigError, UnknownNameError
from infersim.models import get_model

TINY_CASES = [
    Case("gemm", "qkv_proj", m=8, n=96, k=64, flops=2 * 8 * 96 * 64),
    Case("attn_prefill", "attention", batch=2, q_len=8, kv_len=0, heads=4, kv_heads=2,
         head_dim=16),
    Case("attn_prefill", "attention", batch=1, q_len=8, kv_len=24, heads=4, kv_heads=2,
         head_dim=16),
    Case("attn_decode", "attention", batch=3, q_len=1, kv_len=40, heads=4, kv_heads=2,
         head_dim=16),
    Case("elementwise", "rmsnorm", tokens=8, width=64, bytes=2 * 8 * 64 * 2),
    Case("elementwise", "add", tokens=8, width=64, bytes=3 * 8 * 64 * 2),
    Case("elementwise", "act", tokens=8, width=128, bytes=3 * 8 * 128 * 2),
]


def check(df, backend: str, dtype: str):
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == len(TINY_CASES)
    assert (df["median_s"] > 0).all()
    assert (df["min_s"] <= df["median_s"]).all() and (df["median_s"] <= df["max_s"]).all()
    assert (df["repeats"] == 2).all()
    assert set(df["backend"]) == {backend} and set(df["dtype"]) == {dtype}
    assert df["versions"].str.contains("numpy").all() and (df["date"] != "").all()
    assert (df["device_name"] == "here").all() and (df["hardware"] != "").all()


def test_torch_cpu_runner(torch, tiny_model):
    df = run_profile(tiny_model, "here", "torch", device="cpu", repeats=2, cases=TINY_CASES)
    check(df, "torch-cpu", "bf16")
    assert df["versions"].str.contains("torch").all() and (df["threads"] > 0).all()


def test_numpy_runner(tiny_model):
    df = run_profile(tiny_model, "here", "numpy", repeats=2, cases=TINY_CASES)
    check(df, "numpy", "fp32")


def test_context_mask_is_the_lower_right_causal_mask(torch):
    """The CUDA path's CausalBias attends exactly as the CPU path's boolean mask: each of
    the chunk's tokens sees the cached context and the chunk up to itself."""
    from torch.nn.attention.bias import causal_lower_right

    F = torch.nn.functional
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=gen)
    k, v = torch.randn(2, 2, 12, 8, generator=gen), torch.randn(2, 2, 12, 8, generator=gen)
    mask = context_mask(torch, 5, 12, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask[0].sum() == 8 and mask[-1].all()
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(5, 12),
                                         enable_gqa=True)
    assert torch.allclose(got, want, atol=1e-5)


def test_cold_operands_are_rotated(torch):
    runner = get_runner("torch", device="cpu", flush_bytes=1 << 20)
    assert runner.copies(64 * 1024) == 16  # 1 MiB of weights to flush, 64 KiB each
    assert runner.copies(1 << 30) == 1
    assert runner.copies(0) == 1


def test_model_cases_cover_every_gemm_split_and_attention():
    model = get_model("llama-3.2-1b")
    cases = model_cases(model, GRIDS["cpu-quick"])
    names = {(c.op, c.name) for c in cases}
    assert {("gemm", n) for n in ("qkv_proj", "o_proj", "mlp_up", "mlp_down", "lm_head")} <= names
    assert {("attn_prefill", "attention"), ("attn_decode", "attention")} <= names
    qkv = {c.tp: (c.n, c.k) for c in cases if c.name == "qkv_proj"}
    assert qkv == {1: (2048 + 2 * 512, 2048), 2: (1024 + 2 * 256, 2048)}
    assert max(c.m for c in cases if c.name == "lm_head") == GRIDS["cpu-quick"].head_tokens
    assert all(c.flops <= GRIDS["cpu-quick"].max_attention_flops for c in cases
               if c.op.startswith("attn"))
    with pytest.raises(ConfigError, match="dense attention"):
        model_cases(get_model("mamba-2.8b"), GRIDS["cpu-quick"])


def test_unknown_backend_and_bad_options(tiny_model):
    with pytest.raises(UnknownNameError, match="backend"):
        run_profile(tiny_model, "x", "jax", cases=TINY_CASES)
    with pytest.raises(ConfigError, match="fp32"):
        run_profile(tiny_model, "x", "numpy", dtype="bf16", cases=TINY_CASES)


def test_cuda_request_without_a_gpu_is_a_clear_error(torch, tiny_model):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_profile(tiny_model, "x", "torch", device="cuda", cases=TINY_CASES)
    with pytest.raises(ConfigError, match="CUDA-graph clock needs a CUDA device"):
        run_profile(tiny_model, "x", "torch", device="cpu", clock="graph", cases=TINY_CASES)


def test_missing_torch_names_the_extra(monkeypatch, tiny_model):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(MissingExtraError, match=r"infersim\[calibrate\]"):
        run_profile(tiny_model, "x", "torch", cases=TINY_CASES)
