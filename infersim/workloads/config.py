"""WorkloadConfig: which requests a run serves, synthetic or replayed from a trace.

YAML shape (synthetic)::

    arrival: {process: poisson, rate: 10}          # or gamma {rate, cv}, constant, burst
    prompt: {dist: lognormal, mean: 1155, cv: 0.96, max: 8192}   # left out: CHAT_DEFAULTS
    output: {dist: lognormal, mean: 211, cv: 0.77, max: 1000}
    num_requests: 2000                              # default 2000

YAML shape (trace replay)::

    trace: {path: traces/azure2023_conv.csv, format: auto, rate_scale: 2.0,
            start_s: 0, end_s: 600, use_lengths: true}
    num_requests: 1000                              # optional cap
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infersim.errors import ConfigError, config_error_from
from infersim.workloads.arrivals import ARRIVAL_PROCESSES, ArrivalProcess
from infersim.workloads.lengths import LENGTH_DISTRIBUTIONS, LengthDistribution, LengthModel
from infersim.workloads.traces import TraceFormat

DEFAULT_NUM_REQUESTS = 2000

CHAT_DEFAULTS: dict[str, dict[str, Any]] = {
    "prompt": {"dist": "lognormal", "mean": 1155, "cv": 0.96, "max": 8192},
    "output": {"dist": "lognormal", "mean": 211, "cv": 0.77, "max": 1000},
}
"""Chat-like lengths, fitted by moments to the Azure LLM inference trace 2023,
conversation service (Splitwise paper, CC-BY; 19,366 requests): prompt mean 1154.7 and
cv 0.96, output mean 211.1 and cv 0.77 (means are before the caps, which lower them by
under 1%). Output max 1000 is the trace's own maximum (the service's generation limit) and
clips 0.4% of draws; prompt max 8192 is a common context limit and clips 0.2% (the trace's
longest prompt is 14,050 tokens, its 99th percentile 4,142)."""

_LENGTHS = TypeAdapter(LengthDistribution)
CHAT_PROMPT: LengthModel = _LENGTHS.validate_python(CHAT_DEFAULTS["prompt"])
CHAT_OUTPUT: LengthModel = _LENGTHS.validate_python(CHAT_DEFAULTS["output"])


class TraceReplay(BaseModel):
    """Replay a trace file: arrivals always, lengths too unless ``use_lengths`` is false.
    Times in ``[start_s, end_s)`` of the trace are kept, shifted to start at 0, then
    divided by ``rate_scale`` (2.0 = twice the request rate)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    format: TraceFormat = "auto"
    rate_scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    start_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    end_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    use_lengths: bool = True

    @field_validator("end_s")
    @classmethod
    def _window(cls, end_s: float | None, info: ValidationInfo) -> float | None:
        start_s = info.data.get("start_s", 0.0)
        if end_s is not None and end_s <= start_s:
            raise ValueError(f"end_s must be > start_s ({start_s})")
        return end_s


class SharedPrefix(BaseModel):
    """Requests that start with one of ``count`` system prompts of ``tokens`` tokens (drawn
    uniformly), the rest of each prompt its own: prefix ids for prefix caching."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: int = Field(ge=1)
    count: int = Field(1, ge=1)
    block_tokens: int = Field(16, ge=1, description="granularity of the prefix ids")


class Sessions(BaseModel):
    """Multi-turn conversations: the arrival process starts sessions; each has a geometric
    number of turns (mean ``turns``); a later turn's prompt is the whole conversation so
    far (previous prompt and answer) plus ``followup`` new tokens, so its prefix is
    reusable. Open loop: the next turn arrives ``think_time_s`` (exponential mean) after
    the previous turn arrived, whether or not it was answered. A session ends early when
    its context would exceed ``max_context`` tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    turns: float = Field(ge=1)
    think_time_s: float = Field(gt=0)
    followup: LengthDistribution = Field(
        default_factory=lambda: _LENGTHS.validate_python(
            {"dist": "lognormal", "mean": 200, "cv": 1.0, "max": 4096}))
    max_context: int = Field(32768, ge=2)
    block_tokens: int = Field(16, ge=1, description="granularity of the prefix ids")


class Priorities(BaseModel):
    """Random priority classes (lower value = more important), drawn with ``weights``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    values: tuple[int, ...] = Field(min_length=1)
    weights: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _weights(self) -> Priorities:
        w = self.weights
        if w is not None and (len(w) != len(self.values) or min(w) < 0 or sum(w) <= 0):
            raise ValueError("weights: one non-negative weight per value, not all zero")
        return self


class WorkloadConfig(BaseModel):
    """Either ``arrival`` (synthetic) or ``trace`` (replay), plus length distributions.

    ``prompt``/``output`` left out (None) mean :data:`CHAT_DEFAULTS` when lengths are drawn
    (see ``prompt_dist``/``output_dist``); with a trace whose lengths are used they must
    be left out. ``num_requests`` is the count of synthetic requests
    (default 2000) or, for a trace, an optional cap on the replayed requests.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    arrival: ArrivalProcess | None = None
    trace: TraceReplay | None = None
    prompt: LengthDistribution | None = None
    output: LengthDistribution | None = None
    num_requests: int | None = Field(None, ge=1)
    shared_prefix: SharedPrefix | None = None
    sessions: Sessions | None = None
    priorities: Priorities | None = None

    @model_validator(mode="after")
    def _one_source(self) -> WorkloadConfig:
        if (self.arrival is None) == (self.trace is None):
            raise ValueError("give exactly one of arrival (synthetic) or trace (replay)")
        if self.trace is not None and self.trace.use_lengths:
            given = [key for key in ("prompt", "output") if getattr(self, key) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} lengths come from the trace; set "
                                 "trace.use_lengths: false to draw them from a distribution")
        if self.sessions is not None and self.trace is not None:
            raise ValueError("sessions are generated from an arrival process, not a trace")
        return self

    @property
    def prompt_dist(self) -> LengthModel:
        """The prompt length distribution in force (``prompt`` or the chat default)."""
        return self.prompt if self.prompt is not None else CHAT_PROMPT

    @property
    def output_dist(self) -> LengthModel:
        """The output length distribution in force (``output`` or the chat default)."""
        return self.output if self.output is not None else CHAT_OUTPUT

    @classmethod
    def from_dict(cls, data: Any, where: str = "workload", base_dir: Path | None = None,
                  ) -> WorkloadConfig:
        """Validate a mapping (e.g. parsed YAML). Problems raise ConfigError naming the key
        path after ``where`` (e.g. ``workload: arrival.cv``); relative file paths are taken
        from ``base_dir`` when given."""
        try:
            cfg = cls.model_validate(data)
        except ValidationError as exc:
            raise config_error_from(exc, where, UNION_TAGS) from None
        return cfg.with_base_dir(base_dir) if base_dir is not None else cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> WorkloadConfig:
        """Read a YAML workload file; relative trace paths are taken from its folder."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(str(path), None, f"cannot read YAML: {exc}") from None
        return cls.from_dict(data, where=str(path), base_dir=path.parent)

    def with_base_dir(self, base_dir: Path) -> WorkloadConfig:
        """A copy whose relative trace paths are taken from ``base_dir``."""
        update: dict[str, Any] = {}
        if self.trace is not None and not self.trace.path.is_absolute():
            update["trace"] = self.trace.model_copy(update={"path": base_dir / self.trace.path})
        for key in ("prompt", "output"):
            dist = getattr(self, key)
            path = getattr(dist, "path", None)
            if path is not None and not path.is_absolute():
                update[key] = dist.model_copy(update={"path": base_dir / path})
        return self.model_copy(update=update) if update else self


UNION_TAGS = {"arrival": set(ARRIVAL_PROCESSES), "prompt": set(LENGTH_DISTRIBUTIONS),
           "output": set(LENGTH_DISTRIBUTIONS)}
