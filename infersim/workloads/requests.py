"""The table of requests a workload produces and the simulator consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infersim.errors import ConfigError


@dataclass(frozen=True)
class RequestTable:
    """Requests as columns: arrival time (s from start, non-decreasing), prompt tokens and
    output tokens (both >= 1). Columns, not objects, so a million requests cost ~24 MB.

    Optional: ``priority`` (lower is more important, as in vLLM) and ``prefix_ids``: per
    request, ids of its prompt's consecutive ``prefix_block_tokens``-token blocks, chained
    (an id identifies the whole prefix up to the end of its block), so equal ids mean
    reusable KV cache (the Mooncake trace's ``hash_ids``). With ``prefix_covers_output``
    the ids continue over the request's output (generated conversations), else they stop
    at the end of the prompt."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    priority: np.ndarray | None = None
    prefix_ids: tuple[np.ndarray, ...] | None = None
    prefix_block_tokens: int = 0
    prefix_covers_output: bool = False

    def __post_init__(self) -> None:
        arrival = np.asarray(self.arrival_s, dtype=np.float64)
        prompt = np.asarray(self.prompt_tokens, dtype=np.int64)
        output = np.asarray(self.output_tokens, dtype=np.int64)
        if not (arrival.ndim == prompt.ndim == output.ndim == 1):
            raise ConfigError("requests", arrival.shape, "columns must be one-dimensional")
        if not (len(arrival) == len(prompt) == len(output)):
            raise ConfigError("requests", (len(arrival), len(prompt), len(output)),
                              "columns must have equal length")
        if len(arrival) and (np.any(np.diff(arrival) < 0) or arrival[0] < 0
                             or not np.all(np.isfinite(arrival))):
            raise ConfigError("requests.arrival_s", "unsorted/negative",
                              "arrival times must be finite, >= 0 and non-decreasing")
        if np.any(prompt < 1) or np.any(output < 1):
            raise ConfigError("requests", "token count < 1",
                              "prompt and output lengths must be >= 1")
        if self.priority is not None:
            priority = np.asarray(self.priority, dtype=np.int64)
            if priority.shape != arrival.shape:
                raise ConfigError("requests.priority", priority.shape, "one per request")
            object.__setattr__(self, "priority", priority)
        if self.prefix_ids is not None and (len(self.prefix_ids) != len(arrival)
                                            or self.prefix_block_tokens < 1):
            raise ConfigError("requests.prefix_ids", len(self.prefix_ids),
                              "one id array per request and prefix_block_tokens >= 1")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0
