"""Predicted time of single kernels on one device, outside any model: what calibration
compares measured kernel times against.

The formulas are those of ``ops.py`` (the same ``Roofline``, the same ``Params``, the same
FLOP and byte counts), written so that every shape argument may be a NumPy array: a fit
evaluates thousands of kernels per parameter guess. ``tests/calibration`` checks that a
kernel predicted here costs exactly what the same operator costs inside ``CostModel``, so a
parameter fitted on kernels moves whole-step predictions the same way."""

from __future__ import annotations

import numpy as np

from infersim.costmodels.ops import ACT_BYTES
from infersim.costmodels.params import Params, resolve_params
from infersim.costmodels.roofline import TPU_ROW_PAD, Roofline
from infersim.costmodels.work import overlapped
from infersim.hardware import DeviceSpec
from infersim.models import DTYPE_BYTES


def roofline_for(device: DeviceSpec, dtype: str = "bf16") -> Roofline:
    return Roofline(device, resolve_params(device), dtype, 0.0, None)


def _ceil_to(x, multiple: int):
    return np.ceil(np.asarray(x, dtype=np.float64) / multiple) * multiple


class KernelModel:
    """Single-kernel times on one rank of ``device`` for operands of ``dtype`` (weights) and
    ``kv_dtype`` (KV cache); activations are 16-bit as in ``ops.py``. ``params`` overrides
    the device's resolved parameters (a fit tries many). Eager kernels: each pays
    ``kernel_overhead`` (no graph capture)."""

    def __init__(self, device: DeviceSpec, dtype: str = "bf16", kv_dtype: str | None = None,
                 params: Params | None = None) -> None:
        self.device = device
        self.params = params if params is not None else resolve_params(device)
        self.roof = Roofline(device, self.params, dtype, 0.0, None)
        self.wb = DTYPE_BYTES.get(dtype, 2.0)
        self.kvb = DTYPE_BYTES.get(kv_dtype or dtype, 2.0)

    # --- the Roofline's two primitives, for arrays ---------------------------------------
    def _gemm_compute(self, m, n, k, efficiency: float):
        """``Roofline.gemm`` for arrays (TPU pads rows to 8 and n, k to the MXU)."""
        r = self.roof
        if r.family == "tpu":
            flops = 2.0 * _ceil_to(m, TPU_ROW_PAD) * _ceil_to(n, r.mxu_dim) * _ceil_to(k, r.mxu_dim)
        else:
            flops = 2.0 * np.asarray(m, dtype=np.float64) * n * k
        return flops / (r.peak * efficiency)

    def _memory(self, weight_bytes, act_bytes):
        """``Roofline.memory`` for arrays (CPU activations that fit in the LLC hit cache)."""
        r = self.roof
        t = np.asarray(weight_bytes, dtype=np.float64) / r.weight_bw
        if r.fused:
            return t
        act = np.asarray(act_bytes, dtype=np.float64)
        if r.family == "cpu":
            return t + np.where(act <= r.cache_bytes, act / r.cache_bw, act / r.act_bw)
        return t + act / r.act_bw

    def _kernel(self, t_compute, t_memory, kernels: float = 1.0):
        p = self.params
        t = overlapped(np.asarray(t_compute, dtype=np.float64),
                       np.asarray(t_memory, dtype=np.float64), p.overlap)
        return t + kernels * p.kernel_overhead

    # --- op classes ----------------------------------------------------------------------
    def gemm(self, m, n, k):
        """One (m x k) @ (k x n) GEMM whose (k x n) operand is a weight (``OpBuilder._gemm``)."""
        m = np.asarray(m, dtype=np.float64)
        weight = np.asarray(n, dtype=np.float64) * k * self.wb
        act = (m * k + m * n) * ACT_BYTES
        t = self._kernel(self._gemm_compute(m, n, k, self.params.gemm_efficiency),
                         self._memory(weight, act))
        return np.where(m > 0, t, 0.0)

    def attention_prefill(self, batch, q_len, kv_len, heads, kv_heads, head_dim):
        """``batch`` causal prefill chunks of ``q_len`` new tokens on ``kv_len`` cached ones,
        one layer (``OpBuilder.attention_works``, prefill part)."""
        b = np.asarray(batch, dtype=np.float64)
        q = np.asarray(q_len, dtype=np.float64)
        k = np.asarray(kv_len, dtype=np.float64)
        q_width = np.asarray(heads, dtype=np.float64) * head_dim
        kv_token = 2.0 * np.asarray(kv_heads, dtype=np.float64) * head_dim * self.kvb
        tokens = b * q
        qq = b * q * (q + 1) / 2
        pairs = b * q * k + qq + (1.0 - self.params.attention_causal_skip) * (qq - tokens)
        flops = 4.0 * q_width * pairs
        kv = (b * k + tokens) * kv_token
        act = 2 * tokens * q_width * ACT_BYTES
        t_c = flops / (self.roof.peak * self.params.attention_efficiency)
        return self._kernel(t_c, self._memory(kv, act), self.params.attention_overhead)

    def attention_decode(self, batch, kv_len, heads, kv_heads, head_dim):
        """``batch`` sequences decoding one token on ``kv_len`` cached ones, one layer."""
        b = np.asarray(batch, dtype=np.float64)
        q_width = np.asarray(heads, dtype=np.float64) * head_dim
        kv_token = 2.0 * np.asarray(kv_heads, dtype=np.float64) * head_dim * self.kvb
        ctx = b * np.asarray(kv_len, dtype=np.float64) + b
        flops = 4.0 * q_width * ctx
        kv = ctx * kv_token
        act = 2 * b * q_width * ACT_BYTES
        t_c = flops / (self.roof.peak * self.params.decode_attention_efficiency)
        return self._kernel(t_c, self._memory(kv, act), self.params.attention_overhead)

    def elementwise(self, act_bytes, flops, kernels: float = 1.0):
        """A streaming kernel (norm, residual add, activation, rotary) moving ``act_bytes``
        of activations (``OpBuilder._elementwise`` for one kernel)."""
        t_c = np.asarray(flops, dtype=np.float64) / self.roof.peak
        t_m = self._memory(0.0, act_bytes) / self.params.elementwise_efficiency
        return self._kernel(t_c, t_m, kernels * self.params.elementwise_overhead)


def gemm_time(device: DeviceSpec, m: int, n: int, k: int, dtype: str = "bf16") -> float:
    """Seconds of one eager (m x k) @ (k x n) GEMM whose (k x n) operand is a weight."""
    return float(KernelModel(device, dtype).gemm(m, n, k))
