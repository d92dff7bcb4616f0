"""Predicted time of single kernels on one device, outside any model: what calibration
compares measured kernel times against."""

from __future__ import annotations

from infersim.costmodels.params import resolve_params
from infersim.costmodels.roofline import Roofline
from infersim.costmodels.work import overlapped
from infersim.hardware import DeviceSpec
from infersim.models import DTYPE_BYTES

ACT_BYTES = 2.0


def roofline_for(device: DeviceSpec, dtype: str = "bf16") -> Roofline:
    return Roofline(device, resolve_params(device), dtype, 0.0, None)


def gemm_time(device: DeviceSpec, m: int, n: int, k: int, dtype: str = "bf16") -> float:
    """Seconds of one eager (m x k) @ (k x n) GEMM whose (k x n) operand is a weight."""
    roof = roofline_for(device, dtype)
    weight = n * k * DTYPE_BYTES.get(dtype, 2.0)
    act = (m * k + m * n) * ACT_BYTES
    t = overlapped(roof.gemm(m, n, k, roof.params.gemm_efficiency),
                   roof.memory(weight, act), roof.params.overlap)
    return t + roof.params.kernel_overhead
