"""Generated multi-turn sessions: arrivals, growing prompts and chained prefix ids."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from infersim.errors import ConfigError
from infersim.workloads import WorkloadConfig, build_requests


def config(**sessions) -> WorkloadConfig:
    return WorkloadConfig.from_dict({
        "arrival": {"process": "poisson", "rate": 1.0}, "num_requests": 400,
        "prompt": {"dist": "uniform", "low": 20, "high": 300},
        "output": {"dist": "uniform", "low": 5, "high": 200},
        "sessions": {"turns": 4, "think_time_s": 15, **sessions}})


def test_each_turn_extends_the_previous_conversation():
    t = build_requests(config(), seed=3)
    assert len(t) == 400 and np.all(np.diff(t.arrival_s) >= 0)
    assert t.prefix_covers_output and t.prefix_block_tokens == 16
    by_first_id: dict[int, list[int]] = {}
    for i, ids in enumerate(t.prefix_ids):
        assert len(ids) == -(-(t.prompt_tokens[i] + t.output_tokens[i]) // 16)
        by_first_id.setdefault(int(ids[0]), []).append(i)
    chains = [rows for rows in by_first_id.values() if len(rows) > 1]
    assert chains, "some sessions have several turns"
    for rows in chains:
        for a, b in pairwise(rows):
            conversation = t.prompt_tokens[a] + t.output_tokens[a]
            assert t.prompt_tokens[b] > conversation  # whole conversation + a follow-up
            full = conversation // 16
            assert np.array_equal(t.prefix_ids[a][:full], t.prefix_ids[b][:full])
            assert t.arrival_s[b] > t.arrival_s[a]


def test_mean_turns_and_determinism():
    t = build_requests(config(turns=3), seed=1)
    sessions = len({int(ids[0]) for ids in t.prefix_ids})
    assert 400 / sessions == pytest.approx(3, rel=0.15)
    again = build_requests(config(turns=3), seed=1)
    assert np.array_equal(t.arrival_s, again.arrival_s)
    assert all(np.array_equal(a, b) for a, b in zip(t.prefix_ids, again.prefix_ids, strict=True))


def test_context_limit_ends_a_session():
    t = build_requests(config(turns=50, max_context=600), seed=0)
    assert (t.prompt_tokens + 1 <= 600).all()


def test_sessions_need_an_arrival_process():
    with pytest.raises(ConfigError, match="sessions"):
        WorkloadConfig.from_dict({"trace": {"path": "x.csv"},
                                  "sessions": {"turns": 2, "think_time_s": 1}})
