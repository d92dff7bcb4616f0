"""One scheduling problem: requests, engine limits, KV capacity and SLOs of one replica."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infersim.errors import ConfigError, SolverError
from infersim.workloads import RequestTable

OBJECTIVES = ("latency", "makespan", "cost", "slo")


@dataclass(frozen=True)
class ScheduleInstance:
    """Requests (arrival s, prompt and output tokens) served by one engine with a token
    budget per step, a cap on running sequences and ``num_blocks`` KV blocks of
    ``block_size`` tokens. ``devices``: ranks of the replica (cost is device-seconds).
    ``slo``: limits in ms (``ttft_ms``, ``tpot_ms``, ``e2el_ms``; None = none)."""

    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    max_num_batched_tokens: int
    max_num_seqs: int
    num_blocks: int
    block_size: int
    devices: int = 1
    slo: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("arrival_s", "prompt", "output"):
            object.__setattr__(self, name, np.asarray(getattr(self, name)))
        object.__setattr__(self, "prompt", self.prompt.astype(np.int64))
        object.__setattr__(self, "output", self.output.astype(np.int64))
        object.__setattr__(self, "arrival_s", self.arrival_s.astype(np.float64))
        n = len(self.arrival_s)
        if n == 0:
            raise SolverError("the instance has no requests")
        if not (len(self.prompt) == len(self.output) == n):
            raise ConfigError("requests", (n, len(self.prompt), len(self.output)),
                              "arrival, prompt and output columns must have equal length")
        if np.any(self.prompt < 1) or np.any(self.output < 1) or np.any(self.arrival_s < 0):
            raise ConfigError("requests", "lengths < 1 or arrival < 0",
                              "prompt and output lengths must be >= 1, arrivals >= 0")
        for name in ("max_num_batched_tokens", "max_num_seqs", "num_blocks", "block_size",
                     "devices"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")
        too_long = np.flatnonzero(self.prompt + self.output > self.capacity_tokens)
        if too_long.size:
            r = int(too_long[0])
            raise SolverError(
                f"request {r} needs {int(self.prompt[r] + self.output[r])} tokens of KV cache "
                f"but the cache holds {self.capacity_tokens} ({self.num_blocks} blocks of "
                f"{self.block_size}); the engine would reject it ({too_long.size} such "
                "request(s)): raise scheduler.num_gpu_blocks or drop them")

    @property
    def n(self) -> int:
        return len(self.arrival_s)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def length(self) -> np.ndarray:
        """Tokens each request computes without preemption: prompt + output - 1 (the last
        sampled token is never fed back)."""
        return self.prompt + self.output - 1

    @property
    def slo_ms(self) -> dict[str, float]:
        return dict(self.slo)

    def table(self) -> RequestTable:
        return RequestTable(self.arrival_s, self.prompt, self.output)

    def describe(self) -> str:
        return (f"{self.n} requests (prompt {int(self.prompt.min())}-{int(self.prompt.max())}, "
                f"output {int(self.output.min())}-{int(self.output.max())} tokens, arrivals "
                f"{self.arrival_s[0]:.3f}-{self.arrival_s[-1]:.3f} s), budget "
                f"{self.max_num_batched_tokens} tokens/step, {self.max_num_seqs} sequences, "
                f"{self.num_blocks} KV blocks x {self.block_size}")


def head(table: RequestTable, n: int | None) -> RequestTable:
    """The first ``n`` requests of ``table`` (all if None), lengths and arrivals only."""
    if n is not None and n < 1:
        raise ConfigError("--requests", n, "must be >= 1")
    k = len(table) if n is None else min(n, len(table))
    return RequestTable(table.arrival_s[:k], table.prompt_tokens[:k], table.output_tokens[:k])
