"""Turn a WorkloadConfig and a seed into a RequestTable.

Each random part draws from its own numpy Generator, ``default_rng([seed, stream])``,
with a fixed stream id per part, so changing one part (say the output lengths) never
shifts another (the arrival times). Same config and seed -> identical arrays.
"""

from __future__ import annotations

import numpy as np

from infersim.errors import ConfigError
from infersim.workloads.config import DEFAULT_NUM_REQUESTS, WorkloadConfig
from infersim.workloads.requests import RequestTable
from infersim.workloads.traces import load_trace

ARRIVAL_STREAM = 0x574C0001
PROMPT_STREAM = 0x574C0002
OUTPUT_STREAM = 0x574C0003
"""Stream ids of the workload's generators ("WL" + part number). Never renumber them:
that would change every seeded workload. Other subsystems should pick other ids."""


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """The Generator of one random stream of a seeded run."""
    return np.random.default_rng([seed, stream])


def build_requests(cfg: WorkloadConfig, seed: int = 0) -> RequestTable:
    """The requests ``cfg`` describes, drawn with ``seed`` (an integer >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError("seed", seed, "an integer >= 0")
    seed = int(seed)
    if cfg.trace is not None:
        t = cfg.trace
        trace = load_trace(t.path, t.format, rate_scale=t.rate_scale, start_s=t.start_s,
                           end_s=t.end_s, max_requests=cfg.num_requests).requests
        if t.use_lengths:
            return trace
        arrival = trace.arrival_s
    else:
        n = cfg.num_requests or DEFAULT_NUM_REQUESTS
        arrival = cfg.arrival.sample(n, stream_rng(seed, ARRIVAL_STREAM))
    n = len(arrival)
    prompt = cfg.prompt_dist.sample(n, stream_rng(seed, PROMPT_STREAM))
    output = cfg.output_dist.sample(n, stream_rng(seed, OUTPUT_STREAM))
    return RequestTable(arrival, prompt, output)
