"""Predicted times for a profile's rows, fit / held-out splits, and error summaries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from infersim.calibration.profile import OP_CLASS, shape_key
from infersim.costmodels.kernels import KernelModel
from infersim.costmodels.params import Params
from infersim.errors import ConfigError
from infersim.hardware import DeviceSpec

CLASSES = ("gemm", "attention", "elementwise")
DEFAULT_HOLDOUT_MODELS = ("internlm-20b", "phi-2")
"""Held out of a by-model fit when present: the two Vidur-profiled models whose shapes no
other profiled model shares (hidden 5120 with 40 heads; hidden 2560, ungated GELU MLP)."""


def predict(df: pd.DataFrame, device: DeviceSpec, params: Params | None = None) -> np.ndarray:
    """Seconds the cost model predicts for each row of a profile on ``device``."""
    out = np.full(len(df), np.nan)
    for dtype, rows in df.groupby("dtype", sort=True).groups.items():
        km = KernelModel(device, str(dtype), params=params)
        sub = df.loc[rows]
        idx = df.index.get_indexer(rows)
        op = sub["op"].to_numpy()
        g = op == "gemm"
        if g.any():
            s = sub[g]
            out[idx[g]] = km.gemm(s["m"].to_numpy(), s["n"].to_numpy(), s["k"].to_numpy())
        a = op == "attn_prefill"
        if a.any():
            s = sub[a]
            out[idx[a]] = km.attention_prefill(s["batch"].to_numpy(), s["q_len"].to_numpy(),
                                               s["kv_len"].to_numpy(), s["heads"].to_numpy(),
                                               s["kv_heads"].to_numpy(), s["head_dim"].to_numpy())
        d = op == "attn_decode"
        if d.any():
            s = sub[d]
            out[idx[d]] = km.attention_decode(s["batch"].to_numpy(), s["kv_len"].to_numpy(),
                                              s["heads"].to_numpy(), s["kv_heads"].to_numpy(),
                                              s["head_dim"].to_numpy())
        e = op == "elementwise"
        if e.any():
            s = sub[e]
            out[idx[e]] = km.elementwise(s["bytes"].to_numpy(), s["flops"].to_numpy())
    return out


# --- splits -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """Which rows a fit may use. ``model``: rows of ``holdout`` models are held out;
    ``shape``: every ``every``-th size of each op, counted from the second smallest, is held
    out (sizes: token counts; attention's (batch, q, context) ordered by query-key pairs);
    ``none``: nothing is held out."""

    kind: str
    holdout: tuple[str, ...] = ()
    every: int = 3

    def held_out(self, df: pd.DataFrame) -> np.ndarray:
        if self.kind == "none":
            return np.zeros(len(df), dtype=bool)
        if self.kind == "model":
            return df["model"].isin(self.holdout).to_numpy()
        keys = shape_key(df)
        size = _size(df)
        out = np.zeros(len(df), dtype=bool)
        for op in sorted(df["op"].unique()):
            rows = (df["op"] == op).to_numpy()
            first = {}
            for key, s in zip(keys[rows], size[rows], strict=True):
                first.setdefault(key, s)
            ordered = sorted(first, key=lambda k: (first[k], _numeric(k)))
            hold = {k for i, k in enumerate(ordered) if i % self.every == 1}
            out |= rows & keys.isin(hold).to_numpy()
        return out

    def describe(self) -> str:
        if self.kind == "model":
            return f"by model, held out: {', '.join(self.holdout)}"
        if self.kind == "shape":
            nth = {2: "2nd", 3: "3rd"}.get(self.every, f"{self.every}th")
            return f"by shape, every {nth} size held out"
        return "no held-out set"


def _size(df: pd.DataFrame) -> np.ndarray:
    """What orders the sizes of a by-shape split: tokens, or attention's query-key pairs
    (so a product grid's sizes interleave instead of holding out one context length)."""
    tokens = np.where(df["op"] == "gemm", df["m"], df["tokens"]).astype(np.float64)
    b, q, k = (df[c].to_numpy(dtype=np.float64) for c in ("batch", "q_len", "kv_len"))
    pairs = b * q * (k + (q + 1) / 2)
    return np.where(df["op"].str.startswith("attn").to_numpy(), pairs, tokens)


def _numeric(key: str) -> tuple:
    return tuple(int(x) for x in key[1:].replace("x", " ").replace("@", " ").split())


def make_split(df: pd.DataFrame, kind: str = "auto", holdout: tuple[str, ...] | None = None,
               every: int = 3) -> Split:
    """The split a fit and its report use. ``auto``: by model when the profile holds three
    or more models, else by shape."""
    models = sorted(m for m in df["model"].unique() if m)
    if kind not in ("auto", "model", "shape", "none"):
        raise ConfigError("--split", kind, "allowed: auto, model, shape, none")
    if every < 2:
        raise ConfigError("--every", every, "must be >= 2")
    if kind == "auto":
        kind = "model" if len(models) >= 3 or holdout else "shape"
    if kind != "model":
        return Split(kind, (), every)
    if holdout:
        unknown = [m for m in holdout if m not in models]
        if unknown:
            raise ConfigError("--holdout-models", ",".join(unknown),
                              f"not in the profile; its models: {', '.join(models)}")
        chosen = tuple(holdout)
    else:
        chosen = tuple(m for m in DEFAULT_HOLDOUT_MODELS if m in models)
        if not chosen:
            chosen = tuple(models[-math.ceil(len(models) / 3):])
    if len(chosen) >= len(models):
        raise ConfigError("--holdout-models", ",".join(chosen),
                          "would hold out every model; keep at least one to fit on")
    return Split("model", chosen, every)


# --- errors -----------------------------------------------------------------------------------
def evaluate(df: pd.DataFrame, device: DeviceSpec, split: Split) -> pd.DataFrame:
    """Per row: op class, set (fit / held-out), measured and predicted seconds, and the
    relative error (predicted / measured - 1)."""
    pred = predict(df, device)
    held = split.held_out(df)
    out = df[["op", "name", "model", "tp", "dtype", "m", "n", "k", "batch", "q_len", "kv_len",
              "tokens", "width"]].copy()
    out.insert(0, "op_class", df["op"].map(OP_CLASS))
    out.insert(1, "set", np.where(held, "held-out", "fit"))
    out["measured_s"] = df["median_s"].to_numpy()
    out["predicted_s"] = pred
    out["error"] = pred / out["measured_s"] - 1.0
    return out


def summarize(ev: pd.DataFrame) -> pd.DataFrame:
    """Per op class and set: kernels, MAPE, median absolute error, worst error (signed)."""
    rows = []
    for cls in [c for c in CLASSES if c in set(ev["op_class"])]:
        for which in ("fit", "held-out"):
            e = ev.loc[(ev["op_class"] == cls) & (ev["set"] == which), "error"].to_numpy()
            if not len(e):
                continue
            worst = e[int(np.argmax(np.abs(e)))]
            rows.append({"op_class": cls, "set": which, "kernels": len(e),
                         "mape": float(np.mean(np.abs(e))),
                         "median_ape": float(np.median(np.abs(e))), "worst": float(worst)})
    return pd.DataFrame(rows, columns=["op_class", "set", "kernels", "mape", "median_ape",
                                       "worst"])


def select_device_rows(df: pd.DataFrame, device_name: str | None, where: str) -> pd.DataFrame:
    """The rows filed under ``device_name`` (required when the profile holds several)."""
    names = sorted(df["device_name"].astype(str).unique())
    if device_name is None:
        if len(names) > 1:
            raise ConfigError("--device-name", None,
                              f"{where} holds several devices; pick one of {', '.join(names)}")
        return df
    sel = df[df["device_name"] == device_name]
    if sel.empty:
        raise ConfigError("--device-name", device_name,
                          f"not in {where}; its devices: {', '.join(names)}")
    return sel.reset_index(drop=True)
