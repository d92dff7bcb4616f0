"""The reference traces in ../shared/data (skipped when that folder is absent)."""

import time
from pathlib import Path

import numpy as np
import pytest

from infersim.workloads import load_trace, read_trace

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared reference data not present")


def test_azure_conv():
    start = time.perf_counter()
    r = read_trace(DATA / "traces" / "azure2023_conv.csv")
    assert time.perf_counter() - start < 1.0
    assert len(r) == 19_366
    assert r.prompt_tokens.mean() == pytest.approx(1154.7, abs=0.05)
    assert r.output_tokens.mean() == pytest.approx(211.1, abs=0.05)
    assert r.arrival_s[0] == 0.0 and 3400 < r.duration_s < 3600  # about one hour


def test_azure_code():
    trace = load_trace(DATA / "traces" / "azure2023_code.csv")
    assert trace.format == "splitwise" and len(trace.requests) == 8_819


def test_vllm_e2e_requests():
    r = read_trace(DATA / "e2e" / "RTX4090-Llama-3.1-8B" / "vllm" / "requests.jsonl")
    assert len(r) == 300
    assert r.duration_s == pytest.approx(29.1, abs=0.1)


def test_mooncake_conversation():
    trace = load_trace(DATA / "traces" / "mooncake_conversation.jsonl")
    r = trace.requests
    assert trace.format == "mooncake" and len(r) == 12_031
    assert r.prompt_tokens.mean() == pytest.approx(12_035, abs=1)
    assert r.output_tokens.mean() == pytest.approx(343, abs=1)
    assert len(trace.prefix_hashes) == 12_031
    # a prompt of L tokens spans ceil(L / 512) prefix blocks
    blocks = np.array([len(h) for h in trace.prefix_hashes])
    assert np.mean(blocks == -(-r.prompt_tokens // 512)) > 0.99


def test_rate_scale_on_real_trace():
    path = DATA / "traces" / "azure2023_conv.csv"
    full = read_trace(path, end_s=600.0)
    fast = read_trace(path, end_s=600.0, rate_scale=2.0)
    assert len(fast) == len(full) and fast.duration_s == pytest.approx(full.duration_s / 2)
