"""Architecture of a transformer / MoE / SSM model, read from a Hugging Face config.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from infersim.errors import ConfigError

DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
_TORCH_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

Mixer = Literal["attention", "mamba"]
Mlp = Literal["dense", "moe", "none"]


@dataclass(frozen=True)
class ModelSpec:
    """Shapes that decide a model's cost. Per-layer kinds allow hybrids (attention/Mamba,
    dense/MoE MLPs). Derived quantities are properties; all counts are per model, not per rank."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    gated_mlp: bool = True
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 4096
    mixers: tuple[Mixer, ...] = ()
    mlps: tuple[Mlp, ...] = ()
    num_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    ssm_state_size: int = 0
    ssm_conv_kernel: int = 0
    ssm_inner_size: int = 0
    ssm_dt_rank: int = 0
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    hf_id: str = ""
    source: str = ""
    model_type: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.mixers:
            object.__setattr__(self, "mixers", ("attention",) * self.num_layers)
        if not self.mlps:
            kind = "moe" if self.num_experts else "dense"
            object.__setattr__(self, "mlps", (kind,) * self.num_layers)
        if len(self.mixers) != self.num_layers or len(self.mlps) != self.num_layers:
            raise ConfigError("layers", len(self.mixers), f"need {self.num_layers} layer kinds")
        for name in ("weight_dtype", "kv_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise ConfigError(name, getattr(self, name), f"allowed: {', '.join(DTYPE_BYTES)}")

    # --- layer counts -------------------------------------------------------------------
    @property
    def num_attention_layers(self) -> int:
        return self.mixers.count("attention")

    @property
    def num_mamba_layers(self) -> int:
        return self.mixers.count("mamba")

    @property
    def num_dense_mlp_layers(self) -> int:
        return self.mlps.count("dense")

    @property
    def num_moe_layers(self) -> int:
        return self.mlps.count("moe")

    @property
    def is_moe(self) -> bool:
        return self.num_moe_layers > 0

    # --- parameters per component -------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_params(self) -> int:
        """QKV and O projections of one attention layer (with biases where the model has them)."""
        h, q, kv = self.hidden_size, self.q_size, self.kv_size
        bias = (q + 2 * kv + h) if self.attention_bias else 0
        return h * (q + 2 * kv) + q * h + bias

    def mlp_params(self, intermediate: int) -> int:
        matrices = 3 if self.gated_mlp else 2
        bias = (intermediate * (matrices - 1) + self.hidden_size) if self.mlp_bias else 0
        return matrices * self.hidden_size * intermediate + bias

    @property
    def expert_params(self) -> int:
        return self.mlp_params(self.expert_intermediate_size)

    @property
    def shared_expert_params(self) -> int:
        inter = self.shared_expert_intermediate_size
        return self.mlp_params(inter) if inter else 0

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.num_experts

    @property
    def mamba_params(self) -> int:
        """One Mamba (S6) mixer: in/out projections, conv, x/dt projections, A and D."""
        h, d, n, r = self.hidden_size, self.ssm_inner_size, self.ssm_state_size, self.ssm_dt_rank
        return (h * 2 * d + d * self.ssm_conv_kernel + d + d * (r + 2 * n) + r * d + d
                + d * n + d + d * h)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def _layer_params(self, experts_counted: int) -> int:
        total = 0
        for mixer, mlp in zip(self.mixers, self.mlps, strict=True):
            total += self.attention_params if mixer == "attention" else self.mamba_params
            if mlp == "dense":
                total += self.mlp_params(self.intermediate_size)
            elif mlp == "moe":
                total += (experts_counted * self.expert_params + self.shared_expert_params
                          + self.router_params)
            total += 2 * self.hidden_size if mlp != "none" else self.hidden_size  # norms
        return total

    @property
    def param_count(self) -> int:
        """All parameters, embeddings and LM head included."""
        return (self._layer_params(self.num_experts) + self.embedding_params
                + self.lm_head_params + self.hidden_size)

    @property
    def active_param_count(self) -> int:
        """Parameters touched by one token (top-k experts only)."""
        return (self._layer_params(self.experts_per_token) + self.embedding_params
                + self.lm_head_params + self.hidden_size)

    # --- bytes and FLOPs ----------------------------------------------------------------
    @property
    def weight_bytes_per_param(self) -> float:
        return DTYPE_BYTES[self.weight_dtype]

    @property
    def kv_bytes_per_element(self) -> float:
        return DTYPE_BYTES[self.kv_dtype]

    @property
    def weight_bytes(self) -> float:
        return self.param_count * self.weight_bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        """KV cache bytes one token occupies across all attention layers."""
        return 2 * self.num_attention_layers * self.kv_size * self.kv_bytes_per_element

    @property
    def ssm_state_bytes_per_sequence(self) -> float:
        """Recurrent state (SSM state in fp32 plus conv window) one sequence holds."""
        d = self.ssm_inner_size
        per_layer = d * self.ssm_state_size * 4 + d * max(self.ssm_conv_kernel - 1, 0) * 2
        return self.num_mamba_layers * per_layer

    def flops_per_token(self, context: float = 0.0) -> float:
        """Forward FLOPs for one token attending to ``context`` earlier tokens:
        2 x active non-embedding parameters (LM head included) + 4 x attention layers x
        query width x context."""
        matmul_params = self.active_param_count - self.embedding_params
        if self.tie_word_embeddings:
            matmul_params += self.vocab_size * self.hidden_size
        return 2.0 * matmul_params + 4.0 * self.num_attention_layers * self.q_size * context

    def with_dtypes(self, weight_dtype: str | None = None, kv_dtype: str | None = None
                    ) -> ModelSpec:
        """A copy served in other formats (e.g. fp8 weights, fp8 KV cache)."""
        from dataclasses import replace

        return replace(self, weight_dtype=weight_dtype or self.weight_dtype,
                       kv_dtype=kv_dtype or self.kv_dtype)


def _get(cfg: dict, *keys: str, default: object = None) -> object:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def _required(cfg: dict, where: str, *keys: str) -> int:
    value = _get(cfg, *keys)
    if value is None:
        raise ConfigError(f"{where}: {keys[0]}", None, "required in config.json")
    if not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {keys[0]}", value, "must be a positive integer")
    return value


def _layer_kinds(cfg: dict, n: int, is_moe: bool) -> tuple[tuple[Mixer, ...], tuple[Mlp, ...]]:
    model_type = cfg.get("model_type", "")
    if model_type in ("mamba", "mamba2"):
        return ("mamba",) * n, ("none",) * n
    block_types = _get(cfg, "layers_block_type", "layer_types")
    if isinstance(block_types, list) and len(block_types) == n:
        mixers = tuple("mamba" if "mamba" in str(t) else "attention" for t in block_types)
    elif "attn_layer_period" in cfg:  # Jamba
        period, offset = cfg["attn_layer_period"], cfg.get("attn_layer_offset", 0)
        mixers = tuple("attention" if i % period == offset else "mamba" for i in range(n))
    else:
        mixers = ("attention",) * n
    if not is_moe:
        return mixers, ("dense",) * n
    if "expert_layer_period" in cfg:  # Jamba
        period, offset = cfg["expert_layer_period"], cfg.get("expert_layer_offset", 0)
        mlps = tuple("moe" if i % period == offset else "dense" for i in range(n))
    else:
        dense_first = int(_get(cfg, "first_k_dense_replace", default=0))
        step = int(_get(cfg, "decoder_sparse_step", "moe_layer_freq", default=1))
        only_dense = set(_get(cfg, "mlp_only_layers", default=[]) or [])
        mlps = tuple(
            "dense" if (i < dense_first or i in only_dense or (i + 1) % step) else "moe"
            for i in range(n)
        )
    return mixers, mlps


def model_from_hf_config(cfg: dict, name: str, hf_id: str = "", source: str = "") -> ModelSpec:
    """Build a ModelSpec from a Hugging Face style config.json (dense MHA/GQA, MoE in the
    Mixtral/Qwen-MoE/DeepSeek conventions, Mamba, and Jamba-style hybrids)."""
    where = name or "config.json"
    if not isinstance(cfg, dict):
        raise ConfigError(where, type(cfg).__name__, "config.json must hold a JSON object")
    model_type = str(cfg.get("model_type", ""))
    n = _required(cfg, where, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _required(cfg, where, "hidden_size", "d_model", "n_embd")
    is_ssm_only = model_type in ("mamba", "mamba2")
    heads = 1 if is_ssm_only else _required(cfg, where, "num_attention_heads", "n_head")
    kv_heads = int(_get(cfg, "num_key_value_heads", "multi_query_group_num", default=heads))
    head_dim = int(_get(cfg, "head_dim", "kv_channels", default=hidden // heads))
    num_experts = int(_get(cfg, "num_local_experts", "num_experts", "n_routed_experts",
                           default=0))
    intermediate = int(_get(cfg, "intermediate_size", "ffn_hidden_size", "n_inner",
                            default=4 * hidden))
    if model_type == "qwen":  # Qwen (v1) stores twice the width of each gated branch
        intermediate //= 2
    gated = model_type not in ("phi", "gpt2", "gpt_neox", "falcon", "mamba", "mamba2")
    expert_inter = int(_get(cfg, "moe_intermediate_size", default=intermediate))
    shared = int(_get(cfg, "n_shared_experts", default=0)) * expert_inter
    shared = int(_get(cfg, "shared_expert_intermediate_size", default=shared))
    mixers, mlps = _layer_kinds(cfg, n, num_experts > 0)
    ssm_inner = int(_get(cfg, "mamba_expand", "expand", default=0)) * hidden
    if is_ssm_only:
        ssm_inner = int(_get(cfg, "intermediate_size", default=ssm_inner))
    torch_dtype = str(_get(cfg, "torch_dtype", "dtype", default="bfloat16"))
    dtype = _TORCH_DTYPES.get(torch_dtype, "bf16")
    if dtype == "fp32":  # served in 16-bit, as every engine does
        dtype = "bf16"
    biased = model_type in ("phi", "gpt2", "gpt_neox", "falcon")
    return ModelSpec(
        name=name,
        num_layers=n,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=_required(cfg, where, "vocab_size", "padded_vocab_size"),
        gated_mlp=gated,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", is_ssm_only)),
        attention_bias=bool(_get(cfg, "attention_bias", "qkv_bias", "bias", default=biased)),
        mlp_bias=bool(cfg.get("mlp_bias", biased)),
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", "seq_length",
                                         "n_positions", default=4096)),
        mixers=mixers,
        mlps=mlps,
        num_experts=num_experts,
        experts_per_token=int(_get(cfg, "num_experts_per_tok", "moe_topk", default=0)),
        expert_intermediate_size=expert_inter if num_experts else 0,
        shared_expert_intermediate_size=shared if num_experts else 0,
        ssm_state_size=int(_get(cfg, "mamba_d_state", "state_size", default=0)),
        ssm_conv_kernel=int(_get(cfg, "mamba_d_conv", "conv_kernel", default=0)),
        ssm_inner_size=ssm_inner if "mamba" in mixers else 0,
        ssm_dt_rank=int(_get(cfg, "mamba_dt_rank", "time_step_rank",
                             default=-(-hidden // 16))) if "mamba" in mixers else 0,
        weight_dtype=dtype,
        kv_dtype=dtype,
        hf_id=hf_id,
        source=source,
        model_type=model_type,
    )
