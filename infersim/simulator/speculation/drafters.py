"""Drafters: who proposes the draft tokens, and what proposing costs (from the cost model).

A drafter prices one step's drafting from its passes: ``passes[j] = (sequences still
drafting in pass j, their cached tokens)``. A model drafter runs one decode step of its own
cost model per pass (a chain of K drafts: K passes; a tree: one pass per level, its nodes
riding in the same pass, as ``optimizer.trees.cost_model_draft_time`` assumes), and also
computes the prompt chunks the target computes, to keep its own KV cache. ``overlaps``:
it runs on other devices than the target, so drafting can proceed while the target
verifies (see ``Speculator.step_seconds`` for how much it really can).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from infersim.costmodels import BatchShape, CostModel, MemoryPlan, Placement
from infersim.errors import ConfigError
from infersim.hardware import resolve_device
from infersim.models import ModelSpec, get_model
from infersim.registry import Registry
from infersim.simulator.speculation.config import SpeculationConfig

DRAFTERS: Registry[type[Drafter]] = Registry("speculation method")
register = DRAFTERS.register


def make_drafter(cfg: SpeculationConfig, target: CostModel) -> Drafter:
    return DRAFTERS.lookup(cfg.method)(cfg, target)


class Drafter:
    """Drafting costs for one pool's target."""

    name = "base"
    overlaps = False  # runs beside the target (another device), not on it
    cost: CostModel | None = None  # the drafter's own cost model, if it has one

    def __init__(self, cfg: SpeculationConfig, target: CostModel) -> None:
        self.cfg = cfg
        self.target = target

    def pass_seconds(self, seqs: int, context: int) -> float:
        """One draft pass: ``seqs`` sequences, one token each, on ``context`` cached tokens
        in all."""
        return self.cost.step_time(BatchShape(decode_seqs=seqs, decode_context=context,
                                              sampled=seqs))

    def draft_seconds(self, passes: Sequence[tuple[int, int]]) -> float:
        return sum(self.pass_seconds(n, ctx) for n, ctx in passes if n)

    def prefill_seconds(self, shape: BatchShape) -> float:
        """Computing the step's prompt chunks into the drafter's own KV cache."""
        return self.cost.step_time(shape) if self.cost is not None and shape.num_tokens else 0.0

    def memory_on_target(self) -> tuple[float, float]:
        """(weight bytes, KV bytes per token) the drafter adds to each target rank."""
        return 0.0, 0.0

    def describe(self) -> str:
        return self.name


def _kv_bytes_per_token(model: ModelSpec, tp: int) -> float:
    """Per rank, as ``costmodels.plan_memory`` counts it (KV heads replicated past tp)."""
    return (2 * model.num_attention_layers * math.ceil(model.num_kv_heads / tp)
            * model.head_dim * model.kv_bytes_per_element)


@register("draft_model")
class DraftModel(Drafter):
    """A separate, smaller model. On the target's devices (``draft_device`` unset; tensor
    parallel over ``draft_tp`` of them, default the target's tp, as vLLM does) its passes
    take turns with the target's verify and its weights and KV cache take room from the
    target's KV cache. On another device (a CPU beside the GPU, an NPU; ``draft_tp``
    default 1) it costs the target nothing but time, and may overlap."""

    def __init__(self, cfg, target) -> None:
        super().__init__(cfg, target)
        model = get_model(cfg.draft_model)
        self.overlaps = cfg.draft_device is not None
        if self.overlaps:
            device = resolve_device(cfg.draft_device, None)
            tp, link = cfg.draft_tp or 1, None
        else:
            device = target.placement.device
            tp = cfg.draft_tp or target.placement.tp
            link = target.placement.link if tp > 1 else None
        self.tp = tp
        try:
            self.cost = CostModel(model, Placement(device, tp=tp, link=link))
        except ConfigError as exc:
            raise ConfigError(f"speculation.draft_model ({exc.field})", exc.value,
                              exc.allowed) from None

    def memory_on_target(self) -> tuple[float, float]:
        if self.overlaps:
            return 0.0, 0.0
        m = self.cost.model
        return m.weight_bytes / self.tp, _kv_bytes_per_token(m, self.tp)

    def describe(self) -> str:
        where = (f"on {self.cost.placement.device.name}" if self.overlaps
                 else "on the target's devices")
        return f"draft model {self.cost.model.name} (tp={self.tp}) {where}"


def head_spec(target: ModelSpec, layers: int) -> ModelSpec:
    """A self-drafting head as a ModelSpec: the target's first ``layers`` decoder layers'
    shapes with its embedding and LM head (EAGLE: one decoder layer reusing the target's
    LM head; MTP: a module per draft position)."""
    layers = min(layers, target.num_layers)
    return replace(target, name=f"{target.name}-head{layers}", num_layers=layers,
                   mixers=target.mixers[:layers], mlps=target.mlps[:layers])


@register("heads")
class SelfHeads(Drafter):
    """Self-drafting heads (EAGLE/MTP style; Medusa's parallel heads are the one-pass
    limit): each draft is one pass of a ``head_layers``-layer head on the target's devices
    and tensor parallelism, LM head included, after the target's step."""

    def __init__(self, cfg, target) -> None:
        super().__init__(cfg, target)
        p = target.placement
        self.cost = CostModel(head_spec(target.model, cfg.head_layers),
                              Placement(p.device, tp=p.tp, link=p.link))

    def memory_on_target(self) -> tuple[float, float]:
        m, t = self.cost.model, self.target.model
        per_layer = (t.param_count - t.embedding_params - t.lm_head_params) / t.num_layers
        weights = per_layer * m.num_layers * t.weight_bytes_per_param / self.target.placement.tp
        return weights, _kv_bytes_per_token(m, self.target.placement.tp)

    def describe(self) -> str:
        return f"self-drafting head of {self.cost.model.num_layers} layer(s)"


@register("ngram")
class NgramLookup(Drafter):
    """Prompt lookup / n-gram matching: no model, a small CPU cost per drafting sequence
    and step (``draft_seconds_per_seq``), whatever K; its acceptance is its own input."""

    def draft_seconds(self, passes: Sequence[tuple[int, int]]) -> float:
        return passes[0][0] * self.cfg.draft_seconds_per_seq if passes else 0.0

    def describe(self) -> str:
        return f"n-gram lookup ({self.cfg.draft_seconds_per_seq * 1e6:g} us per sequence)"


def kv_blocks_with_drafter(memory: MemoryPlan, block_size: int, drafter: Drafter) -> int:
    """The target's KV blocks once the drafter's weights and KV cache share its memory."""
    weights, kv_token = drafter.memory_on_target()
    if not weights and not kv_token:
        return memory.blocks
    room = memory.kv_cache - weights
    per_block = (memory.kv_bytes_per_token + kv_token) * block_size
    blocks = int(room // per_block) if per_block else memory.blocks
    if blocks < 1:
        raise ConfigError("speculation", drafter.describe(),
                          f"the drafter ({weights / 1e9:.2f} GB per rank) leaves no room for "
                          "the KV cache; use a smaller drafter, more devices or draft_device")
    return blocks
