"""What one engine step costs on one placement: ``CostModel.step(batch) -> StepCost``."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from infersim.costmodels.batch import BatchShape
from infersim.costmodels.ops import OpBuilder, RankShapes
from infersim.costmodels.params import Params, resolve_params
from infersim.costmodels.placement import Placement
from infersim.costmodels.roofline import Roofline
from infersim.costmodels.work import Work, overlapped
from infersim.errors import ConfigError
from infersim.hardware import lowest_grade
from infersim.models import DTYPE_BYTES, ModelSpec

# vLLM V1's default CUDA-graph capture sizes (cudagraph_capture_sizes for max 512)
CAPTURE_SIZES = (1, 2, 4, *range(8, 257, 8), *range(272, 513, 16))


@dataclass(frozen=True, slots=True)
class OpCost:
    """One operator class of a step: totals over the replica's ranks, time on one rank."""

    name: str
    flops: float
    bytes: float
    comm_bytes: float
    time_s: float
    bound: str  # compute | memory | comm | overhead


@dataclass(frozen=True)
class StepCost:
    """Seconds of one step with its breakdown, utilisation and the lowest input grade."""

    seconds: float
    ops: tuple[OpCost, ...]
    mfu: float
    mbu: float
    grade: str

    @property
    def flops(self) -> float:
        return sum(o.flops for o in self.ops)

    @property
    def bytes(self) -> float:
        return sum(o.bytes for o in self.ops)

    @property
    def comm_bytes(self) -> float:
        return sum(o.comm_bytes for o in self.ops)

    def to_dict(self) -> dict:
        return {
            "step_time_s": self.seconds,
            "mfu": self.mfu,
            "mbu": self.mbu,
            "flops": self.flops,
            "bytes": self.bytes,
            "comm_bytes": self.comm_bytes,
            "grade": self.grade,
            "ops": [
                {"name": o.name, "flops": o.flops, "bytes": o.bytes, "comm_bytes": o.comm_bytes,
                 "time_s": o.time_s, "bound": o.bound}
                for o in self.ops
            ],
        }


def _combine(works: list[Work], fused: bool, overlap: float) -> float:
    """Seconds of a list of works. Unfused families run operators one after another, each
    bound by its slower resource; fused families overlap compute and memory across a layer."""
    if not fused:
        return sum(w.time for w in works)
    layer = [w for w in works if w.in_layer]
    rest = sum(w.time for w in works if not w.in_layer)
    t_c = sum(w.t_compute for w in layer)
    t_m = sum(w.t_memory for w in layer)
    return overlapped(t_c, t_m, overlap) + sum(w.t_comm + w.t_overhead for w in layer) + rest


class CostModel:
    """Roofline cost of engine steps for one model on one placement. Pure and deterministic;
    the token-count-only part of a step is cached, so a step costs O(1) Python work."""

    def __init__(self, model: ModelSpec, placement: Placement, dtype: str | None = None,
                 kv_dtype: str | None = None) -> None:
        if dtype is not None and dtype not in DTYPE_BYTES:
            raise ConfigError("dtype", dtype, f"allowed: {', '.join(DTYPE_BYTES)}")
        self.model = model.with_dtypes(dtype, kv_dtype)
        self.placement = placement
        device = placement.device
        if placement.ep > 1 and placement.ep > max(self.model.num_experts, 1):
            raise ConfigError("placement.ep", placement.ep,
                              f"{model.name} has {model.num_experts} experts")
        self.params: Params = resolve_params(device)
        self.shapes = RankShapes.of(self.model, placement.tp, placement.pp, placement.ep)
        self.roofline = Roofline(device, self.params, self.model.weight_dtype,
                                 self.shapes.weight_bytes, placement.link)
        self.ops = OpBuilder(self.model, self.shapes, self.roofline, self.params)
        self.grade = lowest_grade([device.grade, self.params.grade])
        self._graph_max = int(self.params.graph_max_tokens)
        self._sizes = [s for s in CAPTURE_SIZES if s <= self._graph_max]
        self._dense: dict[int, tuple[list[Work], float]] = {}
        self._head: dict[int, tuple[list[Work], float]] = {}

    # --- cached parts -------------------------------------------------------------------
    def graph_tokens(self, tokens: int) -> int:
        """Tokens a captured graph computes for a step of ``tokens`` (padded), or 0."""
        if not self._sizes or tokens > self._sizes[-1]:
            return 0
        return self._sizes[bisect.bisect_left(self._sizes, tokens)]

    def _dense_part(self, tokens: int) -> tuple[list[Work], float]:
        """Works that depend only on the token count, with their unfused time."""
        hit = self._dense.get(tokens)
        if hit is None:
            padded = self.graph_tokens(tokens)
            works = self.ops.dense_works(padded or tokens, graphed=bool(padded))
            hit = (works, sum(w.time for w in works))
            self._dense[tokens] = hit
        return hit

    def _head_part(self, sampled: int, graphed: bool) -> tuple[list[Work], float]:
        hit = self._head.get(sampled)
        if hit is None:
            works = self.ops.head_works(sampled, graphed)
            hit = (works, sum(w.time for w in works))
            self._head[sampled] = hit
        return hit

    def _overhead(self, batch: BatchShape) -> Work:
        t = self.params.step_overhead + self.params.seq_overhead * batch.num_seqs
        return Work("step_overhead", t_overhead=t, in_layer=False)

    # --- public -------------------------------------------------------------------------
    def works(self, batch: BatchShape) -> list[Work]:
        """All works of a step, in execution order."""
        if batch.is_empty:
            return []
        graphed = bool(self.graph_tokens(batch.num_tokens))
        dense = self._dense_part(batch.num_tokens)[0]
        attention = self.ops.attention_works(batch, graphed)
        head = self._head_part(batch.sampled, graphed)[0]
        return [*dense, *attention, *head, self._overhead(batch)]

    def step_time(self, batch: BatchShape) -> float:
        """Seconds of one step (same value as ``step(batch).seconds``, without the breakdown)."""
        if batch.is_empty:
            return 0.0
        graphed = bool(self.graph_tokens(batch.num_tokens))
        dense, dense_time = self._dense_part(batch.num_tokens)
        attention = self.ops.attention_works(batch, graphed)
        head_time = self._head_part(batch.sampled, graphed)[1]
        overhead = self.params.step_overhead + self.params.seq_overhead * batch.num_seqs
        if not self.roofline.fused:
            return dense_time + sum(w.time for w in attention) + head_time + overhead
        return _combine([*dense, *attention], True, self.params.overlap) + head_time + overhead

    def step(self, batch: BatchShape) -> StepCost:
        """Seconds of one step with a per-operator breakdown, MFU and MBU."""
        works = self.works(batch)
        seconds = _combine(works, self.roofline.fused, self.params.overlap)
        ops = tuple(self._op_costs(works, seconds))
        devices = self.placement.ranks
        peak = self.roofline.peak * devices
        bw = self.roofline.weight_tier.bandwidth.si * devices  # the tier weights stream from
        flops = sum(o.flops for o in ops)
        nbytes = sum(o.bytes for o in ops)
        return StepCost(
            seconds=seconds,
            ops=ops,
            mfu=flops / (seconds * peak) if seconds else 0.0,
            mbu=nbytes / (seconds * bw) if seconds else 0.0,
            grade=self.grade,
        )

    def memory_note(self) -> str | None:
        """A warning when the weights do not sit in the device's main memory per rank."""
        device, weights = self.placement.device, self.shapes.weight_bytes
        tier = self.roofline.weight_tier
        if tier.name == device.main_memory and weights <= tier.capacity.si:
            return None
        held = f"{weights / 1e9:,.1f} GB of weights per rank"
        if weights <= tier.capacity.si:
            return (f"{held} exceed {device.main_memory} ({device.memory_bytes / 1e9:,.1f} "
                    f"GB): they stream from {tier.name} at {tier.bandwidth.si / 1e9:,.0f} GB/s")
        return (f"{held} fit no memory tier of {device.name}: this placement cannot run; "
                "the time assumes they stream from its slowest tier")

    def _op_costs(self, works: list[Work], seconds: float) -> list[OpCost]:
        """Per-op times. In a fused family every in-layer op is charged in the resource that
        bounds the fused layer, so the ops still add up to the step time."""
        fused = self.roofline.fused
        layer_bound = "compute"
        if fused:
            layer = [w for w in works if w.in_layer]
            if sum(w.t_memory for w in layer) > sum(w.t_compute for w in layer):
                layer_bound = "memory"
        out = []
        for w in works:
            nbytes = w.weight_bytes if fused else w.bytes  # fused: activations stay on chip
            if fused and w.in_layer:
                big, small = ((w.t_compute, w.t_memory) if layer_bound == "compute"
                              else (w.t_memory, w.t_compute))
                core = big + (1.0 - self.params.overlap) * small
                time = core + w.t_comm + w.t_overhead
                bound = layer_bound if core >= w.t_overhead else "overhead"
            else:
                time, bound = w.time, w.bound
            out.append(OpCost(w.name, w.flops, nbytes, w.comm_bytes, time, bound))
        return out
