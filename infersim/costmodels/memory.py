"""How a device's memory splits between weights, activations and the KV cache."""

from __future__ import annotations

import math
from dataclasses import dataclass

from infersim.costmodels.ops import ACT_BYTES
from infersim.costmodels.placement import Placement
from infersim.errors import ConfigError
from infersim.models import ModelSpec

UNLIMITED_BLOCKS = 1 << 40  # attention-free models hold no KV blocks


@dataclass(frozen=True)
class MemoryPlan:
    """Per-rank bytes: what the engine may use, what weights, activations and the runtime
    take, and what is left for the KV cache (vLLM's profile-then-allocate scheme)."""

    usable: float
    weights: float
    activations: float
    runtime: float
    kv_cache: float
    kv_bytes_per_token: float  # per rank
    ssm_state_bytes: float  # per rank, for max_num_seqs sequences
    blocks: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan_memory(model: ModelSpec, placement: Placement, block_size: int, utilization: float,
                max_num_batched_tokens: int, max_num_seqs: int,
                runtime_reserved: float) -> MemoryPlan:
    """KV blocks = (memory x utilisation - weights - peak activations - runtime reserve)
    / bytes per block, per rank. Peak activations follow vLLM's profiling run: one forward
    pass of ``max_num_batched_tokens`` plus fp32 logits for ``max_num_seqs`` rows."""
    if not 0 < utilization <= 1:
        raise ConfigError("scheduler.gpu_memory_utilization", utilization, "must be in (0, 1]")
    tp, pp = placement.tp, placement.pp
    usable = placement.device.memory_bytes * utilization
    weights = model.weight_bytes / (tp * pp)
    widest = max(model.q_size + 2 * model.kv_size, 2 * model.intermediate_size,
                 2 * model.expert_intermediate_size * max(model.experts_per_token, 1),
                 2 * model.ssm_inner_size)
    activations = (max_num_batched_tokens * (widest / tp + 2 * model.hidden_size) * ACT_BYTES
                   + max_num_seqs * model.vocab_size / tp * 4.0)
    kv_heads = math.ceil(model.num_kv_heads / tp)
    kv_token = (2 * model.num_attention_layers / pp * kv_heads * model.head_dim
                * model.kv_bytes_per_element)
    ssm = model.ssm_state_bytes_per_sequence / (tp * pp) * max_num_seqs
    kv_cache = usable - weights - activations - runtime_reserved - ssm
    if kv_cache <= 0:
        raise ConfigError(
            "placement", f"tp={tp}, pp={pp}",
            f"{model.name} does not fit on {placement.device.name}: weights "
            f"{weights / 1e9:.1f} GB + activations {activations / 1e9:.1f} GB + reserve "
            f"{runtime_reserved / 1e9:.1f} GB per rank exceed {usable / 1e9:.1f} GB usable; "
            "use more tensor/pipeline parallelism, a smaller dtype or a larger device")
    blocks = int(kv_cache // (kv_token * block_size)) if kv_token else UNLIMITED_BLOCKS
    return MemoryPlan(usable, weights, activations, runtime_reserved, kv_cache, kv_token, ssm,
                      blocks)
