"""ModelSpec derived quantities against published figures, and the config.json parser."""

from __future__ import annotations

import dataclasses

import pytest

from infersim.errors import ConfigError
from infersim.models import ModelSpec, get_model, model_from_hf_config

# Published parameter counts: (name, total, active or None, relative tolerance).
# The tolerance is 1% unless the published figure is rounded more coarsely than that.
PUBLISHED_PARAMS = [
    # Hub parameter count of meta-llama/Llama-2-7b-hf (safetensors): 6.74B.
    ("llama-2-7b", 6.74e9, None, 0.01),
    # Hub parameter count of meta-llama/Llama-2-13b-hf: 13.0B (Llama 2 paper: 13B).
    ("llama-2-13b", 13.0e9, None, 0.01),
    # Hub parameter count of meta-llama/Llama-2-70b-hf: 69.0B (Llama 2 paper: "70B").
    ("llama-2-70b", 69.0e9, None, 0.01),
    # Hub parameter count of meta-llama/Llama-3.1-8B: 8.03B.
    ("llama-3.1-8b", 8.03e9, None, 0.01),
    # Hub parameter count of meta-llama/Llama-3.1-70B: 70.6B.
    ("llama-3.1-70b", 70.6e9, None, 0.01),
    # Hub parameter count of meta-llama/Llama-3.2-1B: 1.24B (tied embeddings counted once).
    ("llama-3.2-1b", 1.24e9, None, 0.01),
    # Hub parameter count of mistralai/Mistral-7B-v0.3: 7.25B.
    ("mistral-7b", 7.25e9, None, 0.01),
    # Mistral AI, "Mixtral of experts" (Dec 2023): 46.7B total, 12.9B used per token.
    ("mixtral-8x7b", 46.7e9, 12.9e9, 0.01),
    # Qwen3-32B model card: "Number of Parameters: 32.8B".
    ("qwen3-32b", 32.8e9, None, 0.01),
    # Qwen3-30B-A3B model card: "30.5B in total and 3.3B activated". The active figure is
    # given to two significant figures (we count 3.35B), hence 2%.
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.02),
    # Hub parameter count of microsoft/phi-2: 2.78B (Microsoft's blog rounds to 2.7B).
    ("phi-2", 2.78e9, None, 0.01),
    # Hub parameter count of state-spaces/mamba-2.8b-hf: 2.77B (the paper's "2.8B").
    ("mamba-2.8b", 2.77e9, None, 0.01),
    # Hub parameter count of codellama/CodeLlama-34b-Instruct-hf: 33.7B.
    ("codellama-34b", 33.7e9, None, 0.01),
    # Hub parameter count of Qwen/Qwen-72B: 72.3B (Qwen technical report: "72B").
    ("qwen-72b", 72.3e9, None, 0.01),
    # internlm/internlm-20b model card: "20B" (we count 20.09B).
    ("internlm-20b", 20.0e9, None, 0.01),
    # AI21 Jamba paper and model card: 52B total (Hub count 51.6B), 12B active. "12B" has two
    # significant figures (we count 12.11B), hence 2%.
    ("jamba-v0.1", 51.6e9, 12.0e9, 0.02),
]


@pytest.mark.parametrize(("name", "total", "active", "rel"), PUBLISHED_PARAMS)
def test_parameter_counts_match_published(name: str, total: float, active: float | None,
                                          rel: float) -> None:
    spec = get_model(name)
    assert spec.param_count == pytest.approx(total, rel=rel)
    if active is None:
        assert spec.active_param_count == spec.param_count
    else:
        assert spec.active_param_count == pytest.approx(active, rel=rel)
        assert spec.active_param_count < spec.param_count


@pytest.mark.parametrize(("name", "kv_bytes"), [
    # 2 (K and V) x 32 layers x 8 KV heads x 128 head_dim x 2 bytes (bf16).
    ("llama-3.1-8b", 131_072),
    # 2 x 32 layers x 32 KV heads x 128 x 2 bytes (fp16): 0.5 MiB per token.
    ("llama-2-7b", 524_288),
    # 2 x 80 layers x 8 KV heads x 128 x 2 bytes.
    ("llama-3.1-70b", 327_680),
    ("llama-2-70b", 327_680),
    ("mistral-7b", 131_072),
    ("mixtral-8x7b", 131_072),
    # 2 x 64 layers x 8 x 128 x 2 bytes.
    ("qwen3-32b", 262_144),
    # 2 x 48 layers x 4 x 128 x 2 bytes.
    ("qwen3-30b-a3b", 98_304),
    # Only 4 of Jamba's 32 layers are attention: 2 x 4 x 8 x 128 x 2 bytes.
    ("jamba-v0.1", 16_384),
    ("mamba-2.8b", 0),
])
def test_kv_bytes_per_token(name: str, kv_bytes: int) -> None:
    assert get_model(name).kv_bytes_per_token == kv_bytes


def test_kv_bytes_follow_dtype() -> None:
    spec = get_model("llama-3.1-8b")
    assert spec.with_dtypes(kv_dtype="fp8").kv_bytes_per_token == 65_536
    assert spec.with_dtypes(kv_dtype="fp8").weight_bytes == spec.weight_bytes


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-2-7b", "mixtral-8x7b", "mamba-2.8b",
                                  "jamba-v0.1", "phi-2"])
def test_weight_bytes_per_dtype(name: str) -> None:
    spec = get_model(name)
    # Shipped configs are 16-bit (fp32 checkpoints such as Mamba's are served in bf16).
    assert spec.weight_dtype in ("bf16", "fp16")
    assert spec.weight_bytes == 2 * spec.param_count
    assert spec.with_dtypes(weight_dtype="fp8").weight_bytes == spec.param_count
    assert spec.with_dtypes(weight_dtype="int4").weight_bytes == spec.param_count / 2


def test_mamba_state_instead_of_kv() -> None:
    spec = get_model("mamba-2.8b")
    assert spec.num_attention_layers == 0
    assert spec.num_mamba_layers == 64
    assert set(spec.mlps) == {"none"}
    assert spec.kv_bytes_per_token == 0
    # Per layer: SSM state d_inner 5120 x d_state 16 in fp32, plus a conv window of
    # (d_conv 4 - 1) x 5120 in 16 bits; 64 layers.
    assert spec.ssm_state_bytes_per_sequence == 64 * (5120 * 16 * 4 + 5120 * 3 * 2)
    assert spec.ssm_state_bytes_per_sequence > 0
    assert spec.tie_word_embeddings  # Mamba ties its LM head to the embedding


def test_jamba_is_a_hybrid() -> None:
    spec = get_model("jamba-v0.1")
    assert {"attention", "mamba"} <= set(spec.mixers)
    assert {"moe", "dense"} <= set(spec.mlps)
    # Jamba block: attention at layer 4 of every 8, MoE on every other layer (from 1).
    assert [i for i, m in enumerate(spec.mixers) if m == "attention"] == [4, 12, 20, 28]
    assert [i for i, m in enumerate(spec.mlps) if m == "moe"] == list(range(1, 32, 2))
    assert spec.num_experts == 16 and spec.experts_per_token == 2
    assert spec.ssm_inner_size == 8192 and spec.ssm_dt_rank == 256
    assert spec.ssm_state_bytes_per_sequence == 28 * (8192 * 16 * 4 + 8192 * 3 * 2)


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-3.1-8b", "llama-3.2-1b", "mixtral-8x7b",
                                  "qwen3-30b-a3b", "phi-2", "mamba-2.8b", "jamba-v0.1",
                                  "qwen-72b"])
def test_flops_per_token(name: str) -> None:
    spec = get_model(name)
    embedding = spec.vocab_size * spec.hidden_size
    matmul = spec.active_param_count - embedding
    if spec.tie_word_embeddings:  # the LM head still multiplies, with the embedding's weights
        matmul += embedding
    assert spec.flops_per_token(0) == pytest.approx(2 * matmul)
    per_context_token = 4 * spec.num_attention_layers * spec.q_size
    for context in (1, 1000, 32_768):
        grown = spec.flops_per_token(context) - spec.flops_per_token(0)
        assert grown == pytest.approx(per_context_token * context)


def test_flops_against_rule_of_thumb() -> None:
    # About 2 x (8.03B - 0.53B embedding) = 15.0 GFLOP per token for Llama-3.1-8B.
    assert get_model("llama-3.1-8b").flops_per_token(0) == pytest.approx(15.0e9, rel=0.01)
    # Mixtral touches 12.9B parameters per token, 0.13B of them the embedding.
    assert get_model("mixtral-8x7b").flops_per_token(0) == pytest.approx(25.5e9, rel=0.01)
    # Llama-3.1-8B at 8k context: + 4 x 32 layers x 4096 x 8192 = 4.3 GFLOP.
    spec = get_model("llama-3.1-8b")
    assert spec.flops_per_token(8192) - spec.flops_per_token(0) == 4 * 32 * 4096 * 8192


# --- the parser, on small hand-written configs ---------------------------------------------

TINY_LLAMA = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "torch_dtype": "bfloat16",
}


def test_tiny_llama_hand_count() -> None:
    spec = model_from_hf_config(TINY_LLAMA, "tiny")
    h, kv, inter, vocab = 64, 2 * 16, 128, 100
    attention = h * (h + 2 * kv) + h * h
    mlp = 3 * h * inter
    norms = 2 * h
    expected = 2 * (attention + mlp + norms) + 2 * vocab * h + h
    assert spec.param_count == expected
    assert spec.head_dim == 16 and spec.kv_size == kv
    assert spec.kv_bytes_per_token == 2 * 2 * kv * 2


def test_explicit_head_dim_wins() -> None:
    # Qwen3-32B: 64 heads of 128 although hidden / heads = 80.
    spec = get_model("qwen3-32b")
    assert spec.head_dim == 128 and spec.q_size == 8192


def test_qwen_v1_stores_both_gated_branches() -> None:
    # Qwen (v1) config.json states 49152, the width of w1 and w2 together.
    spec = get_model("qwen-72b")
    assert spec.intermediate_size == 24_576
    assert spec.num_kv_heads == spec.num_heads == 64
    assert spec.head_dim == 128


def test_phi2_is_ungated_and_biased() -> None:
    spec = get_model("phi-2")
    assert not spec.gated_mlp
    assert spec.attention_bias and spec.mlp_bias


def test_fp32_checkpoint_is_served_in_bf16() -> None:
    spec = model_from_hf_config({**TINY_LLAMA, "torch_dtype": "float32"}, "tiny")
    assert spec.weight_dtype == "bf16" and spec.kv_dtype == "bf16"


def test_missing_layers_names_the_field() -> None:
    cfg = {k: v for k, v in TINY_LLAMA.items() if k != "num_hidden_layers"}
    with pytest.raises(ConfigError) as err:
        model_from_hf_config(cfg, "tiny")
    assert "num_hidden_layers" in err.value.field
    assert "num_hidden_layers" in str(err.value)


def test_non_positive_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="hidden_size"):
        model_from_hf_config({**TINY_LLAMA, "hidden_size": 0}, "tiny")


def test_config_must_be_an_object() -> None:
    with pytest.raises(ConfigError):
        model_from_hf_config([1, 2, 3], "tiny")  # type: ignore[arg-type]


def test_unknown_dtype_is_rejected() -> None:
    spec = model_from_hf_config(TINY_LLAMA, "tiny")
    with pytest.raises(ConfigError, match="weight_dtype"):
        spec.with_dtypes(weight_dtype="fp7")


def test_layer_kinds_must_cover_every_layer() -> None:
    with pytest.raises(ConfigError):
        ModelSpec(name="x", num_layers=2, hidden_size=8, num_heads=1, num_kv_heads=1,
                  head_dim=8, intermediate_size=16, vocab_size=10, mixers=("attention",))


def test_spec_is_immutable() -> None:
    spec = get_model("llama-3.1-8b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_layers = 1  # type: ignore[misc]
