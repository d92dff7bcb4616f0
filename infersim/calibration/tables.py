"""Import measured kernel tables into the profile format.

Vidur's compute tables (``compute/<gpu>/<org>/<model>/mlp.csv``, MIT licence, from
microsoft/vidur) hold per-layer operator times in milliseconds against ``num_tokens`` and
``num_tensor_parallel_workers``. Their ``n_*`` columns hold the whole model's dimensions on
every row; the times are per GPU, so the shapes are divided by the row's TP here. Mapping
(h = n_embd, d = n_embd / n_head, t = tokens, per-rank widths after dividing by TP):

====================================  =========================================================
attn_pre_proj                         gemm qkv_proj: m = t, n = (heads + 2 kv_heads) d, k = h
attn_post_proj                        gemm o_proj: m = t, n = h, k = heads d
mlp_up_proj                           gemm mlp_up: n = 2 x n_expanded_embd (gated) else 1 x
mlp_down_proj                         gemm mlp_down: n = h, k = n_expanded_embd
input_ / post_attention_layernorm     elementwise rmsnorm: read + write t x h
add                                   elementwise add: read 2, write 1 x (t x h)
mlp_act                               elementwise act: gated read 2, write 1 x (t x inter);
                                      GELU read + write t x inter
attn_rope                             elementwise rotary: read + write t x (q + kv widths)
emb                                   not imported (a gather whose cost the tables do not split
                                      from the vocabulary-parallel all-reduce)
====================================  =========================================================

KV heads per rank are ``ceil(kv_heads / tp)`` (replicated when TP exceeds them), as in the
cost model. Data are fp16."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from infersim.calibration.profile import new_row, to_frame
from infersim.errors import ConfigError, TraceFormatError, UnknownNameError

DIMS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp",
        "num_tokens", "num_tensor_parallel_workers")
GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE = ("input_layernorm", "post_attention_layernorm", "add", "mlp_act", "attn_rope")
STATS = ("min", "max", "median", "std")
ACT_BYTES = 2  # fp16
VIDUR_GPUS = {"a100": "a100-80gb-sxm", "a40": "a40", "h100": "h100-sxm"}
"""Vidur's GPU folder names -> catalog devices (for the user's --base)."""


def _model_name(hf_id: str) -> str:
    from infersim.models import get_model

    try:
        return get_model(hf_id).name
    except UnknownNameError:
        return hf_id


def find_tables(root: str | Path) -> list[tuple[str, str, Path]]:
    """(gpu, hf model id, path) of every ``mlp.csv`` under ``root`` (which may be the
    ``kernels`` folder, its ``compute`` folder, one GPU's folder, or one file)."""
    root = Path(root)
    if not root.exists():
        raise ConfigError("DIR", str(root), "does not exist")
    paths = [root] if root.is_file() else sorted(root.rglob("mlp.csv"))
    out = []
    for p in paths:
        parts = p.resolve().parts
        if len(parts) < 5:
            raise ConfigError("DIR", str(p), "expected compute/<gpu>/<org>/<model>/mlp.csv")
        gpu, org, model = parts[-4], parts[-3], parts[-2]
        out.append((gpu, f"{org}/{model}", p))
    if not out:
        raise ConfigError("DIR", str(root), "holds no mlp.csv (expected compute/<gpu>/<org>/"
                          "<model>/mlp.csv, Vidur's layout)")
    return out


def read_vidur_table(path: Path, gpu: str, hf_id: str) -> list[dict]:
    """Profile rows of one Vidur ``mlp.csv``."""
    where = str(path)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TraceFormatError(where, 1, "-", f"not a readable CSV: {exc}") from None
    for col in DIMS:
        if col not in df.columns:
            raise TraceFormatError(where, 1, col, f"missing column; a Vidur mlp.csv has "
                                   f"{', '.join(DIMS)} and time_stats.<op>.<stat>")
    ops = [op for op in (*GEMMS, *ELEMENTWISE) if f"time_stats.{op}.median" in df.columns]
    if not any(op in GEMMS for op in ops):
        raise TraceFormatError(where, 1, "time_stats.attn_pre_proj.median",
                               f"no GEMM times; expected time_stats.<op>.median for "
                               f"{', '.join(GEMMS)}")
    model = _model_name(hf_id)
    env = {"device_name": gpu, "hardware": VIDUR_GPUS.get(gpu, gpu), "backend": "vidur",
           "versions": "Vidur profiling (Sarathi-Serve engine, PyTorch/CUDA)",
           "dtype": "fp16", "model": model}
    rows = []
    for line, rec in enumerate(df.to_dict("records"), start=2):
        try:
            t = int(rec["num_tokens"])
            tp = int(rec["num_tensor_parallel_workers"])
            heads, kv_heads = int(rec["n_head"]), int(rec["n_kv_head"])
            h, inter_full = int(rec["n_embd"]), int(rec["n_expanded_embd"])
        except (TypeError, ValueError):
            raise TraceFormatError(where, line, "num_tokens", "dims must be integers") from None
        if min(t, tp, heads, kv_heads, h, inter_full) < 1 or heads % tp:
            raise TraceFormatError(where, line, "num_tensor_parallel_workers",
                                   f"need positive dims and heads ({heads}) divisible by TP "
                                   f"({tp})")
        gated = str(rec["use_gated_mlp"]).strip().lower() in ("true", "1")
        d = h // heads
        q, kv = heads // tp * d, math.ceil(kv_heads / tp) * d
        inter = inter_full / tp
        shapes = {
            "attn_pre_proj": ("gemm", "qkv_proj", {"m": t, "n": q + 2 * kv, "k": h}),
            "attn_post_proj": ("gemm", "o_proj", {"m": t, "n": h, "k": q}),
            "mlp_up_proj": ("gemm", "mlp_up", {"m": t, "n": int((2 if gated else 1) * inter),
                                               "k": h}),
            "mlp_down_proj": ("gemm", "mlp_down", {"m": t, "n": h, "k": int(inter)}),
            "input_layernorm": ("elementwise", "rmsnorm", {"tokens": t, "width": h}),
            "post_attention_layernorm": ("elementwise", "rmsnorm", {"tokens": t, "width": h}),
            "add": ("elementwise", "add", {"tokens": t, "width": h}),
            "mlp_act": ("elementwise", "act", {"tokens": t, "width": int(inter)}),
            "attn_rope": ("elementwise", "rotary", {"tokens": t, "width": q + kv}),
        }
        for op in ops:
            kind, name, shape = shapes[op]
            stats = {}
            for s in STATS:
                col = f"time_stats.{op}.{s}"
                try:
                    stats[s] = float(rec.get(col, np.nan)) * 1e-3
                except (TypeError, ValueError):
                    stats[s] = np.nan
            if not (np.isfinite(stats["median"]) and stats["median"] > 0):
                raise TraceFormatError(where, line, f"time_stats.{op}.median",
                                       "must be a positive number of milliseconds")
            extra = {}
            if kind == "gemm":
                extra["flops"] = 2.0 * shape["m"] * shape["n"] * shape["k"]
            else:
                tw = shape["tokens"] * shape["width"]
                moved = {"rmsnorm": 2, "add": 3, "act": 3 if gated else 2, "rotary": 2}[name]
                extra["bytes"] = float(moved * tw * ACT_BYTES)
                extra["flops"] = float({"rmsnorm": 4, "add": 1, "act": 4, "rotary": 3}[name]
                                       * tw)
            rows.append(new_row(op=kind, name=name, tp=tp, **shape, **extra, **env,
                                min_s=stats["min"], median_s=stats["median"],
                                max_s=stats["max"], std_s=stats["std"]))
    return rows


def import_tables(root: str | Path, gpu: str | None = None) -> pd.DataFrame:
    """Every Vidur ``mlp.csv`` under ``root`` (optionally one GPU's) as one profile."""
    found = find_tables(root)
    if gpu is not None:
        found = [f for f in found if f[0] == gpu]
        if not found:
            raise ConfigError("--gpu", gpu, f"no tables for it under {root}")
    rows: list[dict] = []
    for g, hf_id, path in found:
        rows += read_vidur_table(path, g, hf_id)
    return to_frame(rows)
