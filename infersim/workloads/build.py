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
PREFIX_STREAM = 0x574C0004
PRIORITY_STREAM = 0x574C0005
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
    prefix_ids, prefix_tokens = None, 0
    if cfg.trace is not None:
        t = cfg.trace
        trace = load_trace(t.path, t.format, rate_scale=t.rate_scale, start_s=t.start_s,
                           end_s=t.end_s, max_requests=cfg.num_requests)
        table = trace.requests
        arrival, prompt, output = table.arrival_s, table.prompt_tokens, table.output_tokens
        if trace.prefix_hashes is not None and t.use_lengths:
            prefix_ids, prefix_tokens = trace.prefix_hashes, trace.prefix_block_tokens
    else:
        arrival = cfg.arrival.sample(cfg.num_requests or DEFAULT_NUM_REQUESTS,
                                     stream_rng(seed, ARRIVAL_STREAM))
    n = len(arrival)
    if cfg.trace is None or not cfg.trace.use_lengths:
        prompt = cfg.prompt_dist.sample(n, stream_rng(seed, PROMPT_STREAM))
        output = cfg.output_dist.sample(n, stream_rng(seed, OUTPUT_STREAM))
    if cfg.shared_prefix is not None:
        prefix_ids = shared_prefix_ids(prompt, cfg.shared_prefix,
                                       stream_rng(seed, PREFIX_STREAM))
        prefix_tokens = cfg.shared_prefix.block_tokens
    priority = None
    if cfg.priorities is not None:
        p = cfg.priorities
        weights = None if p.weights is None else np.asarray(p.weights) / sum(p.weights)
        priority = stream_rng(seed, PRIORITY_STREAM).choice(np.asarray(p.values), n, p=weights)
    return RequestTable(arrival, prompt, output, priority, prefix_ids, prefix_tokens)


def shared_prefix_ids(prompt: np.ndarray, shared, rng: np.random.Generator
                      ) -> tuple[np.ndarray, ...]:
    """Chained block ids: the blocks of the chosen system prompt are shared (the same ids
    for every request that drew it), every later block is the request's own."""
    g = shared.block_tokens
    shared_blocks = shared.tokens // g
    choice = rng.integers(0, shared.count, len(prompt))
    next_id = shared.count * shared_blocks
    out = []
    for which, p in zip(choice, prompt, strict=True):
        blocks = -(-int(p) // g)
        common = min(shared_blocks, int(p) // g)
        own = blocks - common
        ids = np.empty(blocks, dtype=np.int64)
        ids[:common] = which * shared_blocks + np.arange(common)
        ids[common:] = next_id + np.arange(own)
        next_id += own
        out.append(ids)
    return tuple(out)
