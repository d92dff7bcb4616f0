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
SESSION_STREAM = 0x574C0006
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
    elif cfg.sessions is not None:
        return _with_priorities(cfg, seed, *session_requests(cfg, seed))
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
    return _with_priorities(cfg, seed, arrival, prompt, output, prefix_ids, prefix_tokens)


def _with_priorities(cfg: WorkloadConfig, seed: int, arrival, prompt, output, prefix_ids,
                     prefix_tokens: int, covers_output: bool = False) -> RequestTable:
    priority = None
    if cfg.priorities is not None:
        p = cfg.priorities
        weights = None if p.weights is None else np.asarray(p.weights) / sum(p.weights)
        priority = stream_rng(seed, PRIORITY_STREAM).choice(np.asarray(p.values), len(arrival),
                                                            p=weights)
    return RequestTable(arrival, prompt, output, priority, prefix_ids, prefix_tokens,
                        covers_output)


def session_requests(cfg: WorkloadConfig, seed: int) -> tuple:
    """Multi-turn conversations (see ``Sessions``): arrivals, prompt and output lengths and
    chained block ids over each turn's prompt and answer, sorted by arrival."""
    s = cfg.sessions
    n = cfg.num_requests or DEFAULT_NUM_REQUESTS
    g = s.block_tokens
    starts = cfg.arrival.sample(n, stream_rng(seed, ARRIVAL_STREAM))
    first = cfg.prompt_dist.sample(n, stream_rng(seed, PROMPT_STREAM))
    outputs = cfg.output_dist.sample(n, stream_rng(seed, OUTPUT_STREAM))
    rng = stream_rng(seed, SESSION_STREAM)
    turns = rng.geometric(1.0 / s.turns, n)
    followups = s.followup.sample(n, rng)
    thinks = rng.exponential(s.think_time_s, n)
    rows: list[tuple[float, int, int, np.ndarray]] = []
    next_id = 0

    def fresh(count: int) -> np.ndarray:
        nonlocal next_id
        ids = np.arange(next_id, next_id + count, dtype=np.int64)
        next_id += count
        return ids

    for session in range(n):
        t, prompt = float(starts[session]), int(first[session])
        ids = fresh(-(-prompt // g))
        for _ in range(int(turns[session])):
            out = int(outputs[len(rows)])
            conversation = prompt + out
            # the prompt's full blocks, then the answer's: one chain over the whole turn
            ids = np.concatenate((ids[:prompt // g], fresh(-(-conversation // g) - prompt // g)))
            rows.append((t, prompt, out, ids))
            if len(rows) == n:
                break
            follow = int(followups[len(rows)])
            if conversation + follow + 1 > s.max_context:
                break
            prompt = conversation + follow
            ids = np.concatenate((ids[:conversation // g],
                                  fresh(-(-prompt // g) - conversation // g)))
            t += float(thinks[len(rows)])
        if len(rows) == n:
            break
    rows.sort(key=lambda r: r[0])
    arrival = np.array([r[0] for r in rows])
    return (arrival, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
            tuple(r[3] for r in rows), g, True)


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
