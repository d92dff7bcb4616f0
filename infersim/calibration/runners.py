"""Runners that time real kernels: PyTorch (CPU, or CUDA when present) and NumPy.

Each runner times the kernels of a model's layer: its GEMMs (QKV, O, gate/up, down, LM
head) over token counts and TP splits, attention prefill (query length x context) and decode
(batch x context) on a KV cache, and the norm / residual / activation kernels. Every case is
warmed up, then timed ``repeats`` times; each repeat runs the kernel enough times to last
``min_time`` and records seconds per call; the profile keeps min/median/max/std.

Operands a real forward pass reads from main memory (weights, the KV cache) are rotated
among enough copies to exceed twice the last-level cache (L2 on a GPU), so a small GEMM
measures memory, not a cache hit it would never get in a model (each layer has its own
weights). Activations are reused: in a model they were just written and are as hot.

PyTorch is an optional extra (``pip install 'infersim[calibrate]'``) and is imported only
inside the runner that needs it."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from infersim.calibration.profile import environment, new_row, to_frame
from infersim.costmodels.ops import RankShapes
from infersim.errors import ConfigError, InfersimError, UnknownNameError
from infersim.models import DTYPE_BYTES, ModelSpec

ACT_BYTES = 2  # the cost model's activations are 16-bit; elementwise rows record real bytes


@dataclass(frozen=True)
class Grid:
    """The sizes a profile covers. Attention cases above ``max_attention_flops`` (a CPU's
    SDPA runs at a few GFLOP/s) or with a KV cache above ``max_kv_bytes`` are skipped."""

    tokens: tuple[int, ...]
    tps: tuple[int, ...]
    head_tokens: int  # LM head rows beyond this are rare (one per sampled sequence)
    prefill: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # batch, q_len, kv_len
    decode: tuple[tuple[int, ...], tuple[int, ...]]  # batch, kv_len
    max_attention_flops: float = math.inf
    max_kv_bytes: float = 4 * 2**30  # KV cache of one case (a 72B model's 64 KV heads...)


GRIDS = {
    "cpu": Grid((1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512), (1, 2, 4), 256,
                ((1, 2, 4), (16, 64, 256), (0, 256, 1024)), ((1, 4, 16), (64, 256, 1024, 2048)),
                max_attention_flops=4e9, max_kv_bytes=2**30),
    "cpu-quick": Grid((1, 4, 16, 64, 256), (1, 2), 64, ((1, 2), (16, 128), (0, 256)),
                      ((1, 8), (128, 1024)), max_attention_flops=1e9, max_kv_bytes=2**30),
    "gpu": Grid((1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
                 2048, 3072, 4096), (1, 2, 4, 8), 512,
                ((1, 2, 4, 8), (16, 64, 256, 1024, 2048), (0, 512, 2048, 8192)),
                ((1, 4, 16, 64, 256), (128, 512, 2048, 8192))),
    "gpu-quick": Grid((1, 8, 64, 512, 2048), (1, 2), 256, ((1, 4), (64, 1024), (0, 2048)),
                      ((1, 64), (512, 4096))),
}


class MissingExtraError(InfersimError):
    """An optional dependency (an extra) is not installed."""


@dataclass(frozen=True)
class Case:
    """One kernel to time (shapes per rank)."""

    op: str
    name: str
    tp: int = 1
    m: int = 0
    n: int = 0
    k: int = 0
    batch: int = 0
    q_len: int = 0
    kv_len: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    tokens: int = 0
    width: int = 0
    bytes: float = 0.0
    flops: float = 0.0

    def row(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def model_cases(model: ModelSpec, grid: Grid, tps: tuple[int, ...] | None = None,
                act_bytes: int = ACT_BYTES) -> list[Case]:
    """The kernels of one decoder layer (and the LM head) of ``model`` over ``grid``."""
    if model.num_attention_layers == 0 or model.num_dense_mlp_layers == 0:
        raise ConfigError("--model", model.name, "calibration runs dense attention models "
                          "(MoE and SSM layers are not profiled yet)")
    cases: list[Case] = []
    for tp in tps or grid.tps:
        if tp < 1 or model.num_heads % tp or model.intermediate_size % tp:
            continue
        s = RankShapes.of(model, tp, 1, 1)
        h, q, kv, inter = s.hidden, int(s.q), int(s.kv), int(s.inter)
        up = (2 if model.gated_mlp else 1) * inter
        heads, kv_heads = model.num_heads // tp, int(s.kv) // model.head_dim
        gemms = (("qkv_proj", q + 2 * kv, h), ("o_proj", h, q), ("mlp_up", up, h),
                 ("mlp_down", h, inter), ("lm_head", math.ceil(model.vocab_size / tp), h))
        for t in grid.tokens:
            for name, n, k in gemms:
                if name == "lm_head" and t > grid.head_tokens:
                    continue
                cases.append(Case("gemm", name, tp, m=t, n=n, k=k, flops=2.0 * t * n * k))
            cases += [
                Case("elementwise", "rmsnorm", tp, tokens=t, width=h,
                     bytes=2.0 * t * h * act_bytes, flops=4.0 * t * h),
                Case("elementwise", "add", tp, tokens=t, width=h,
                     bytes=3.0 * t * h * act_bytes, flops=1.0 * t * h),
                Case("elementwise", "act", tp, tokens=t, width=inter,
                     bytes=(3.0 if model.gated_mlp else 2.0) * t * inter * act_bytes,
                     flops=4.0 * t * inter),
            ]
        att = {"tp": tp, "heads": heads, "kv_heads": kv_heads, "head_dim": model.head_dim}
        width = heads * model.head_dim

        def fits(b: int, s: int, flops: float, kv_heads: int = kv_heads) -> bool:
            kv_bytes = 2.0 * b * kv_heads * s * model.head_dim * act_bytes
            return flops <= grid.max_attention_flops and kv_bytes <= grid.max_kv_bytes

        batches, qs, ctxs = grid.prefill
        for b in batches:
            for ql in qs:
                for c in ctxs:
                    flops = 4.0 * width * (b * ql * c + b * ql * (ql + 1) / 2)
                    if fits(b, c + ql, flops):
                        cases.append(Case("attn_prefill", "attention", batch=b, q_len=ql,
                                          kv_len=c, flops=flops, **att))
        batches, ctxs = grid.decode
        for b in batches:
            for c in ctxs:
                flops = 4.0 * width * b * (c + 1)
                if fits(b, c + 1, flops):
                    cases.append(Case("attn_decode", "attention", batch=b, q_len=1, kv_len=c,
                                      flops=flops, **att))
    if not cases:
        raise ConfigError("--tp", tps, f"no split divides {model.name}'s heads and MLP width")
    return cases


# --- timing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    min_s: float
    median_s: float
    max_s: float
    std_s: float
    repeats: int


def _stats(samples: list[float]) -> Timing:
    return Timing(min(samples), statistics.median(samples), max(samples),
                  statistics.pstdev(samples) if len(samples) > 1 else 0.0, len(samples))


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time, "graph": time.perf_counter}
"""``cpu``: the process's CPU time. With one thread it is the time the kernel ran, without
the slices a busy machine's scheduler gave to other jobs (their cache and memory-bandwidth
pressure remain); with several threads it would add up the threads, so it needs one.
``graph`` (CUDA): the timed calls are captured in one CUDA graph and CUDA events bracket its
replay: the GPU's time without the CPU's launch cost, as an engine that runs CUDA graphs
sees it. On CUDA ``wall`` means CUDA events around eager launches, which small kernels
leave launch-bound (the CPU's dispatch rate, not the GPU)."""


def check_clock(clock: str, threads: int | None, gpu: bool = False) -> None:
    if clock not in CLOCKS:
        raise ConfigError("--clock", clock, f"allowed: {', '.join(CLOCKS)}")
    if clock == "cpu" and (gpu or threads != 1):
        raise ConfigError("--clock", clock, "the CPU-time clock needs a CPU run with "
                          "--threads 1 (it adds up the time of every thread)")
    if clock == "graph" and not gpu:
        raise ConfigError("--clock", clock, "the CUDA-graph clock needs a CUDA device")


def cuda_clock_name(clock: str) -> str:
    """How a CUDA run's times were taken, as profiles and replays record it."""
    return "cuda-graph" if clock == "graph" else "cuda-events"


def capture_graph(torch, device, body: Callable[[], object]):
    """``body``'s kernels captured in a CUDA graph (after a warm-up on a side stream, as
    capture requires); ``graph.replay()`` reruns them with one launch."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        body()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph


RUNNERS: dict[str, type[Runner]] = {}


def register_runner(name: str):
    def wrap(cls):
        RUNNERS[name] = cls
        cls.registered_name = name
        return cls
    return wrap


def get_runner(name: str, **kwargs) -> Runner:
    try:
        cls = RUNNERS[name]
    except KeyError:
        raise UnknownNameError("backend", name, RUNNERS) from None
    return cls(**kwargs)


class Runner:
    """Times cases on one backend. Subclasses build the operands and the kernel call."""

    registered_name = ""
    backend = ""
    is_gpu = False
    dtype = "bf16"
    max_case_bytes = 1 << 30  # cold copies of one case stop at this many bytes

    def __init__(self, repeats: int = 5, warmup: int = 1, min_time: float = 2e-3,
                 flush_bytes: int | None = None, clock: str = "wall") -> None:
        if repeats < 1:
            raise ConfigError("--repeats", repeats, "must be >= 1")
        if clock not in CLOCKS:
            raise ConfigError("--clock", clock, f"allowed: {', '.join(CLOCKS)}")
        self.repeats, self.warmup, self.min_time = repeats, warmup, min_time
        self.clock = clock
        self.now = CLOCKS[clock]
        self.flush_bytes = flush_bytes if flush_bytes is not None else 2 * self.cache_bytes()

    # to override
    def cache_bytes(self) -> int:
        from infersim.calibration.localcpu import llc_bytes

        return llc_bytes()

    def hardware(self) -> str:
        from infersim.calibration.localcpu import cpu_name

        return cpu_name()

    def environment(self) -> dict:
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    def prepare(self, case: Case) -> tuple[Callable[[int], object], int]:
        """A call running the case on operand copy ``i``, and the number of copies."""
        raise NotImplementedError

    # shared
    def copies(self, cold_bytes: float) -> int:
        """Copies of the cold operands needed to exceed ``flush_bytes``."""
        if cold_bytes <= 0:
            return 1
        fit = max(int(self.max_case_bytes // cold_bytes), 1)
        return max(1, min(math.ceil(self.flush_bytes / cold_bytes), 64, fit))

    def time_call(self, call: Callable[[int], object], copies: int) -> Timing:
        for i in range(copies):  # first touch of every copy
            call(i)
        self.synchronize()
        start = self.now()
        call(0)
        self.synchronize()
        once = max(self.now() - start, 1e-7)
        inner = max(copies, min(1000, math.ceil(self.min_time / once)))
        samples: list[float] = []
        j = 0
        for r in range(self.warmup + self.repeats):
            elapsed = self._timed(call, inner, j, copies)
            j += inner
            if r >= self.warmup:
                samples.append(elapsed / inner)
        return _stats(samples)

    def _timed(self, call: Callable[[int], object], inner: int, j: int, copies: int) -> float:
        self.synchronize()
        start = self.now()
        for i in range(inner):
            call((j + i) % copies)
        self.synchronize()
        return self.now() - start

    def run_case(self, case: Case) -> Timing:
        call, copies = self.prepare(case)
        return self.time_call(call, copies)


# --- PyTorch ----------------------------------------------------------------------------------
def import_torch():
    try:
        import torch
    except ImportError:
        raise MissingExtraError(
            "PyTorch is not installed; install the calibrate extra: pip install "
            "'infersim[calibrate]' (it pins torch==2.13.0), or use --backend numpy") from None
    return torch


_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def context_mask(torch, q_len: int, total: int, device):
    """The lower-right causal mask of a ``q_len``-token prefill chunk at the end of a
    ``total``-token KV cache. On CUDA a ``CausalBias``: SDPA runs FlashAttention with the
    alignment built in, as serving engines' varlen kernels do (a boolean mask there sends
    SDPA to a path that reads the whole cache at a fraction of the bandwidth: 40-200 us for
    16 query tokens on an H200). On a CPU the boolean mask the CPU figures were measured
    with."""
    if device.type == "cuda":
        from torch.nn.attention.bias import causal_lower_right

        return causal_lower_right(q_len, total)
    return torch.ones(q_len, total, dtype=torch.bool, device=device).tril(total - q_len)


@register_runner("torch")
class TorchRunner(Runner):
    """PyTorch eager kernels on the CPU or a CUDA GPU (``device='auto'`` picks CUDA when
    present). CUDA times come from CUDA events around each repeat, after a synchronize."""

    def __init__(self, device: str = "auto", dtype: str = "bf16", threads: int | None = None,
                 **kwargs) -> None:
        torch = import_torch()
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise ConfigError("--device", device, "allowed: auto, cpu, cuda, cuda:N")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device", device, "no CUDA device is available to PyTorch")
        if dtype not in _TORCH_DTYPES:
            raise ConfigError("--dtype", dtype, f"allowed: {', '.join(_TORCH_DTYPES)}")
        check_clock(kwargs.get("clock", "wall"), threads, device.startswith("cuda"))
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = dtype
        self.tdtype = getattr(torch, _TORCH_DTYPES[dtype])
        self.backend = "torch-cuda" if self.cuda else "torch-cpu"
        self._graph = None  # (call, inner) and the CUDA graph timing it
        self.is_gpu = self.cuda
        if self.cuda:
            self.max_case_bytes = 8 << 30
        super().__init__(**kwargs)

    def cache_bytes(self) -> int:
        if self.cuda:
            props = self.torch.cuda.get_device_properties(self.device)
            return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
        return super().cache_bytes()

    def hardware(self) -> str:
        if self.cuda:
            return self.torch.cuda.get_device_name(self.device)
        return super().hardware()

    def environment(self) -> dict:
        torch = self.torch
        extra = {"torch": torch.__version__}
        if self.cuda:
            extra["cuda"] = torch.version.cuda or ""
        threads = 0 if self.cuda else torch.get_num_threads()
        clock = cuda_clock_name(self.clock) if self.cuda else self.clock
        return environment(self.backend, self.hardware(), threads, clock, **extra)

    def synchronize(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def _timed(self, call, inner, j, copies) -> float:
        if not self.cuda:
            return super()._timed(call, inner, j, copies)
        torch = self.torch
        if self.clock == "graph":
            key = (call, inner)
            if self._graph is None or self._graph[0] != key:
                self._graph = None  # the last case's graph and its memory go first

                def body():
                    for i in range(inner):
                        call(i % copies)
                self._graph = (key, capture_graph(torch, self.device, body))
            run = self._graph[1].replay
        else:
            def run():
                for i in range(inner):
                    call((j + i) % copies)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def _randn(self, *shape):
        """Random operands (on a CPU, large ones tile a random block: drawing a GB of
        normal numbers would take seconds, and GEMM speed does not depend on the values)."""
        torch = self.torch
        numel = math.prod(shape)
        block = min(numel, 1 << 20) if not self.cuda else numel
        x = torch.randn(block, device=self.device, dtype=torch.float32).to(self.tdtype) * 0.05
        if block < numel:
            x = x.repeat(math.ceil(numel / block))[:numel]
        return x.view(*shape)

    def prepare(self, case: Case):
        torch = self.torch
        F = torch.nn.functional
        size = DTYPE_BYTES[self.dtype]
        with torch.no_grad():
            if case.op == "gemm":
                x = self._randn(case.m, case.k)
                copies = self.copies(case.n * case.k * size)
                ws = [self._randn(case.n, case.k) for _ in range(copies)]
                return (lambda i: F.linear(x, ws[i])), copies
            if case.op in ("attn_prefill", "attn_decode"):
                return self._attention(case)
            return self._elementwise(case)

    def _attention(self, case: Case):
        torch = self.torch
        F = torch.nn.functional
        b, ql, c = case.batch, case.q_len, case.kv_len
        h, kvh, d = case.heads, case.kv_heads, case.head_dim
        s = c + ql
        size = DTYPE_BYTES[self.dtype]
        copies = self.copies(2 * b * kvh * s * d * size)
        q = self._randn(b, h, ql, d)
        caches = [(self._randn(b, kvh, s, d), self._randn(b, kvh, s, d)) for _ in range(copies)]
        gqa = h != kvh
        if ql == 1 or c == 0:  # decode sees the whole cache; a fresh prefill is plain causal
            causal = ql > 1

            def call(i):
                k, v = caches[i]
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
            return call, copies
        mask = context_mask(torch, ql, s, self.device)

        def masked(i):
            k, v = caches[i]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return masked, copies

    def _elementwise(self, case: Case):
        torch = self.torch
        F = torch.nn.functional
        t, w = case.tokens, case.width
        if case.name == "rmsnorm":
            x, weight = self._randn(t, w), self._randn(w)
            return (lambda i: F.rms_norm(x, (w,), weight, 1e-5)), 1
        if case.name == "add":
            x, r = self._randn(t, w), self._randn(t, w)
            return (lambda i: x.add_(r)), 1
        if case.name == "act":
            gate_up = self._randn(t, 2 * w)
            g, u = gate_up[:, :w], gate_up[:, w:]
            return (lambda i: F.silu(g) * u), 1
        raise ConfigError("elementwise op", case.name, "allowed: rmsnorm, add, act")


# --- NumPy ------------------------------------------------------------------------------------
@register_runner("numpy")
class NumpyRunner(Runner):
    """NumPy kernels on the CPU, fp32 only (NumPy has no bf16): BLAS GEMMs, attention as
    batched matmul + softmax, norms and activations as NumPy expressions."""

    backend = "numpy"

    def __init__(self, device: str = "auto", dtype: str = "fp32", threads: int | None = None,
                 **kwargs) -> None:
        if device not in ("auto", "cpu"):
            raise ConfigError("--device", device, "the numpy backend runs on the cpu only")
        if dtype != "fp32":
            raise ConfigError("--dtype", dtype, "the numpy backend runs fp32 only")
        if kwargs.get("clock", "wall") != "wall":
            raise ConfigError("--clock", kwargs["clock"], "the numpy backend times wall clock "
                              "(its BLAS may use several threads)")
        import numpy as np

        self.np = np
        self.dtype = "fp32"
        self.rng = np.random.default_rng(0)
        super().__init__(**kwargs)

    def environment(self) -> dict:
        from infersim.calibration.localcpu import cores

        return environment(self.backend, self.hardware(), cores(), self.clock)

    def _randn(self, *shape):
        return (self.rng.standard_normal(shape, dtype=self.np.float32) * 0.05)

    def prepare(self, case: Case):
        np = self.np
        if case.op == "gemm":
            x = self._randn(case.m, case.k)
            out = np.empty((case.m, case.n), dtype=np.float32)
            copies = self.copies(case.n * case.k * 4)
            ws = [self._randn(case.n, case.k) for _ in range(copies)]
            return (lambda i: np.matmul(x, ws[i].T, out=out)), copies
        if case.op in ("attn_prefill", "attn_decode"):
            return self._attention(case)
        return self._elementwise(case)

    def _attention(self, case: Case):
        np = self.np
        b, ql, c = case.batch, case.q_len, case.kv_len
        h, kvh, d = case.heads, case.kv_heads, case.head_dim
        s, group = c + ql, h // max(case.kv_heads, 1)
        copies = self.copies(2 * b * kvh * s * d * 4)
        q = self._randn(b, kvh, group, ql, d)
        caches = [(self._randn(b, kvh, 1, s, d), self._randn(b, kvh, 1, s, d))
                  for _ in range(copies)]
        mask = np.tril(np.ones((ql, s), dtype=bool), c) if ql > 1 else None
        scale = np.float32(1.0 / math.sqrt(d))

        def call(i):
            k, v = caches[i]
            scores = np.matmul(q, k.swapaxes(-1, -2)) * scale
            if mask is not None:
                scores = np.where(mask, scores, np.float32(-np.inf))
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            return np.matmul(scores, v)
        return call, copies

    def _elementwise(self, case: Case):
        np = self.np
        t, w = case.tokens, case.width
        if case.name == "rmsnorm":
            x, weight = self._randn(t, w), self._randn(w)

            def norm(i):
                rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(1e-5))
                return x / rms * weight
            return norm, 1
        if case.name == "add":
            x, r = self._randn(t, w), self._randn(t, w)
            return (lambda i: np.add(x, r, out=x)), 1
        if case.name == "act":
            g, u = self._randn(t, w), self._randn(t, w)
            return (lambda i: g / (1.0 + np.exp(-g)) * u), 1
        raise ConfigError("elementwise op", case.name, "allowed: rmsnorm, add, act")


# --- a whole profile --------------------------------------------------------------------------
def run_profile(model: ModelSpec, device_name: str, backend: str = "torch", quick: bool = False,
                tps: tuple[int, ...] | None = None, device: str = "auto",
                dtype: str | None = None, repeats: int | None = None,
                threads: int | None = None, cases: list[Case] | None = None,
                progress: Callable[[int, int], None] | None = None, clock: str = "wall"):
    """Time every case of ``model`` (or the given ``cases``) on ``backend``; returns a
    profile DataFrame (schema in ``infersim.calibration.profile``)."""
    kwargs = {"device": device, "threads": threads, "clock": clock,
              "repeats": repeats or (3 if quick else 5)}
    if dtype:
        kwargs["dtype"] = dtype
    runner = get_runner(backend, **kwargs)
    act = DTYPE_BYTES[runner.dtype] if runner.dtype == "fp32" else ACT_BYTES
    grid = GRIDS[("gpu" if runner.is_gpu else "cpu") + ("-quick" if quick else "")]
    todo = cases if cases is not None else model_cases(model, grid, tps, act_bytes=act)
    env = runner.environment()
    rows = []
    for i, case in enumerate(todo):
        t = runner.run_case(case)
        rows.append(new_row(**case.row(), model=model.name, dtype=runner.dtype,
                            repeats=t.repeats, min_s=t.min_s, median_s=t.median_s,
                            max_s=t.max_s, std_s=t.std_s, device_name=device_name, **env))
        if progress:
            progress(i + 1, len(todo))
    return to_frame(rows)
