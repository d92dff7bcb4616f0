"""Prefix caching: content-keyed blocks reused across requests, LRU eviction."""

from __future__ import annotations

import numpy as np
import pytest

from infersim.simulator import SimConfig, simulate
from infersim.simulator.cluster import kv_block_keys
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.request import Request
from infersim.workloads import build_requests

DATA = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"


def with_keys(rid: int, keys: list[int], prompt: int, output: int = 4) -> Request:
    return Request(rid, 0.0, prompt, output, block_hashes=np.asarray(keys))


def test_a_released_prefix_is_reused_then_evicted_least_recently_used_first():
    kv = BlockManager(6, 4, caching=True)
    a = with_keys(0, [1, 2, 3], prompt=12)
    assert kv.lookup(a) == 0 and kv.admit(a, 0, 12)
    a.num_computed = 12
    kv.cache_full_blocks(a)
    kv.release(a)
    assert kv.free == 6 and kv.cached_blocks == 3
    b = with_keys(1, [1, 2, 9], prompt=12)
    assert kv.lookup(b) == 2  # blocks 1 and 2 are cached
    assert kv.admit(b, 2, 12) and b.num_computed == 8 and b.blocks == 3
    assert kv.used == 3
    kv.release(b)
    # freed last block first (as vLLM does): the LRU order is now 3, 2, 1
    c = with_keys(2, [7, 8, 9, 10, 11], prompt=20)
    assert kv.admit(c, 0, 20)  # 5 blocks: the 3 never-cached ones, then evict 3 and 2
    assert kv.cached_blocks == 1 and kv.lookup(with_keys(3, [1, 2], prompt=9)) == 1


def test_the_last_prompt_token_is_always_recomputed():
    kv = BlockManager(10, 4, caching=True)
    a = with_keys(0, [1, 2], prompt=8)
    kv.admit(a, 0, 8)
    a.num_computed = 8
    kv.cache_full_blocks(a)
    kv.release(a)
    assert kv.lookup(with_keys(1, [1, 2], prompt=8)) == 1  # all cached, but 1 token redone


def test_kv_block_keys_split_coarse_ids_into_blocks():
    keys = kv_block_keys(np.array([5, 6]), id_tokens=8, block_size=4, tokens=14)
    assert keys.tolist() == [10, 11, 12]  # id 5 -> blocks 0,1; id 6 -> block 2 (3 is partial)
    coarse = kv_block_keys(np.array([5, 6, 7, 8]), id_tokens=4, block_size=8, tokens=16)
    assert coarse.tolist() == [6, 8]  # a block is keyed by the id of its last token


def shared_prompt_config(caching: bool, rate: float = 2.0, n: int = 200) -> SimConfig:
    return SimConfig.from_dict({
        "scheduler": {"enable_prefix_caching": caching},
        "workload": {"arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
                     "prompt": {"dist": "uniform", "low": 1100, "high": 3000},
                     "output": 50, "shared_prefix": {"tokens": 1000}},
        "record_steps": False})


def test_shared_system_prompt_hit_rate_matches_the_hand_count_and_ttft_falls():
    cached = simulate(shared_prompt_config(True))
    plain = simulate(shared_prompt_config(False))
    r = cached.requests
    # every request but the first finds the 62 full blocks (992 tokens) of the prompt
    expected = 992 * (len(r) - 1) / r["prompt_tokens"].sum()
    assert cached.summary["prefix_cache_hit_rate"] == pytest.approx(expected, rel=1e-9)
    assert (r["prefix_hit_tokens"].iloc[1:] == 992).all()
    assert plain.summary["prefix_cache_hit_rate"] == 0
    assert cached.summary["mean_ttft_ms"] < 0.8 * plain.summary["mean_ttft_ms"]


def test_a_preempted_request_finds_its_own_blocks_again():
    cfg = SimConfig.from_dict({
        "scheduler": {"num_gpu_blocks": 400, "reserve_full_isl": False},
        "workload": {"arrival": {"process": "poisson", "rate": 40}, "num_requests": 100,
                     "prompt": 1000, "output": 300, "shared_prefix": {"tokens": 16}},
        "check": True})
    result = simulate(cfg)
    r = result.requests
    again = r[r["preemptions"] > 0]
    assert len(again) and (again["prefix_hit_tokens"] > 16).all()


@pytest.mark.skipif(not (DATA / "traces" / "mooncake_conversation.jsonl").exists(),
                    reason="shared data not here")
def test_mooncake_prefix_ids_give_hits():
    cfg = SimConfig.from_dict({
        "model": "llama-3.1-8b", "workload": {"trace": {
            "path": str(DATA / "traces" / "mooncake_conversation.jsonl")},
            "num_requests": 300}, "record_steps": False})
    result = simulate(cfg)
    assert result.summary["prefix_cache_hit_rate"] > 0.01  # multi-turn reuse of its ids


def test_a_later_turn_reuses_the_whole_previous_conversation():
    cfg = SimConfig.from_dict({
        "workload": {"arrival": {"process": "poisson", "rate": 0.2}, "num_requests": 120,
                     "prompt": {"dist": "uniform", "low": 50, "high": 400}, "output": 60,
                     "sessions": {"turns": 4, "think_time_s": 30}},
        "record_steps": False, "check": True})
    result = simulate(cfg)
    table = build_requests(cfg.workload, cfg.seed)
    r = result.requests
    first_turn: dict[int, int] = {}
    checked = 0
    for i, ids in enumerate(table.prefix_ids):
        head = int(ids[0])
        prev = first_turn.get(head)
        # a later turn arriving after the previous one finished (open loop: it may not):
        # its prefix is the previous turn's whole conversation, cached since then
        if prev is not None and r.loc[prev, "finish_s"] <= r.loc[i, "arrival_s"]:
            conversation = table.prompt_tokens[prev] + table.output_tokens[prev]
            # (the last answer token is sampled, never computed: its KV is not cached)
            expected = min((conversation - 1) // 16, (table.prompt_tokens[i] - 1) // 16) * 16
            assert r.loc[i, "prefix_hit_tokens"] == expected
            checked += 1
        first_turn[head] = i
    assert checked > 20
    assert result.summary["prefix_cache_hit_rate"] > 0.5
