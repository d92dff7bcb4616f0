"""The profile: one CSV schema for measured kernel times, whoever measured them.

One row per (op, shape, dtype, tp) measurement. Columns (unused shape cells are 0):

=============  ==============================================================================
op             op class: ``gemm``, ``attn_prefill``, ``attn_decode`` or ``elementwise``
name           the operator: qkv_proj, o_proj, mlp_up, mlp_down, lm_head (gemm); attention;
               rmsnorm, add, act, rotary, embedding (elementwise)
model          the model whose layer shapes these are (a catalog name where known)
tp             tensor-parallel split the shape belongs to (shapes are already per rank)
dtype          operand dtype (bf16, fp16, fp32)
m, n, k        GEMM (m x k) @ (k x n); m = tokens, (k x n) the weight
batch          attention: sequences; q_len new tokens each on kv_len cached ones
q_len, kv_len
heads,         attention heads (per rank), KV heads (per rank), head width
kv_heads,
head_dim
tokens         elementwise: rows (tokens); width: columns per row
width
bytes          elementwise: activation bytes moved (read + written); other ops: 0
flops          FLOPs the cost model counts for this kernel (informational for gemm/attention)
repeats        timed repeats (0: not recorded by the source)
min_s, median_s, max_s, std_s   seconds per kernel call over the repeats
device_name    the name the measurement was filed under (``--device-name``)
hardware       what the runner saw (CPU model, CUDA device name) or the table's GPU
backend        torch-cpu, torch-cuda, numpy, or the importer's source (vidur)
threads        CPU threads the library used (0 on GPUs / unknown)
clock          what the seconds are: wall (perf_counter), cpu (the process's CPU time, one
               thread: excludes time the OS gave other jobs), cuda-events, or '' (unknown)
versions       library versions (python, numpy, torch, CUDA)
date           when the profile was taken (UTC, ISO 8601)
=============  ==============================================================================
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from infersim.errors import ConfigError, TraceFormatError

OPS = ("gemm", "attn_prefill", "attn_decode", "elementwise")
OP_CLASS = {"gemm": "gemm", "attn_prefill": "attention", "attn_decode": "attention",
            "elementwise": "elementwise"}
"""Op -> the class reported and fitted together (prefill and decode attention share one)."""

SHAPE_COLUMNS = ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim",
                 "tokens", "width")
TIME_COLUMNS = ("min_s", "median_s", "max_s", "std_s")
COLUMNS = ("op", "name", "model", "tp", "dtype", *SHAPE_COLUMNS, "bytes", "flops", "repeats",
           *TIME_COLUMNS, "device_name", "hardware", "backend", "threads", "clock", "versions",
           "date")
INTEGER_COLUMNS = ("tp", *SHAPE_COLUMNS, "repeats", "threads")
STRING_COLUMNS = ("op", "name", "model", "dtype", "device_name", "hardware", "backend",
                  "clock", "versions", "date")
REQUIRED = {  # columns each op needs > 0 (besides op, dtype and median_s; all are >= 0)
    "gemm": ("m", "n", "k"),
    "attn_prefill": ("batch", "q_len", "heads", "kv_heads", "head_dim"),
    "attn_decode": ("batch", "heads", "kv_heads", "head_dim"),
    "elementwise": ("bytes",),
}
DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")


def environment(backend: str, hardware: str, threads: int, clock: str = "wall",
                **versions: str) -> dict:
    """The environment columns of a profile row."""
    import numpy

    libs = {"python": platform.python_version(), "numpy": numpy.__version__, **versions}
    return {
        "hardware": hardware,
        "backend": backend,
        "threads": int(threads),
        "clock": clock,
        "versions": "; ".join(f"{k} {v}" for k, v in libs.items() if v),
        "date": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
    }


def new_row(**values) -> dict:
    """A profile row with every column, unused ones empty (0 or '')."""
    row = {c: ("" if c in STRING_COLUMNS else 0) for c in COLUMNS}
    row["tp"] = 1
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not profile columns: {sorted(unknown)}")
    row.update(values)
    return row


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts) as a profile frame in the documented column order and types."""
    df = pd.DataFrame([new_row(**r) for r in rows], columns=list(COLUMNS))
    for c in INTEGER_COLUMNS:
        df[c] = df[c].astype(np.int64)
    for c in ("bytes", "flops", *TIME_COLUMNS):
        df[c] = df[c].astype(np.float64)
    return df


def write_profile(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = df.reindex(columns=list(COLUMNS))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            df.to_csv(f, index=False)
        from infersim.atomic import replace_atomic

        replace_atomic(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_profile(path: str | Path) -> pd.DataFrame:
    """A profile CSV, validated: every error names the file, the line and the column."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError("--profile", where, "the file does not exist")
    try:
        df = pd.read_csv(path, dtype={c: str for c in STRING_COLUMNS}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TraceFormatError(where, 1, "-", f"not a readable CSV: {exc}") from None
    missing = [c for c in ("op", "dtype", "median_s") if c not in df.columns]
    if missing:
        raise TraceFormatError(where, 1, missing[0],
                               f"missing column; a profile has the columns {', '.join(COLUMNS)}")
    for c in COLUMNS:  # older or hand-made profiles may lack optional columns
        if c not in df.columns:
            df[c] = "" if c in STRING_COLUMNS else 0
    bad = ~df["op"].isin(OPS)
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise TraceFormatError(where, i + 2, "op",
                               f"unknown op {df['op'].iloc[i]!r}; allowed: {', '.join(OPS)}")
    bad = ~df["dtype"].isin(DTYPES)
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise TraceFormatError(where, i + 2, "dtype",
                               f"unknown dtype {df['dtype'].iloc[i]!r}; allowed: "
                               f"{', '.join(DTYPES)}")
    for c in (*SHAPE_COLUMNS, "tp", "bytes", "flops", "repeats", "threads", *TIME_COLUMNS):
        values = pd.to_numeric(df[c].replace("", 0), errors="coerce")
        bad = (values.isna() | (values < 0)).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceFormatError(where, i + 2, c, f"not a number >= 0: {df[c].iloc[i]!r}")
        df[c] = values
    t = df["median_s"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(t) & (t > 0)):
        i = int(np.argmax(~(np.isfinite(t) & (t > 0))))
        raise TraceFormatError(where, i + 2, "median_s",
                               f"must be a positive number of seconds, got {t[i]!r}")
    for op, cols in REQUIRED.items():
        rows = df["op"].to_numpy() == op
        for c in cols:
            bad = rows & ~(df[c].to_numpy(dtype=np.float64) > 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise TraceFormatError(where, i + 2, c, f"a {op} row needs {c} > 0")
    df["tp"] = df["tp"].where(df["tp"] > 0, 1)
    for c in INTEGER_COLUMNS:
        df[c] = df[c].astype(np.int64)
    return df.reindex(columns=list(COLUMNS)).reset_index(drop=True)


def shape_key(df: pd.DataFrame) -> pd.Series:
    """The size a held-out-by-shape split holds out: the token count of GEMMs and
    elementwise kernels, (batch, q_len, kv_len) of attention."""
    tokens = np.where(df["op"] == "gemm", df["m"], df["tokens"])
    key = pd.Series([f"t{int(t)}" for t in tokens], index=df.index)
    attn = df["op"].str.startswith("attn")
    key[attn] = ("a" + df.loc[attn, "batch"].astype(str) + "x" + df.loc[attn, "q_len"].astype(str)
                 + "@" + df.loc[attn, "kv_len"].astype(str))
    return key


def profile_date(df: pd.DataFrame) -> str:
    """The latest date in a profile ('' when none is recorded)."""
    dates = sorted(d for d in df["date"].astype(str) if d)
    return dates[-1] if dates else ""
