"""Disaggregated prefill/decode pools, heterogeneous replicas and routers."""

from __future__ import annotations

import numpy as np
import pytest

from infersim.errors import ConfigError
from infersim.models import get_model
from infersim.simulator import SimConfig, simulate


def disaggregated(link: str = "infiniband-ndr", layerwise: bool = False, **extra) -> SimConfig:
    # one request every 2 s, each done in well under that: replicas are idle on arrival
    return SimConfig.from_dict({
        "pools": [{"name": "prefill", "role": "prefill"},
                  {"name": "decode", "role": "decode", **extra}],
        "kv_transfer": {"link": link, "layerwise": layerwise},
        "workload": {"arrival": {"process": "constant", "rate": 0.5}, "num_requests": 120,
                     "output": {"dist": "uniform", "low": 1, "high": 40}},
        "check": True})


def test_each_request_transfers_exactly_its_prompt_kv():
    result = simulate(disaggregated())
    r = result.requests
    per_token = get_model("llama-3.1-8b").kv_bytes_per_token
    multi = r["output_tokens"] > 1
    assert np.allclose(r.loc[multi, "kv_transfer_bytes"], per_token * r.loc[multi, "prompt_tokens"])
    assert (r.loc[~multi, "kv_transfer_bytes"] == 0).all()
    assert result.summary["kv_transfer_bytes"] == pytest.approx(r["kv_transfer_bytes"].sum())
    pools = {p["name"]: p for p in result.summary["pools"]}
    assert pools["prefill"]["role"] == "prefill" and pools["decode"]["role"] == "decode"
    prefill_replica, decode_replica = 0, 1
    assert (r.loc[multi, "replica"] == decode_replica).all()
    steps = result.steps
    assert steps.loc[steps["replica"] == prefill_replica, "decode_tokens"].sum() == 0


def test_a_slow_link_adds_its_transfer_time_to_ttft():
    fast = simulate(disaggregated("infiniband-ndr"))
    slow = simulate(disaggregated("ethernet-100g"))
    grow = slow.requests["ttft_s"] - fast.requests["ttft_s"]
    extra = slow.requests["kv_transfer_s"] - fast.requests["kv_transfer_s"]
    multi = slow.requests["output_tokens"] > 1
    # with idle replicas nothing else changes: TTFT grows by the extra transfer time
    assert np.allclose(grow[multi], extra[multi], rtol=1e-6, atol=1e-9)
    assert extra[multi].mean() > 0.005
    overlapped = simulate(disaggregated("ethernet-100g", layerwise=True))
    assert overlapped.summary["mean_ttft_ms"] < slow.summary["mean_ttft_ms"]


def test_decode_pool_on_another_device():
    result = simulate(disaggregated(device="l40s", replicas=2))
    assert result.summary["completed"] == 120
    assert [p["device"] for p in result.summary["pools"]] == ["h100-sxm", "l40s"]


def test_heterogeneous_mixed_pools_share_the_traffic():
    cfg = SimConfig.from_dict({
        "pools": [{"name": "big", "device": "h100-sxm"}, {"name": "small", "device": "l40s"}],
        "router": "least_outstanding",
        "workload": {"arrival": {"process": "poisson", "rate": 20}, "num_requests": 300}})
    r = simulate(cfg).requests
    counts = r["replica"].value_counts()
    assert set(counts.index) == {0, 1} and counts[0] > counts[1]  # the H100 drains faster


def test_pool_roles_are_validated():
    with pytest.raises(ConfigError, match="prefill and decode"):
        SimConfig.from_dict({"pools": [{"name": "p", "role": "prefill"}]})
    with pytest.raises(ConfigError, match="unique"):
        SimConfig.from_dict({"pools": [{"name": "a"}, {"name": "a"}]})


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding", "least_kv",
                                    "power_of_two", "prefix_affinity"])
def test_every_router_spreads_requests_over_replicas(router):
    cfg = SimConfig.from_dict({
        "replicas": 3, "router": router,
        "workload": {"arrival": {"process": "poisson", "rate": 30}, "num_requests": 300,
                     "shared_prefix": {"tokens": 64, "count": 6}}})
    r = simulate(cfg).requests
    assert r["finished"].all() and r["replica"].nunique() == 3


def test_prefix_affinity_keeps_a_system_prompt_on_one_replica():
    cfg = SimConfig.from_dict({
        "replicas": 3, "router": "prefix_affinity",
        "workload": {"arrival": {"process": "poisson", "rate": 5}, "num_requests": 200,
                     "shared_prefix": {"tokens": 256, "count": 3}}})
    affinity = simulate(cfg)
    spread = simulate(cfg.model_copy(update={"router": "round_robin"}))
    assert (affinity.summary["prefix_cache_hit_rate"]
            > spread.summary["prefix_cache_hit_rate"])
