"""The run configuration: YAML validated with pydantic, with an embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from infersim.errors import ConfigError, config_error_from
from infersim.simulator.speculation.config import SpeculationConfig
from infersim.workloads import WorkloadConfig
from infersim.workloads.config import UNION_TAGS


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlacementConfig(_Section):
    tp: int = Field(1, ge=1, description="tensor-parallel ranks")
    pp: int = Field(1, ge=1, description="pipeline stages")
    ep: int = Field(1, ge=1, description="expert-parallel ranks (divides tp)")
    link: str | None = Field(None, description="link joining the ranks (default: the "
                             "device's scale-up link)")


class SchedulerConfig(_Section):
    """vLLM's engine limits. ``None`` limits take vLLM V1's defaults for the device: 8192
    batched tokens and 1024 sequences on GPUs with >= 70 GiB that are not A100, else 2048
    and 256."""

    name: str = "vllm_v1"
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    long_prefill_token_threshold: int = Field(0, ge=0)
    enable_chunked_prefill: bool = True
    reserve_full_isl: bool = Field(True, description="vLLM's scheduler_reserve_full_isl: "
                                   "admit a request only if its whole prompt fits")
    block_size: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    num_gpu_blocks: int | None = Field(None, ge=1, description="KV blocks per replica; "
                                       "None: computed from memory")
    enable_prefix_caching: bool = Field(True, description="reuse cached KV blocks of equal "
                                        "prefixes (needs prefix ids in the workload)")
    policy: Literal["fcfs", "priority", "sjf"] = Field(
        "fcfs", description="waiting order and preemption victim (sjf: shortest remaining "
        "prompt + output first, an oracle of the output length)")
    preemption: Literal["recompute", "swap"] = "recompute"
    swap_space_gib: float = Field(4.0, ge=0, description="host memory per replica for "
                                  "swapped-out KV (vLLM's swap_space)")
    watermark: float | None = Field(None, ge=0, lt=1, description="share of KV blocks kept "
                                    "free at admission (None: the scheduler's default; "
                                    "vLLM V0 uses 0.01)")


class SloConfig(_Section):
    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    e2el_ms: float | None = Field(None, gt=0)


def _known_router(name: str | None) -> str | None:
    from infersim.simulator.routers import ROUTERS

    if name is not None and name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; allowed: {', '.join(sorted(ROUTERS))}")
    return name


class PoolConfig(_Section):
    """A group of identical replicas. Fields left out take the top-level value; a
    ``scheduler`` block overrides only the keys it sets. ``role``: ``mixed`` replicas serve
    whole requests; ``prefill`` replicas compute prompts and hand the KV cache to ``decode``
    replicas (disaggregated serving)."""

    name: str
    role: Literal["mixed", "prefill", "decode"] = "mixed"
    device: str | None = None
    device_file: Path | None = None
    dtype: str | None = None
    kv_dtype: str | None = None
    placement: PlacementConfig | None = None
    replicas: int | None = Field(None, ge=1)
    scheduler: SchedulerConfig | None = None


class KvTransferConfig(_Section):
    """How prefill replicas hand a request's KV cache to decode replicas."""

    link: str = Field("infiniband-ndr", description="link between a prefill and a decode "
                      "replica (per rank; ranks send their shards in parallel)")
    layerwise: bool = Field(True, description="send each layer as soon as it is computed, "
                            "overlapping the transfer with the rest of the prefill")
    router: str = Field("least_outstanding", description="picks the decode replica")

    _router = field_validator("router")(classmethod(lambda cls, v: _known_router(v)))


class SimConfig(_Section):
    """Everything one run needs. ``model`` is a catalog name, HF id or config.json path;
    ``device`` a catalog name unless ``device_file`` is given. Without ``pools`` the
    top-level device, placement, replicas and scheduler make one pool of mixed replicas;
    with ``pools`` they are the defaults each pool inherits."""

    model: str = "llama-3.1-8b"
    device: str | None = "h100-sxm"
    device_file: Path | None = None
    dtype: str | None = None
    kv_dtype: str | None = None
    placement: PlacementConfig = PlacementConfig()
    replicas: int = Field(1, ge=1)
    router: str = "round_robin"
    scheduler: SchedulerConfig = SchedulerConfig()
    pools: tuple[PoolConfig, ...] = ()
    kv_transfer: KvTransferConfig = KvTransferConfig()
    workload: WorkloadConfig = WorkloadConfig(arrival={"process": "poisson", "rate": 10.0},
                                              num_requests=2000)
    slo: SloConfig = SloConfig(ttft_ms=500.0, tpot_ms=50.0)
    speculation: SpeculationConfig = SpeculationConfig()
    seed: int = Field(0, ge=0)
    record_steps: bool = True
    fast_forward: bool = Field(True, description="advance runs of identical decode steps at "
                               "once (same results, much faster)")
    check: bool = Field(False, description="check invariants at every step (slower)")

    _router = field_validator("router")(classmethod(lambda cls, v: _known_router(v)))

    @model_validator(mode="after")
    def _pool_roles(self) -> SimConfig:
        roles = {p.role for p in self.pools}
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        if ("prefill" in roles) != ("decode" in roles) or ("mixed" in roles and len(roles) > 1):
            raise ValueError(f"pools: roles {sorted(roles)}: use only mixed pools, or prefill "
                             "and decode pools together")
        return self

    def resolved_pools(self) -> list[PoolConfig]:
        """Every pool with the top-level defaults filled in (one mixed pool if none)."""
        pools = self.pools or (PoolConfig(name="default"),)
        out = []
        for pool in pools:
            scheduler = self.scheduler
            if pool.scheduler is not None:
                scheduler = scheduler.model_copy(update={
                    k: getattr(pool.scheduler, k) for k in pool.scheduler.model_fields_set})
            own_device = pool.device is not None or pool.device_file is not None
            out.append(pool.model_copy(update={
                "device": pool.device if own_device else self.device,
                "device_file": pool.device_file if own_device else self.device_file,
                "dtype": pool.dtype or self.dtype,
                "kv_dtype": pool.kv_dtype or self.kv_dtype,
                "placement": pool.placement or self.placement,
                "replicas": pool.replicas or (self.replicas if not self.pools else 1),
                "scheduler": scheduler,
            }))
        return out

    @property
    def disaggregated(self) -> bool:
        return any(p.role == "prefill" for p in self.pools)

    @classmethod
    def from_dict(cls, data: Any, where: str = "config", base_dir: Path | None = None
                  ) -> SimConfig:
        """Validate a mapping; errors name the key path. Relative paths (device file,
        traces) are taken from ``base_dir``."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(where, type(data).__name__, "the config must be a mapping")
        try:
            cfg = cls.model_validate(data)
        except ValidationError as exc:
            tags = {**UNION_TAGS}
            raise config_error_from(exc, where, tags) from None
        if base_dir is not None:
            update: dict[str, Any] = {"workload": cfg.workload.with_base_dir(base_dir)}
            if cfg.device_file is not None and not cfg.device_file.is_absolute():
                update["device_file"] = base_dir / cfg.device_file
            update["pools"] = tuple(
                p.model_copy(update={"device_file": base_dir / p.device_file})
                if p.device_file is not None and not p.device_file.is_absolute() else p
                for p in cfg.pools)
            acc = cfg.speculation.acceptance
            if acc is not None and acc.path is not None and not acc.path.is_absolute():
                update["speculation"] = cfg.speculation.model_copy(update={
                    "acceptance": acc.model_copy(update={"path": base_dir / acc.path})})
            cfg = cfg.model_copy(update=update)
        return cfg

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None
             ) -> SimConfig:
        """A config file (or the default) with ``key.path=value`` overrides applied."""
        data: dict[str, Any] = {}
        base_dir = None
        where = "config"
        if path is not None:
            path = Path(path)
            where = str(path)
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except OSError as exc:
                raise ConfigError("--config", str(path), f"cannot be read: {exc.strerror}"
                                  ) from None
            except yaml.YAMLError as exc:
                raise ConfigError(str(path), None, f"not valid YAML: {exc}") from None
            base_dir = path.parent
        if overrides:  # apply on top of the validated file, defaults filled in
            data = cls.from_dict(data, where).model_dump(mode="json", exclude_none=True)
            for item in overrides:
                apply_override(data, item)
            where = f"{where} with --set"
        return cls.from_dict(data, where, base_dir)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        if self.speculation.method == "none":  # plain runs keep their config unchanged
            data.pop("speculation")
        return yaml.safe_dump(data, sort_keys=False)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in nested ``data`` (the value is parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", item, "expected key.path=value, e.g. scheduler.max_num_seqs=64")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError("--set", item, f"{part!r} is not a section")
        node = child
    if value is None:  # key=null removes the key, so its default applies again
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value

