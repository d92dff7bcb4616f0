"""Mixture-of-experts weight reads and FLOPs; KV-cache reads of attention (GQA vs MHA)."""

from __future__ import annotations

import pytest

from infersim.costmodels import BatchShape


def work(m, b, name):
    return next(w for w in m.works(b) if w.name == name)


def all_expert_bytes(model) -> float:
    return (model.num_moe_layers * model.num_experts * model.expert_params
            * model.weight_bytes_per_param)


# --- MoE -------------------------------------------------------------------------------------
def test_mixtral_decode_at_batch_1_reads_top_k_of_the_experts(cm, batch):
    """One token routes to 2 of 8 experts per layer: a quarter of the expert weights move."""
    m = cm("mixtral-8x7b", "h100-sxm")
    assert (m.model.num_experts, m.model.experts_per_token) == (8, 2)
    experts = work(m, batch("decode:1x1024"), "moe_experts")
    assert experts.weight_bytes / all_expert_bytes(m.model) == pytest.approx(2 / 8, rel=1e-9)


def test_mixtral_reads_more_experts_as_the_batch_grows(cm):
    m = cm("mixtral-8x7b", "h100-sxm")
    share = [work(m, BatchShape.uniform(n, 1, 1024), "moe_experts").weight_bytes
             / all_expert_bytes(m.model) for n in (1, 2, 4, 16, 64, 256)]
    assert share == sorted(share) and share[0] < share[1]
    # expected distinct experts hit by n tokens choosing 2 of 8: 1 - (6/8)^n of them
    assert share[2] == pytest.approx(1 - 0.75**4, rel=1e-9)
    assert share[-1] == pytest.approx(1.0, abs=1e-9)  # at large batch every expert moves


def test_active_parameters_drive_moe_flops(cm, batch):
    """FLOPs follow the active (top-k) parameters, not the total: Mixtral's 46.7B parameters
    cost like its ~12.9B active ones."""
    m = cm("mixtral-8x7b", "h100-sxm")
    model = m.model
    b = batch("decode:16x1000")
    experts = work(m, b, "moe_experts")
    assert experts.flops == pytest.approx(2.0 * 16 * model.experts_per_token
                                          * model.expert_params * model.num_moe_layers)
    step = m.step(b)
    assert step.flops == pytest.approx(16 * model.flops_per_token(1001), rel=5e-3)
    assert step.flops < 0.35 * 16 * 2 * model.param_count
    # a dense model of the same total size would cost ~3.6x more per token
    assert model.param_count / model.active_param_count > 3.5


def test_qwen3_moe_reads_few_experts_at_batch_1(cm, batch):
    m = cm("qwen3-30b-a3b", "h100-sxm")
    share = (work(m, batch("decode:1x1024"), "moe_experts").weight_bytes
             / all_expert_bytes(m.model))
    k, e = m.model.experts_per_token, m.model.num_experts
    assert share == pytest.approx(k / e, rel=1e-9)


def test_expert_parallelism_splits_expert_weights(cm, batch):
    b = batch("decode:256x1024")
    one = work(cm("mixtral-8x7b", "h100-sxm", tp=2), b, "moe_experts")
    ep = work(cm("mixtral-8x7b", "h100-sxm", tp=2, ep=2), b, "moe_experts")
    # totals over ranks stay the same; each rank holds half the experts
    assert ep.weight_bytes == pytest.approx(one.weight_bytes, rel=1e-6)
    assert ep.flops == pytest.approx(one.flops)


# --- KV reads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b", "llama-2-7b", "mistral-7b",
                                   "mixtral-8x7b", "jamba-v0.1"])
def test_decode_attention_reads_every_cached_token_once(cm, model):
    """Decode attention moves sum over sequences of (k + 1) x KV bytes per token: the cached
    tokens plus the new one (exact, against ModelSpec.kv_bytes_per_token)."""
    m = cm(model, "h100-sxm")
    contexts = [0, 17, 1000, 4095]
    b = BatchShape.from_sequences([1] * len(contexts), contexts)
    attn = work(m, b, "attention_decode")
    expected = sum(k + 1 for k in contexts) * m.model.kv_bytes_per_token
    assert attn.weight_bytes == pytest.approx(expected, rel=1e-12)


def test_kv_reads_are_the_same_total_under_tp(cm, batch):
    b = batch("decode:8x2048")
    one = work(cm("llama-3.1-70b", "h100-sxm"), b, "attention_decode")
    eight = work(cm("llama-3.1-70b", "h100-sxm", tp=8), b, "attention_decode")
    assert eight.weight_bytes == pytest.approx(one.weight_bytes, rel=1e-12)
    assert eight.t_memory == pytest.approx(one.t_memory / 8, rel=1e-9)


def test_prefill_attention_reads_cache_and_chunk(cm):
    m = cm("llama-3.1-8b", "h100-sxm")
    b = BatchShape.from_sequences([512, 256], [1024, 0])
    attn = work(m, b, "attention_prefill")
    assert attn.weight_bytes == pytest.approx((512 + 1024 + 256) * m.model.kv_bytes_per_token)


def test_gqa_reads_a_quarter_of_mha_kv(cm, batch):
    """Llama-2-7B (MHA, 32 KV heads) and Llama-3.1-8B (GQA, 8 KV heads) share layers, heads
    and head size: the same attention FLOPs, a quarter of the KV bytes."""
    mha, gqa = cm("llama-2-7b", "h100-sxm"), cm("llama-3.1-8b", "h100-sxm")
    assert (mha.model.num_kv_heads, gqa.model.num_kv_heads) == (32, 8)
    b = batch("decode:32x2048")
    a_mha, a_gqa = work(mha, b, "attention_decode"), work(gqa, b, "attention_decode")
    assert a_gqa.weight_bytes == pytest.approx(a_mha.weight_bytes / 4, rel=1e-12)
    assert a_gqa.flops == pytest.approx(a_mha.flops, rel=1e-12)
    assert a_gqa.t_memory < a_mha.t_memory / 3.5


def test_decode_attention_dominates_long_context_batches(cm, batch):
    step = cm("llama-3.1-8b", "h100-sxm").step(batch("decode:64x8192"))
    attn = next(o for o in step.ops if o.name == "attention_decode")
    assert attn.bound == "memory" and attn.time_s > 0.5 * step.seconds
