"""Step replay: run the batches a simulation scheduled on a real transformer and compare the
measured time with the cost model's prediction for the same batch.

For each replayed row of ``steps.csv`` (``infersim run --out``) the batch is rebuilt from
the row's aggregates: ``decode_tokens`` sequences decoding one token on the mean decode
context, and ``prefill_seqs`` sequences of the mean chunk length on the mean prefill
context. That batch runs through a stack of ``layers`` decoder layers with the model's
per-rank shapes and random weights (RMSNorm, fused QKV GEMM, SDPA attention on a KV cache
(RoPE-free), O GEMM, residual adds, gated MLP), timed as a whole (median of repeats) and
scaled by ``num_layers / layers``; the embedding gather and the LM head on the sampled rows
are timed once and added.

What is compared: the model forward only. A bare PyTorch loop has no engine around it, so
the prediction it is compared with is the same reconstructed ``BatchShape``'s step time on
the given device *minus* the engine's per-step and per-sequence overheads (``step_overhead``,
``seq_overhead``) and minus collectives (one rank runs alone), predicted with CUDA graphs off
(the replay runs eager). The full prediction is reported next to it."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from infersim.calibration.runners import (
    CLOCKS,
    capture_graph,
    check_clock,
    context_mask,
    cuda_clock_name,
    import_torch,
)
from infersim.costmodels import BatchShape, CostModel, Placement
from infersim.costmodels.ops import RankShapes
from infersim.errors import ConfigError, TraceFormatError
from infersim.hardware import DeviceSpec, Quantity
from infersim.models import ModelSpec, get_model

STEP_COLUMNS = ("decode_tokens", "decode_context", "prefill_seqs", "prefill_tokens",
                "prefill_context", "sampled", "duration_s")
NOT_FORWARD = ("step_overhead", "tp_all_reduce", "logits_gather", "pp_send", "ep_all_to_all")
"""Ops of a predicted step that a single-rank forward pass does not run."""


@dataclass(frozen=True)
class ReplayBatch:
    """A step rebuilt from its aggregates (uniform sequences)."""

    decode_seqs: int
    decode_context: int  # per sequence
    prefill_seqs: int
    prefill_len: int  # new tokens per prefill sequence
    prefill_context: int  # cached tokens per prefill sequence
    sampled: int

    @property
    def shape(self) -> BatchShape:
        b = BatchShape()
        if self.decode_seqs:
            b = b + BatchShape.uniform(self.decode_seqs, 1, self.decode_context, sampled=False)
        if self.prefill_seqs:
            b = b + BatchShape.uniform(self.prefill_seqs, self.prefill_len, self.prefill_context,
                                       sampled=False)
        return replace(b, sampled=self.sampled)

    @property
    def tokens(self) -> int:
        return self.decode_seqs + self.prefill_seqs * self.prefill_len


def rebuild(row: dict) -> ReplayBatch:
    """The uniform batch of one steps.csv row (a prefill chunk of one token decodes)."""
    d = int(row["decode_tokens"])
    p = int(row["prefill_seqs"])
    dc = round(row["decode_context"] / d) if d else 0
    q = round(row["prefill_tokens"] / p) if p else 0
    k = round(row["prefill_context"] / p) if p else 0
    if p and q <= 1:  # one-token chunks cost what decodes cost
        dc = round((d * dc + p * k) / (d + p))
        d, p, q, k = d + p, 0, 0, 0
    sampled = min(int(row["sampled"]), d + p)
    return ReplayBatch(d, dc, p, q, k, sampled)


def read_steps(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--steps", str(path), "the file does not exist")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TraceFormatError(str(path), 1, "-", f"not a readable CSV: {exc}") from None
    for col in STEP_COLUMNS:
        if col not in df.columns:
            raise TraceFormatError(str(path), 1, col, "missing column; steps.csv from "
                                   f"`infersim run --out` has {', '.join(STEP_COLUMNS)}")
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any() or (values < 0).any():
            i = int(np.argmax((values.isna() | (values < 0)).to_numpy()))
            raise TraceFormatError(str(path), i + 2, col, "must be a number >= 0")
    return df


def run_config(steps: str | Path) -> dict:
    """The config.yaml written next to steps.csv ({} when there is none)."""
    cfg = Path(steps).with_name("config.yaml")
    if not cfg.is_file():
        return {}
    try:
        return yaml.safe_load(cfg.read_text()) or {}
    except yaml.YAMLError:
        return {}


def pick_steps(df: pd.DataFrame, max_steps: int) -> pd.DataFrame:
    """Up to ``max_steps`` non-empty steps, evenly spaced over the run."""
    if max_steps < 1:
        raise ConfigError("--max-steps", max_steps, "must be >= 1")
    busy = df[(df["decode_tokens"] + df["prefill_tokens"]) > 0]
    if len(busy) <= max_steps:
        return busy
    idx = np.unique(np.linspace(0, len(busy) - 1, max_steps).round().astype(int))
    return busy.iloc[idx]


# --- the transformer --------------------------------------------------------------------------
class TorchStack:
    """``layers`` decoder layers of ``model`` (per-rank shapes for ``tp``), random weights."""

    def __init__(self, model: ModelSpec, tp: int = 1, layers: int = 2, device: str = "auto",
                 dtype: str = "bf16", threads: int | None = None, clock: str = "wall") -> None:
        torch = import_torch()
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        check_clock(clock, threads, device.startswith("cuda"))
        self.now = CLOCKS[clock]
        self.clock = cuda_clock_name(clock) if device.startswith("cuda") else clock
        self.graphs = clock == "graph"
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        if model.num_attention_layers != model.num_layers or model.num_moe_layers:
            raise ConfigError("--model", model.name, "replay runs dense attention models only")
        if model.num_heads % tp or model.intermediate_size % tp:
            raise ConfigError("--tp", tp, f"must divide {model.name}'s heads and MLP width")
        s = RankShapes.of(model, tp, 1, 1)
        self.model, self.layers_run = model, layers
        self.h, self.q, self.kv, self.inter = s.hidden, int(s.q), int(s.kv), int(s.inter)
        self.hd = model.head_dim
        self.heads, self.kv_heads = self.q // self.hd, self.kv // self.hd
        self.gated = model.gated_mlp
        up = (2 if self.gated else 1) * self.inter
        gen = torch.Generator(device="cpu").manual_seed(0)

        def w(*shape):
            return (torch.randn(*shape, generator=gen) * 0.02).to(self.dtype).to(self.device)

        self.weights = [
            {"qkv": w(self.q + 2 * self.kv, self.h), "o": w(self.h, self.q), "up": w(up, self.h),
             "down": w(self.h, self.inter), "n1": torch.ones(self.h, dtype=self.dtype,
                                                            device=self.device),
             "n2": torch.ones(self.h, dtype=self.dtype, device=self.device)}
            for _ in range(layers)]
        vocab = math.ceil(model.vocab_size / tp)
        self.embed = self._big(vocab, self.h)  # vocabulary-parallel under TP
        self.lm_head = self.embed if model.tie_word_embeddings else self._big(vocab, self.h)
        self.final_norm = torch.ones(self.h, dtype=self.dtype, device=self.device)
        self.vocab = vocab

    def _big(self, rows: int, cols: int):
        """A large random matrix, tiled from a random block (fast to build)."""
        torch = self.torch
        block = torch.randn(min(rows, 1024), cols) * 0.02
        reps = math.ceil(rows / block.shape[0])
        return block.to(self.dtype).repeat(reps, 1)[:rows].contiguous().to(self.device)

    def synchronize(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    # one step
    def prepare(self, b: ReplayBatch) -> dict:
        """KV caches (per layer) and inputs of batch ``b``; not timed."""
        torch = self.torch
        kvh, hd = self.kv_heads, self.hd

        def cache(seqs, length):
            return [(torch.full((seqs, kvh, length, hd), 0.01, dtype=self.dtype,
                                device=self.device),
                     torch.full((seqs, kvh, length, hd), 0.01, dtype=self.dtype,
                                device=self.device)) for _ in range(self.layers_run)]

        state = {"b": b}
        if b.decode_seqs:
            state["dcache"] = cache(b.decode_seqs, b.decode_context + 1)
        if b.prefill_seqs:
            s = b.prefill_context + b.prefill_len
            state["pcache"] = cache(b.prefill_seqs, s)
            state["mask"] = (None if b.prefill_context == 0 else
                             context_mask(torch, b.prefill_len, s, self.device))
        gen = torch.Generator(device="cpu").manual_seed(1)
        state["ids"] = torch.randint(0, self.vocab, (b.tokens,), generator=gen).to(self.device)
        state["x"] = (torch.randn(b.tokens, self.h, generator=gen) * 0.1).to(self.dtype).to(
            self.device)
        last = list(range(b.decode_seqs))
        last += [b.decode_seqs + (i + 1) * b.prefill_len - 1 for i in range(b.prefill_seqs)]
        state["last"] = torch.tensor(last[:b.sampled], dtype=torch.long, device=self.device)
        return state

    def layers(self, st: dict):
        """The decoder-layer stack on the step's hidden states."""
        torch = self.torch
        F = torch.nn.functional
        b: ReplayBatch = st["b"]
        x = st["x"]
        q, kv, hd, d = self.q, self.kv, self.hd, b.decode_seqs
        heads, kvh = self.heads, self.kv_heads
        gqa = heads != kvh
        for i, w in enumerate(self.weights):
            r = x
            qkv = F.linear(F.rms_norm(x, (self.h,), w["n1"], 1e-5), w["qkv"])
            parts = []
            if d:
                c = b.decode_context
                qd = qkv[:d, :q].view(d, heads, 1, hd)
                kc, vc = st["dcache"][i]
                kc[:, :, c:c + 1].copy_(qkv[:d, q:q + kv].view(d, kvh, 1, hd))
                vc[:, :, c:c + 1].copy_(qkv[:d, q + kv:].view(d, kvh, 1, hd))
                out = F.scaled_dot_product_attention(qd, kc, vc, enable_gqa=gqa)
                parts.append(out.view(d, q))
            if b.prefill_seqs:
                p, n, c = b.prefill_seqs, b.prefill_len, b.prefill_context
                rows = qkv[d:].view(p, n, -1)
                qp = rows[:, :, :q].view(p, n, heads, hd).transpose(1, 2)
                kc, vc = st["pcache"][i]
                kc[:, :, c:].copy_(rows[:, :, q:q + kv].view(p, n, kvh, hd).transpose(1, 2))
                vc[:, :, c:].copy_(rows[:, :, q + kv:].view(p, n, kvh, hd).transpose(1, 2))
                mask = st["mask"]
                out = F.scaled_dot_product_attention(qp, kc, vc, attn_mask=mask,
                                                     is_causal=mask is None, enable_gqa=gqa)
                parts.append(out.transpose(1, 2).reshape(p * n, q))
            attn = parts[0] if len(parts) == 1 else torch.cat(parts)
            x = F.linear(attn, w["o"])
            x += r
            r = x
            up = F.linear(F.rms_norm(x, (self.h,), w["n2"], 1e-5), w["up"])
            act = F.silu(up[:, :self.inter]) * up[:, self.inter:] if self.gated else F.gelu(up)
            x = F.linear(act, w["down"])
            x += r
        return x

    def head(self, st: dict):
        """Embedding gather and the LM head on the sampled rows."""
        F = self.torch.nn.functional
        emb = F.embedding(st["ids"], self.embed)
        if not len(st["last"]):
            return emb
        rows = emb.index_select(0, st["last"])
        return F.linear(F.rms_norm(rows, (self.h,), self.final_norm, 1e-5), self.lm_head)

    def time(self, fn, st: dict, repeats: int, warmup: int = 1) -> float:
        """Median seconds of ``fn(st)`` over ``repeats`` (CUDA: events after a sync,
        around eager launches or, with the graph clock, one CUDA graph's replay)."""
        torch = self.torch
        samples = []
        with torch.no_grad():
            run = (capture_graph(torch, self.device, lambda: fn(st)).replay if self.graphs
                   else lambda: fn(st))
            for r in range(warmup + repeats):
                self.synchronize()
                if self.cuda:
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    run()
                    end.record()
                    end.synchronize()
                    elapsed = start.elapsed_time(end) / 1e3
                else:
                    t0 = self.now()
                    fn(st)
                    elapsed = self.now() - t0
                if r >= warmup:
                    samples.append(elapsed)
        return statistics.median(samples)


# --- the comparison ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayResult:
    steps: pd.DataFrame
    summary: dict


def eager_device(device: DeviceSpec) -> DeviceSpec:
    """``device`` with CUDA-graph capture off: every kernel at its ``kernel_overhead``, no
    padding to capture sizes. The replay runs eager kernels, or each step as one graph of
    exactly its tokens (the graph clock; judge it with a device fitted to a profile taken
    with the same clock, whose ``kernel_overhead`` is then the per-kernel cost in a graph)."""
    eff = dict(device.efficiency)
    eff["graph_max_tokens"] = Quantity(value=0, unit="tokens", source="step replay runs "
                                       "each step as it is, without padding", grade="A")
    return device.model_copy(update={"efficiency": eff})


def predicted_forward(cm: CostModel, shape: BatchShape) -> tuple[float, float]:
    """(forward-only, whole step) predicted seconds of ``shape``."""
    step = cm.step(shape)
    forward = sum(o.time_s for o in step.ops if o.name not in NOT_FORWARD)
    return forward, step.seconds


def predict_replayed(steps: pd.DataFrame, device: DeviceSpec, model: str | ModelSpec,
                     tp: int = 1) -> np.ndarray:
    """``device``'s forward time of each step of a replay's output (``ReplayResult.steps``):
    measured steps judged again with another device."""
    spec = model if isinstance(model, ModelSpec) else get_model(str(model))
    cm = CostModel(spec, Placement(eager_device(device), tp=tp))
    fields = [f.name for f in ReplayBatch.__dataclass_fields__.values()]
    return np.array([predicted_forward(cm, ReplayBatch(*(int(getattr(r, f)) for f in fields))
                                       .shape)[0] for r in steps.itertuples()])


def replay(steps: str | Path, device: DeviceSpec, model: str | ModelSpec | None = None,
           tp: int | None = None, max_steps: int = 40, layers: int = 2, repeats: int = 3,
           torch_device: str = "auto", dtype: str = "bf16", threads: int | None = None,
           clock: str = "wall", progress=None) -> ReplayResult:
    """Replay up to ``max_steps`` steps of ``steps`` (steps.csv) on a real transformer and
    compare the measured forward time with ``device``'s prediction."""
    if layers < 1:
        raise ConfigError("--layers", layers, "must be >= 1")
    if repeats < 1:
        raise ConfigError("--repeats", repeats, "must be >= 1")
    df = read_steps(steps)
    cfg = run_config(steps)
    if model is None:
        model = cfg.get("model")
        if not model:
            raise ConfigError("--model", None, f"no config.yaml next to {steps}; name the model")
    spec = model if isinstance(model, ModelSpec) else get_model(str(model))
    if tp is None:
        tp = int((cfg.get("placement") or {}).get("tp", 1))
    chosen = pick_steps(df, max_steps)
    if chosen.empty:
        raise ConfigError("--steps", str(steps), "has no step with tokens to replay")
    layers = min(layers, spec.num_layers)
    stack = TorchStack(spec, tp, layers, torch_device, dtype, threads, clock)
    cm = CostModel(spec, Placement(eager_device(device), tp=tp))
    scale = spec.num_layers / layers
    rows = []
    for i, (index, row) in enumerate(chosen.iterrows()):
        b = rebuild(row.to_dict())
        st = stack.prepare(b)
        t_layers = stack.time(stack.layers, st, repeats)
        t_head = stack.time(stack.head, st, repeats)
        measured = t_layers * scale + t_head
        forward, full = predicted_forward(cm, b.shape)
        rows.append({"step": int(index), "decode_seqs": b.decode_seqs,
                     "decode_context": b.decode_context, "prefill_seqs": b.prefill_seqs,
                     "prefill_len": b.prefill_len, "prefill_context": b.prefill_context,
                     "sampled": b.sampled, "tokens": b.tokens,
                     "measured_layers_s": t_layers, "measured_head_s": t_head,
                     "measured_s": measured, "predicted_s": forward,
                     "predicted_step_s": full, "simulated_s": float(row["duration_s"]),
                     "error": forward / measured - 1.0})
        del st
        if progress:
            progress(i + 1, len(chosen))
    out = pd.DataFrame(rows)
    e = out["error"].to_numpy()
    summary = {
        "steps": len(out), "model": spec.name, "tp": tp, "device": device.name,
        "layers_run": layers, "num_layers": spec.num_layers, "repeats": repeats,
        "backend": f"torch-{stack.device.type}", "dtype": dtype,
        "torch": stack.torch.__version__,
        "threads": 0 if stack.cuda else stack.torch.get_num_threads(),
        "clock": stack.clock,
        "mape": float(np.mean(np.abs(e))), "median_ape": float(np.median(np.abs(e))),
        "worst": float(e[int(np.argmax(np.abs(e)))]),
        "measured_total_s": float(out["measured_s"].sum()),
        "predicted_total_s": float(out["predicted_s"].sum()),
    }
    return ReplayResult(out, summary)
