"""The run configuration: YAML validated with pydantic, with an embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infersim.errors import ConfigError, config_error_from
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


class SloConfig(_Section):
    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    e2el_ms: float | None = Field(None, gt=0)


class SimConfig(_Section):
    """Everything one run needs. ``model`` is a catalog name, HF id or config.json path;
    ``device`` a catalog name unless ``device_file`` is given."""

    model: str = "llama-3.1-8b"
    device: str | None = "h100-sxm"
    device_file: Path | None = None
    dtype: str | None = None
    kv_dtype: str | None = None
    placement: PlacementConfig = PlacementConfig()
    replicas: int = Field(1, ge=1)
    router: str = "round_robin"
    scheduler: SchedulerConfig = SchedulerConfig()
    workload: WorkloadConfig = WorkloadConfig(arrival={"process": "poisson", "rate": 10.0},
                                              num_requests=2000)
    slo: SloConfig = SloConfig(ttft_ms=500.0, tpot_ms=50.0)
    seed: int = Field(0, ge=0)
    record_steps: bool = True
    fast_forward: bool = Field(True, description="advance runs of identical decode steps at "
                               "once (same results, much faster)")
    check: bool = Field(False, description="check invariants at every step (slower)")

    @field_validator("router")
    @classmethod
    def _known_router(cls, name: str) -> str:
        from infersim.simulator.routers import ROUTERS

        if name not in ROUTERS:
            raise ValueError(f"unknown router {name!r}; allowed: {', '.join(sorted(ROUTERS))}")
        return name

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
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


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

