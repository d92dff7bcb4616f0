"""``speculation:`` in a run config, validated with pydantic.

YAML shape (every key optional; ``method: none``, the default, is plain decoding)::

    speculation:
      method: draft_model        # none | draft_model | heads | ngram
      k: 4                       # drafts per verify (fixed), or the most a policy tries
      draft_model: llama-3.2-1b  # draft_model only
      draft_device: null         # null: the target's devices; a catalog name: another device
      draft_tp: null             # null: the target's tp on its devices, 1 elsewhere
      head_layers: 1             # heads only: decoder layers of the EAGLE/MTP-style head
      acceptance: 0.7            # or [a_1, a_2, ...], or {model: classes | replay, ...}
      policy: fixed              # or threshold {threshold: 0.6}, or load_aware
      tree: null                 # or {accept: [p_1, ...], nodes: 16, depth: 8}
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DRAFTER_NAMES = ("none", "draft_model", "heads", "ngram")
ACCEPTANCE_NAMES = ("rate", "vector", "classes", "replay")
POLICY_NAMES = ("fixed", "threshold", "load_aware")
NGRAM_SECONDS_PER_SEQ = 1e-5  # grade D: prompt lookup is a CPU string match per sequence


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _vector(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    if not values:
        raise ValueError("give at least one a_i")
    if any(not 0.0 <= a <= 1.0 for a in values):
        raise ValueError("each a_i = P(first i drafts accepted) must be in [0, 1]")
    if any(b > a + 1e-12 for a, b in pairwise(values)):
        raise ValueError("a_i = P(first i drafts accepted) cannot increase with i")
    return values


class AcceptanceClass(_Section):
    """One kind of request (e.g. code or chat): its share of requests and its acceptance."""

    name: str
    share: float = Field(gt=0, description="relative share of requests (normalised)")
    rate: float | None = Field(None, ge=0, le=1, description="per-token acceptance a")
    vector: tuple[float, ...] | None = Field(None, description="a_i = P(first i accepted)")

    _vec = field_validator("vector")(classmethod(lambda cls, v: _vector(v)))

    @model_validator(mode="after")
    def _one(self) -> AcceptanceClass:
        if (self.rate is None) == (self.vector is None):
            raise ValueError(f"class {self.name!r}: give exactly one of rate or vector")
        return self


class AcceptanceConfig(_Section):
    """How many drafts the target accepts. ``rate``: a constant per-token rate a
    (a_i = a^i); ``vector``: a_i = P(first i drafts accepted), positions past its end are
    never accepted; ``classes``: each request draws a class (seeded) with its own rate or
    vector; ``replay``: recorded accepted-draft counts (``counts`` or a text file ``path``
    of integers), taken in order, cyclically, recorded at ``recorded_k`` drafts per verify.
    A bare number is a rate and a bare list a vector."""

    model: str = "rate"
    rate: float | None = Field(None, ge=0, le=1)
    vector: tuple[float, ...] | None = None
    classes: tuple[AcceptanceClass, ...] = ()
    counts: tuple[int, ...] = ()
    path: Path | None = None
    recorded_k: int | None = Field(None, ge=1, description="drafts per verify when the "
                                   "counts were recorded (default: the largest count)")

    _vec = field_validator("vector")(classmethod(lambda cls, v: _vector(v)))

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ACCEPTANCE_NAMES:
            raise ValueError(f"unknown acceptance model {v!r}; allowed: "
                             f"{', '.join(ACCEPTANCE_NAMES)}")
        return v

    @field_validator("counts")
    @classmethod
    def _counts(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(c < 0 for c in v):
            raise ValueError("accepted counts must be >= 0")
        return v

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"model": "rate", "rate": data}
        if isinstance(data, list | tuple):
            return {"model": "vector", "vector": data}
        if isinstance(data, dict) and "model" not in data:  # inferred from what is given
            for model, keys in (("vector", ("vector",)), ("classes", ("classes",)),
                                ("replay", ("counts", "path"))):
                if any(data.get(k) for k in keys):
                    return {**data, "model": model}
        return data

    @model_validator(mode="after")
    def _needs(self) -> AcceptanceConfig:
        need = {"rate": "rate", "vector": "vector", "classes": "classes"}
        key = need.get(self.model)
        if key and getattr(self, key) in (None, ()):
            raise ValueError(f"acceptance model {self.model!r} needs {key!r}")
        if self.model == "replay" and bool(self.counts) == (self.path is not None):
            raise ValueError("replay needs exactly one of counts or path")
        if self.model == "classes" and len({c.name for c in self.classes}) != len(self.classes):
            raise ValueError("class names must be unique")
        return self


class PolicyConfig(_Section):
    """How many drafts each verify carries. ``fixed``: always ``k`` (capped by the request's
    remaining output and the token budget); ``threshold``: per request, stop before the
    first position whose conditional acceptance a_i / a_(i-1) is below ``threshold``
    (SpecDec++ style); ``load_aware``: every step, the K in 0..k (or tree size) with the
    most expected tokens per second for the current batch (SmartSpec style; K = 0 is plain
    decoding). A bare name is accepted."""

    name: str = "fixed"
    threshold: float = Field(0.5, gt=0, le=1)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in POLICY_NAMES:
            raise ValueError(f"unknown policy {v!r}; allowed: {', '.join(POLICY_NAMES)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class TreeConfig(_Section):
    """Token trees: the drafter proposes the best tree (Sequoia's DP) of ``nodes`` nodes
    (root included; the verify computes q = nodes per sequence) and depth <= ``depth``;
    ``accept`` are the positional acceptances p_k of the k-th ranked child (sum <= 1)."""

    accept: tuple[float, ...]
    nodes: int = Field(16, ge=1, le=512)
    depth: int = Field(8, ge=0, le=64)

    @field_validator("accept")
    @classmethod
    def _accept(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        from infersim.optimizer.trees import check_accept

        try:
            return check_accept(v, "accept")
        except Exception as exc:  # a ConfigError: pydantic wants a ValueError
            raise ValueError(str(exc)) from None


class SpeculationConfig(_Section):
    """Speculative decoding: who drafts (``method``), how many (``k``, ``policy``), how many
    the target accepts (``acceptance``, or the ``tree``'s own ``accept``)."""

    method: str = "none"
    k: int = Field(4, ge=0, le=64, description="drafts per verify (fixed policy) or the "
                   "largest the policies try")
    draft_model: str | None = None
    draft_device: str | None = Field(None, description="None: the target's own devices "
                                     "(drafting shares the step); else another device that "
                                     "drafts in parallel")
    draft_tp: int | None = Field(None, ge=1)
    head_layers: int = Field(1, ge=1, le=8, description="heads: decoder layers of the head")
    draft_seconds_per_seq: float = Field(NGRAM_SECONDS_PER_SEQ, ge=0, description="ngram: "
                                         "CPU seconds per sequence and step to find drafts")
    acceptance: AcceptanceConfig | None = None
    policy: PolicyConfig = PolicyConfig()
    tree: TreeConfig | None = None

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DRAFTER_NAMES:
            raise ValueError(f"unknown method {v!r}; allowed: {', '.join(DRAFTER_NAMES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SpeculationConfig:
        m = self.method
        if m == "none":
            return self
        if m == "draft_model" and not self.draft_model:
            raise ValueError("method draft_model needs draft_model (a catalog name, HF id "
                             "or config.json path)")
        if m != "draft_model" and (self.draft_model or self.draft_device or self.draft_tp):
            raise ValueError(f"draft_model, draft_device and draft_tp belong to method "
                             f"draft_model, not {m}")
        if self.tree is not None:
            if m == "ngram":
                raise ValueError("token trees need a model drafter (draft_model or heads)")
            if self.acceptance is not None:
                raise ValueError("with a tree, acceptance comes from tree.accept; remove "
                                 "acceptance")
            if self.policy.name == "threshold":
                raise ValueError("the threshold policy stops a chain; with a tree use fixed "
                                 "or load_aware")
        elif self.acceptance is None:
            raise ValueError(f"method {m} needs acceptance: a rate (0.7), a vector "
                             "([0.8, 0.6, ...]), classes or replay")
        return self

    @property
    def active(self) -> bool:
        """Does anything speculate? ``method: none``, and a fixed policy with k = 0 (or a
        root-only tree), are plain decoding exactly."""
        if self.method == "none":
            return False
        if self.policy.name == "fixed":
            return (self.tree.nodes > 1) if self.tree is not None else self.k > 0
        return True
