"""The few efficiency parameters each device family's cost model uses, with sourced
defaults. A device file may override any of them under ``efficiency:``; calibration
writes fitted values there with grade C."""

from __future__ import annotations

from dataclasses import dataclass

from infersim.errors import ConfigError
from infersim.hardware import DeviceSpec, Quantity, lowest_grade

# name -> (dimension, meaning)
PARAMETERS: dict[str, tuple[str, str]] = {
    "gemm_efficiency": ("1", "fraction of dense peak a large GEMM reaches"),
    "attention_efficiency": ("1", "fraction of dense peak reached by prefill attention"),
    "decode_attention_efficiency": ("1", "fraction of dense peak reached by decode attention "
                                    "(one query row per sequence)"),
    "attention_causal_skip": ("1", "share of the causally masked query-key pairs prefill "
                              "attention skips (1: FlashAttention-style, 0: the full square)"),
    "moe_efficiency": ("1", "fraction of dense peak reached by grouped expert GEMMs"),
    "memory_efficiency": ("1", "fraction of main-memory bandwidth streaming kernels reach"),
    "elementwise_efficiency": ("1", "share of that streaming rate (memory_efficiency) that norm, "
                               "activation and rotary kernels reach"),
    "elementwise_overhead": ("1", "fixed cost of a norm, activation or rotary kernel, as a "
                             "multiple of kernel_overhead"),
    "attention_overhead": ("1", "fixed cost of an attention kernel call, as a multiple of "
                           "kernel_overhead"),
    "overlap": ("1", "share of the smaller of compute/memory time a kernel hides (1 = roofline)"),
    "kernel_overhead": ("s", "fixed cost added to every kernel (launch, sync, tail)"),
    "graph_kernel_overhead": ("s", "the same inside a captured graph (CUDA graphs)"),
    "graph_max_tokens": ("tokens", "largest step captured as a graph; 0 = no graphs"),
    "step_overhead": ("s", "per engine step: scheduling, input preparation, sampling"),
    "seq_overhead": ("s", "per sequence in the step"),
    "link_efficiency": ("1", "fraction of link bandwidth a collective reaches"),
    "runtime_reserved": ("B", "per-rank memory the runtime keeps (context, graphs, buffers)"),
    "numa_efficiency": ("1", "fraction of summed socket bandwidth one model reaches (CPU)"),
}

_BLIS = "BLIS calibrated roofline simulator overheads, as quoted in REFERENCE.md"
_SIM = "another simulator's defaults (GEMM 0.70, attention 0.45, MoE 0.50, BW 0.85, 4 us launch)"
_VLLM_GRAPHS = "vLLM V1 default max_cudagraph_capture_size = 512 (engine default, not hardware)"


def _q(value: float, unit: str, source: str, grade: str) -> Quantity:
    return Quantity(value=value, unit=unit, source=source, grade=grade)


_COMMON = {
    "gemm_efficiency": _q(0.70, "1", _SIM, "D"),
    "attention_efficiency": _q(0.45, "1", _SIM, "D"),
    "decode_attention_efficiency": _q(0.45, "1", _SIM + "; the prefill value", "D"),
    "attention_causal_skip": _q(1.0, "1", "assumption: kernels skip fully masked tiles as "
                                "FlashAttention does (Dao et al., 2022)", "D"),
    "moe_efficiency": _q(0.50, "1", _SIM, "D"),
    "memory_efficiency": _q(0.85, "1", _SIM, "D"),
    "elementwise_efficiency": _q(1.0, "1", "assumption: elementwise kernels stream as fast as "
                                 "GEMM weights do (uncalibrated)", "D"),
    "elementwise_overhead": _q(1.0, "1", "assumption: every kernel launches at the same cost "
                               "(uncalibrated)", "D"),
    "attention_overhead": _q(1.0, "1", "assumption: every kernel launches at the same cost "
                             "(uncalibrated)", "D"),
    "overlap": _q(1.0, "1", "classical roofline: compute and memory overlap fully", "D"),
    "kernel_overhead": _q(4e-6, "s", _SIM, "D"),
    "graph_kernel_overhead": _q(4e-6, "s", "no graph capture: same as kernel_overhead", "D"),
    "graph_max_tokens": _q(0, "tokens", "no graph capture", "D"),
    "step_overhead": _q(126e-6, "s", _BLIS, "B"),
    "seq_overhead": _q(4e-6, "s", _BLIS, "B"),
    "link_efficiency": _q(0.80, "1", "assumption: collectives reach ~80% of link bandwidth",
                          "D"),
    "numa_efficiency": _q(1.0, "1", "single memory domain", "D"),
    "runtime_reserved": _q(1.0, "GiB", "assumption: CUDA context, graphs and buffers outside "
                           "the profiled activations", "D"),
}

FAMILY_DEFAULTS: dict[str, dict[str, Quantity]] = {
    "gpu": {
        "graph_kernel_overhead": _q(1.5e-6, "s", "assumption: kernel gaps inside a CUDA graph "
                                    "replay are ~1-2 us", "D"),
        "graph_max_tokens": _q(512, "tokens", _VLLM_GRAPHS, "B"),
    },
    "npu": {
        "gemm_efficiency": _q(0.60, "1", "assumption: MME GEMMs below GPU efficiency", "D"),
        "kernel_overhead": _q(10e-6, "s", "assumption: no CUDA-graph equivalent per kernel", "D"),
        "graph_kernel_overhead": _q(3e-6, "s", "assumption: HPU graphs replay", "D"),
        "graph_max_tokens": _q(512, "tokens", "assumption: bucketed HPU graphs like vLLM's", "D"),
    },
    "tpu": {
        "kernel_overhead": _q(1e-6, "s", "assumption: XLA fuses a layer into few kernels", "D"),
        "graph_kernel_overhead": _q(1e-6, "s", "assumption: XLA programs are compiled", "D"),
        "step_overhead": _q(300e-6, "s", "assumption: host round trip per step", "D"),
    },
    "cpu": {
        "gemm_efficiency": _q(0.50, "1", "assumption: AMX/AVX-512 GEMMs reach half of peak", "D"),
        "attention_efficiency": _q(0.20, "1", "assumption: softmax/attention without AMX", "D"),
        "decode_attention_efficiency": _q(0.20, "1", "assumption: as prefill attention", "D"),
        "moe_efficiency": _q(0.35, "1", "assumption", "D"),
        "memory_efficiency": _q(0.70, "1", "assumption: STREAM reaches ~70-80% of DDR5 peak",
                                "D"),
        "kernel_overhead": _q(15e-6, "s", "assumption: OpenMP fork/barrier per operator", "D"),
        "graph_kernel_overhead": _q(15e-6, "s", "no graphs on CPU", "D"),
        "step_overhead": _q(500e-6, "s", "assumption: Python engine step on CPU", "D"),
        "numa_efficiency": _q(0.80, "1", "assumption: two sockets interleaved over UPI/xGMI",
                              "D"),
    },
    "dataflow": {
        "gemm_efficiency": _q(0.60, "1", "assumption", "D"),
        "memory_efficiency": _q(0.75, "1", "SN40L paper claims >75% of peak HBM bandwidth in "
                                "decode (arXiv 2405.07518)", "B"),
        "kernel_overhead": _q(5e-6, "s", "assumption: one fused kernel per decoder layer", "D"),
        "graph_kernel_overhead": _q(5e-6, "s", "assumption", "D"),
    },
    "fpga": {
        "gemm_efficiency": _q(0.80, "1", "assumption: a fixed pipeline keeps DSPs busy", "D"),
        "attention_efficiency": _q(0.50, "1", "assumption", "D"),
        "decode_attention_efficiency": _q(0.50, "1", "assumption: as prefill attention", "D"),
        "memory_efficiency": _q(0.80, "1", "assumption: HBM controllers at ~80% of peak", "D"),
        "kernel_overhead": _q(2e-6, "s", "assumption: pipeline fill per layer", "D"),
        "graph_kernel_overhead": _q(2e-6, "s", "assumption", "D"),
        "step_overhead": _q(200e-6, "s", "assumption: host driver per step", "D"),
    },
}

FUSED_FAMILIES = frozenset({"dataflow", "fpga"})
"""Families that run a decoder layer as one fused pipeline: weights stream once, activations
stay on chip, compute and memory overlap across the whole layer."""


@dataclass(frozen=True)
class Params:
    """Resolved parameters for one device (SI values) and the lowest grade among them."""

    values: dict[str, float]
    grade: str

    def __getattr__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def resolve_params(device: DeviceSpec) -> Params:
    """Family defaults overlaid with the device file's ``efficiency`` entries, validated."""
    merged = {**_COMMON, **FAMILY_DEFAULTS.get(device.family, {})}
    for name, q in device.efficiency.items():
        if name not in PARAMETERS:
            raise ConfigError(f"{device.name}: efficiency.{name}", q.value,
                              f"allowed parameters: {', '.join(PARAMETERS)}")
        dimension = PARAMETERS[name][0]
        if q.dimension != dimension:
            raise ConfigError(f"{device.name}: efficiency.{name}.unit", q.unit,
                              f"must be a {dimension!r} unit")
        merged[name] = q
    for name in ("gemm_efficiency", "attention_efficiency", "decode_attention_efficiency",
                 "moe_efficiency", "memory_efficiency", "elementwise_efficiency",
                 "link_efficiency", "numa_efficiency", "overlap"):
        if not 0 < merged[name].si <= 1:
            raise ConfigError(f"{device.name}: efficiency.{name}", merged[name].value,
                              "must be in (0, 1]")
    if not 0 <= merged["attention_causal_skip"].si <= 1:
        raise ConfigError(f"{device.name}: efficiency.attention_causal_skip",
                          merged["attention_causal_skip"].value, "must be in [0, 1]")
    for name in ("elementwise_overhead", "attention_overhead"):
        if merged[name].si < 0:
            raise ConfigError(f"{device.name}: efficiency.{name}", merged[name].value,
                              "must be >= 0")
    return Params({k: q.si for k, q in merged.items()}, lowest_grade([q.grade for q in
                                                                        merged.values()]))


def describe_params(device: DeviceSpec) -> dict[str, Quantity]:
    """The parameters in force for ``device`` with their sources (for `hardware show`)."""
    merged = {**_COMMON, **FAMILY_DEFAULTS.get(device.family, {}), **device.efficiency}
    return {k: merged[k] for k in PARAMETERS}
