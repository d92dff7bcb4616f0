"""Work of one operator class in one step: FLOPs, bytes and the time each resource needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Work:
    """Per-replica FLOPs and bytes of an operator class (all its layers together) and the
    seconds each resource needs on one rank. ``weight_bytes`` are weights and KV cache (always
    from main memory); ``act_bytes`` are activations (kept on chip by fused families)."""

    name: str
    flops: float = 0.0
    weight_bytes: float = 0.0
    act_bytes: float = 0.0
    comm_bytes: float = 0.0
    t_compute: float = 0.0
    t_memory: float = 0.0
    t_comm: float = 0.0
    t_overhead: float = 0.0
    in_layer: bool = True  # part of a decoder layer (fused by dataflow/FPGA families)
    overlap: float = 1.0  # share of the smaller of compute/memory time hidden by the larger

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.act_bytes

    @property
    def time(self) -> float:
        """Unfused: compute and memory overlap within the kernel; comm and overhead add."""
        return overlapped(self.t_compute, self.t_memory, self.overlap) + self.t_comm + \
            self.t_overhead

    @property
    def bound(self) -> str:
        times = {"compute": self.t_compute, "memory": self.t_memory, "comm": self.t_comm,
                 "overhead": self.t_overhead}
        return max(times, key=times.__getitem__)


def overlapped(t_compute: float, t_memory: float, overlap: float) -> float:
    """Time of a kernel needing ``t_compute`` and ``t_memory``: the larger plus the part of
    the smaller that is not hidden (``overlap`` = 1 is the classical roofline max)."""
    if isinstance(t_compute, np.ndarray) or isinstance(t_memory, np.ndarray):  # many steps
        big, small = np.maximum(t_compute, t_memory), np.minimum(t_compute, t_memory)
    else:
        big, small = (t_compute, t_memory) if t_compute >= t_memory else (t_memory, t_compute)
    return big + (1.0 - overlap) * small
