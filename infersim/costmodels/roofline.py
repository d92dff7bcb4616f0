"""Seconds for FLOPs, bytes and collectives on one rank of a device, family by family."""

from __future__ import annotations

import math

from infersim.costmodels.params import FUSED_FAMILIES, Params
from infersim.hardware import DeviceSpec, LinkSpec, MemoryTier

TPU_ROW_PAD = 8  # LHS rows are padded to the 8 sublanes of a vector register


def _ceil_to(x: float, multiple: int) -> float:
    return math.ceil(x / multiple) * multiple


class Roofline:
    """Turns work into time on one rank. TPU GEMMs pay for MXU padding; GPU tile and wave
    quantisation is left out on purpose: modelled with 128x128 tiles it doubled the error
    against measured A100/A40 GEMMs, since cuBLAS picks tile shapes per problem."""

    def __init__(self, device: DeviceSpec, params: Params, dtype: str,
                 weight_bytes_per_rank: float, link: LinkSpec | None) -> None:
        self.device, self.params, self.family = device, params, device.family
        self.fused = self.family in FUSED_FAMILIES
        self.peak = device.peak(dtype)
        scale = params.memory_efficiency * params.numa_efficiency
        main = device.tier()
        self.act_bw = main.bandwidth.si * scale
        self.weight_tier = self._weight_tier(weight_bytes_per_rank)
        self.weight_bw = self.weight_tier.bandwidth.si * scale
        self.cache_bytes = self._cache_bytes()
        self.cache_bw = self._cache_bandwidth() * scale
        self.mxu_dim = int(device.arch["mxu_dim"].si) if "mxu_dim" in device.arch else 128
        self.link = link

    def _weight_tier(self, weight_bytes: float) -> MemoryTier:
        """Weights live in main memory; when they do not fit and a slower tier follows
        (SN40L DDR, CPU-attached memory), they stream from the first tier that holds them
        (the last tier when none does: `CostModel.memory_note` then says so)."""
        tiers = list(self.device.memory)
        start = [t.name for t in tiers].index(self.device.main_memory)
        for tier in tiers[start:]:
            if weight_bytes <= tier.capacity.si:
                return tier
        return tiers[-1]

    def _cache_bytes(self) -> float:
        """CPU only: activations that fit in the last-level cache do not touch DRAM."""
        if self.family != "cpu":
            return 0.0
        tiers = list(self.device.memory)
        start = [t.name for t in tiers].index(self.device.main_memory)
        return tiers[start - 1].capacity.si if start > 0 else 0.0

    def _cache_bandwidth(self) -> float:
        tiers = list(self.device.memory)
        start = [t.name for t in tiers].index(self.device.main_memory)
        return tiers[start - 1].bandwidth.si if start > 0 else tiers[start].bandwidth.si

    # --- compute ------------------------------------------------------------------------
    def gemm(self, m: float, n: float, k: float, efficiency: float) -> float:
        """Seconds of compute for one (m x k) @ (k x n) GEMM on one rank."""
        if m <= 0 or n <= 0 or k <= 0:
            return 0.0
        if self.family == "tpu":
            flops = (2.0 * _ceil_to(m, TPU_ROW_PAD) * _ceil_to(n, self.mxu_dim)
                     * _ceil_to(k, self.mxu_dim))
        else:
            flops = 2.0 * m * n * k
        return flops / (self.peak * efficiency)

    def compute(self, flops: float, efficiency: float) -> float:
        return flops / (self.peak * efficiency)

    # --- memory -------------------------------------------------------------------------
    def memory(self, weight_bytes: float, act_bytes: float) -> float:
        """Seconds to move weights/KV (main memory) and activations. Fused families keep
        activations on chip; a CPU serves activations that fit in its LLC from cache."""
        t = weight_bytes / self.weight_bw
        if self.fused:
            return t
        if self.family == "cpu" and act_bytes <= self.cache_bytes:
            return t + act_bytes / self.cache_bw
        return t + act_bytes / self.act_bw

    # --- communication ------------------------------------------------------------------
    def allreduce(self, message_bytes: float, ranks: int) -> float:
        """Ring all-reduce: 2(p-1)/p of the message over the link each way, 2(p-1) hops."""
        if ranks <= 1 or message_bytes <= 0 or self.link is None:
            return 0.0
        bw = self.link.bandwidth.si * self.params.link_efficiency
        hops = 2 * (ranks - 1)
        return hops / ranks * message_bytes / bw + hops * self.link.latency.si

    def all_to_all(self, message_bytes: float, ranks: int) -> float:
        """Each rank sends (p-1)/p of its message to the others."""
        if ranks <= 1 or message_bytes <= 0 or self.link is None:
            return 0.0
        bw = self.link.bandwidth.si * self.params.link_efficiency
        return (ranks - 1) / ranks * message_bytes / bw + self.link.latency.si

    def send(self, message_bytes: float) -> float:
        if message_bytes <= 0 or self.link is None:
            return 0.0
        bw = self.link.bandwidth.si * self.params.link_efficiency
        return message_bytes / bw + self.link.latency.si
