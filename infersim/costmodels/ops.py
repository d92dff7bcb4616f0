"""The work one step of a model does on one placement, operator class by operator class.

All shapes are per rank (heads, intermediate and vocabulary divided by ``tp``; layers by
``pp``); FLOPs and bytes of a ``Work`` are totals over the ``tp`` ranks of the replica, times
are per rank. Layer counts multiply each class, so a step costs O(1) Python work."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from infersim.costmodels.batch import BatchShape
from infersim.costmodels.params import Params
from infersim.costmodels.roofline import Roofline
from infersim.costmodels.work import Work
from infersim.models import DTYPE_BYTES, ModelSpec

ACT_BYTES = 2.0  # activations in bf16/fp16
SCAN_FLOPS_PER_STATE = 9.0  # selective scan, per token x channel x state (Mamba paper, Sec. 3.3)


@dataclass(frozen=True)
class RankShapes:
    """Per-rank layer widths and per-stage layer counts of a model under tp x pp (ep)."""

    hidden: int
    q: float
    kv: float
    inter: float
    vocab: float
    experts: float  # experts held by one rank
    expert_inter: float
    shared_inter: float
    ssm_inner: float
    attn_layers: float
    mamba_layers: float
    dense_layers: float
    moe_layers: float
    tp: int
    ep: int
    pp: int
    weight_bytes: float  # per rank

    @classmethod
    def of(cls, m: ModelSpec, tp: int, pp: int, ep: int) -> RankShapes:
        kv_heads = math.ceil(m.num_kv_heads / tp)  # KV heads are replicated when tp > kv_heads
        expert_split = tp // ep  # tensor split inside each expert
        return cls(
            hidden=m.hidden_size,
            q=m.num_heads / tp * m.head_dim,
            kv=kv_heads * m.head_dim,
            inter=m.intermediate_size / tp,
            vocab=m.vocab_size / tp,
            experts=m.num_experts / ep,
            expert_inter=m.expert_intermediate_size / expert_split,
            shared_inter=m.shared_expert_intermediate_size / tp,
            ssm_inner=m.ssm_inner_size / tp,
            attn_layers=m.num_attention_layers / pp,
            mamba_layers=m.num_mamba_layers / pp,
            dense_layers=m.num_dense_mlp_layers / pp,
            moe_layers=m.num_moe_layers / pp,
            tp=tp,
            ep=ep,
            pp=pp,
            weight_bytes=m.weight_bytes / (tp * pp),
        )


class OpBuilder:
    """Builds the Works of a step for one model, placement and device."""

    def __init__(self, model: ModelSpec, shapes: RankShapes, roof: Roofline, params: Params):
        self.m, self.s, self.roof, self.p = model, shapes, roof, params
        self.wb = DTYPE_BYTES[model.weight_dtype]
        self.kvb = DTYPE_BYTES[model.kv_dtype]

    def _overhead(self, kernels: float, graphed: bool) -> float:
        if self.roof.fused:  # one fused kernel per layer, charged once in dense_works
            return 0.0
        per = self.p.graph_kernel_overhead if graphed else self.p.kernel_overhead
        return kernels * per

    def _gemm(self, name: str, m: float, n: float, k: float, layers: float, graphed: bool,
              efficiency: float | None = None, kernels: float = 1.0) -> Work | None:
        if layers <= 0 or m <= 0:
            return None
        eff = self.p.gemm_efficiency if efficiency is None else efficiency
        tp = self.s.tp
        weight = n * k * self.wb * layers
        act = (m * k + m * n) * ACT_BYTES * layers
        return Work(
            name=name,
            flops=2.0 * m * n * k * layers * tp,
            weight_bytes=weight * tp,
            act_bytes=act * tp,
            t_compute=self.roof.gemm(m, n, k, eff) * layers,
            t_memory=self.roof.memory(weight, act),
            t_overhead=self._overhead(kernels * layers, graphed),
            overlap=self.p.overlap,
        )

    def _stream(self, name: str, flops: float, weight: float, act: float, kernels: float,
                graphed: bool, efficiency: float, in_layer: bool = True,
                memory_efficiency: float = 1.0) -> Work:
        """A streaming op (per rank FLOPs and bytes over all its layers); its memory time is
        divided by ``memory_efficiency`` (a share of the device's streaming rate)."""
        tp = self.s.tp
        return Work(
            name=name,
            flops=flops * tp,
            weight_bytes=weight * tp,
            act_bytes=act * tp,
            t_compute=self.roof.compute(flops, efficiency),
            t_memory=self.roof.memory(weight, act) / memory_efficiency,
            t_overhead=self._overhead(kernels, graphed),
            in_layer=in_layer,
            overlap=self.p.overlap,
        )

    # --- work that depends only on the number of tokens ---------------------------------
    def dense_works(self, tokens: float, graphed: bool) -> list[Work]:
        s, T = self.s, tokens
        h = s.hidden
        out: list[Work | None] = []
        la, lmb, ld, lm = s.attn_layers, s.mamba_layers, s.dense_layers, s.moe_layers
        out.append(self._gemm("qkv_proj", T, s.q + 2 * s.kv, h, la, graphed))
        out.append(self._gemm("o_proj", T, h, s.q, la, graphed))
        if ld:
            up = (2 if self.m.gated_mlp else 1) * s.inter
            out.append(self._gemm("mlp_up", T, up, h, ld, graphed))
            out.append(self._gemm("mlp_down", T, h, s.inter, ld, graphed))
        if lm:
            out.extend(self._moe_works(T, graphed))
        if lmb:
            out.append(self._gemm("mamba_in_proj", T, 2 * s.ssm_inner, h, lmb, graphed))
            x_dt = self.m.ssm_dt_rank + 2 * self.m.ssm_state_size
            out.append(self._gemm("mamba_x_proj", T, x_dt, s.ssm_inner, lmb, graphed))
            out.append(self._gemm("mamba_dt_proj", T, s.ssm_inner, self.m.ssm_dt_rank, lmb,
                                  graphed))
            out.append(self._gemm("mamba_out_proj", T, h, s.ssm_inner, lmb, graphed))
        out.append(self._elementwise(T, graphed))
        out.append(self._stream("embedding", 0.0, T * h * self.wb / s.tp, T * h * ACT_BYTES,
                                1, graphed, 1.0, in_layer=False))
        out.extend(self._collectives(T))
        if self.roof.fused:
            layers = la + lmb
            out.append(Work("layer_launch", t_overhead=layers * self.p.kernel_overhead))
        return [w for w in out if w is not None]

    def _elementwise(self, T: float, graphed: bool) -> Work:
        """Norms, residual adds, rotary embedding, KV-cache writes and the MLP activation."""
        s, h = self.s, self.s.hidden
        layers = s.attn_layers + s.mamba_layers
        mlp_layers = s.dense_layers + s.moe_layers
        norms = 2 * layers if mlp_layers else layers
        act = norms * 4 * T * h * ACT_BYTES
        act += s.attn_layers * 2 * T * (s.q + s.kv) * ACT_BYTES  # rotary on q and k
        kv_write = s.attn_layers * T * 2 * s.kv * self.kvb
        width = (3 if self.m.gated_mlp else 2) * (s.inter * s.dense_layers
                                                  + s.expert_inter * s.moe_layers)
        act += T * width * ACT_BYTES
        flops = norms * 8 * T * h + mlp_layers * 4 * T * max(s.inter, s.expert_inter)
        kernels = (norms + 2 * s.attn_layers + mlp_layers) * self.p.elementwise_overhead
        return self._stream("norm_elementwise", flops, kv_write, act, kernels, graphed, 1.0,
                            memory_efficiency=self.p.elementwise_efficiency)

    def _moe_works(self, T: float, graphed: bool) -> list[Work | None]:
        s, m, h = self.s, self.m, self.s.hidden
        lm = s.moe_layers
        out: list[Work | None] = [self._gemm("moe_router", T, m.num_experts, h, lm, graphed)]
        k = m.experts_per_token
        routed = T * k / s.ep  # token-expert pairs one rank computes (balanced routing)
        # experts a rank touches: each of its experts is hit by at least one of T tokens
        touched = s.experts * (1.0 - (1.0 - k / m.num_experts) ** T)
        gates = 3 if m.gated_mlp else 2
        per_expert_weight = gates * h * s.expert_inter * self.wb
        flops = 2.0 * routed * gates * h * s.expert_inter
        weight = touched * per_expert_weight * lm
        act = routed * (2 * h + gates * s.expert_inter) * ACT_BYTES * lm
        out.append(Work(
            name="moe_experts",
            flops=flops * lm * s.tp,
            weight_bytes=weight * s.tp,
            act_bytes=act * s.tp,
            t_compute=self.roof.compute(flops, self.p.moe_efficiency) * lm,
            t_memory=self.roof.memory(weight, act),
            t_overhead=self._overhead(3 * lm, graphed),
            overlap=self.p.overlap,
        ))
        if s.shared_inter:
            out.append(self._gemm("moe_shared_up", T, 2 * s.shared_inter, h, lm, graphed))
            out.append(self._gemm("moe_shared_down", T, h, s.shared_inter, lm, graphed))
        if s.ep > 1:
            message = T * k * h * ACT_BYTES
            t = 2 * self.roof.all_to_all(message, s.ep) * lm
            out.append(Work("ep_all_to_all", comm_bytes=2 * message * lm * s.tp, t_comm=t,
                            in_layer=False))
        return out

    def _collectives(self, T: float) -> list[Work]:
        s, h = self.s, self.s.hidden
        out = []
        if s.tp > 1:
            per_layer = (s.attn_layers + s.mamba_layers) + (s.dense_layers + s.moe_layers)
            count = per_layer + 1.0 / s.pp  # + the vocab-parallel embedding
            message = T * h * ACT_BYTES
            out.append(Work("tp_all_reduce", comm_bytes=message * count * s.tp,
                            t_comm=self.roof.allreduce(message, s.tp) * count, in_layer=False))
        if s.pp > 1:
            message = T * h * ACT_BYTES
            out.append(Work("pp_send", comm_bytes=message * (s.pp - 1) * s.tp,
                            t_comm=self.roof.send(message) * (s.pp - 1) / s.pp,
                            in_layer=False))
        return out

    # --- work that depends on the batch's sequences -------------------------------------
    def attention_works(self, b: BatchShape, graphed: bool) -> list[Work]:
        s, out = self.s, []
        la = s.attn_layers
        kv_token = 2 * s.kv * self.kvb
        if la and b.prefill_seqs:
            masked = b.prefill_qq - b.prefill_tokens  # sum q(q-1)/2: the causal mask's pairs
            pairs = b.prefill_qk + b.prefill_qq + (1.0 - self.p.attention_causal_skip) * masked
            flops = 4.0 * s.q * pairs * la
            kv = (b.prefill_context + b.prefill_tokens) * kv_token * la
            act = 2 * b.prefill_tokens * s.q * ACT_BYTES * la
            out.append(self._stream("attention_prefill", flops, kv, act,
                                    la * self.p.attention_overhead, graphed,
                                    self.p.attention_efficiency))
        if la and b.decode_seqs:
            ctx = b.decode_context + b.decode_seqs
            flops = 4.0 * s.q * ctx * la
            kv = ctx * kv_token * la
            act = 2 * b.decode_seqs * s.q * ACT_BYTES * la
            out.append(self._stream("attention_decode", flops, kv, act,
                                    la * self.p.attention_overhead, graphed,
                                    self.p.decode_attention_efficiency))
        if s.mamba_layers and b.num_seqs:
            out.append(self._scan(b, graphed))
        return out

    def _scan(self, b: BatchShape, graphed: bool) -> Work:
        """Causal conv and selective scan: per token work plus each sequence's state."""
        s, m = self.s, self.m
        T, d, n = b.num_tokens, s.ssm_inner, m.ssm_state_size
        layers = s.mamba_layers
        flops = (SCAN_FLOPS_PER_STATE * n + 2 * m.ssm_conv_kernel) * T * d * layers
        state = b.num_seqs * d * (n * 4 + (m.ssm_conv_kernel - 1) * ACT_BYTES) * 2 * layers
        act = 6 * T * d * ACT_BYTES * layers
        return self._stream("mamba_scan", flops, state, act, 2 * layers, graphed, 1.0)

    def head_works(self, sampled: int, graphed: bool) -> list[Work]:
        """LM head on the rows that sample a token, and the logits gather under TP."""
        if sampled <= 0:
            return []
        s = self.s
        head = self._gemm("lm_head", sampled, s.vocab, s.hidden, 1.0, graphed, kernels=2.0)
        out = [replace(head, in_layer=False)]  # GEMM + sampling kernels
        if s.tp > 1:
            message = sampled * s.vocab * 4.0
            out.append(Work("logits_gather", comm_bytes=message * s.tp,
                            t_comm=self.roof.allreduce(message, s.tp) / 2, in_layer=False))
        return out
