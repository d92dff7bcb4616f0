"""End-to-end behaviour of simulate(): determinism, fast-forward, replicas, rejection."""

from __future__ import annotations

import numpy as np
import pytest

from infersim.errors import ConfigError
from infersim.simulator import SimConfig, simulate
from infersim.simulator.output import write_result
from infersim.workloads import RequestTable


def small(**overrides) -> SimConfig:
    data = {"workload": {"arrival": {"process": "poisson", "rate": 20.0}, "num_requests": 300},
            "seed": 3}
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return SimConfig.from_dict(data)


def test_same_config_and_seed_give_byte_identical_files(tmp_path):
    cfg = small()
    write_result(simulate(cfg), tmp_path / "a", plot=False)
    write_result(simulate(cfg), tmp_path / "b", plot=False)
    for name in ("summary.json", "requests.csv", "steps.csv", "config.yaml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = simulate(small(seed=4))
    assert other.summary != simulate(cfg).summary


def test_fast_forward_gives_the_same_results_as_stepping():
    # a tight KV cache so runs end on block exhaustion and preemptions happen too
    fast = simulate(small(scheduler__num_gpu_blocks=900, workload__arrival__rate=30.0))
    slow = simulate(small(scheduler__num_gpu_blocks=900, workload__arrival__rate=30.0,
                          fast_forward=False))
    assert fast.summary["num_preemptions"] > 0
    for col in ("first_scheduled_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(fast.requests[col], slow.requests[col], rtol=1e-9)
    assert fast.requests["preemptions"].tolist() == slow.requests["preemptions"].tolist()
    assert len(fast.steps) == len(slow.steps)
    for col in ("num_seqs", "decode_tokens", "prefill_tokens", "kv_blocks_used",
                "decode_context"):
        assert fast.steps[col].tolist() == slow.steps[col].tolist(), col
    np.testing.assert_allclose(fast.steps["duration_s"], slow.steps["duration_s"], rtol=1e-9)
    for key in ("mean_itl_ms", "p99_itl_ms", "mean_tpot_ms", "p99_ttft_ms"):
        assert fast.summary[key] == pytest.approx(slow.summary[key], rel=1e-9)


def test_every_request_finishes_with_causal_timestamps():
    result = simulate(small(check=True))
    r = result.requests
    assert r["finished"].all() and (r["generated_tokens"] == r["output_tokens"]).all()
    assert (r["arrival_s"] <= r["first_scheduled_s"]).all()
    assert (r["first_scheduled_s"] < r["first_token_s"]).all()
    assert (r["first_token_s"] <= r["finish_s"]).all()
    steps = result.steps
    assert (np.diff(steps["start_s"]) >= 0).all()
    assert np.allclose(steps["start_s"][1:], (steps["start_s"] + steps["duration_s"])[:-1])


def test_a_request_that_can_never_fit_is_rejected_not_hung():
    cfg = small(scheduler__num_gpu_blocks=10, workload__num_requests=5,
                workload__prompt=100, workload__output=100)  # 200 tokens > 160 of cache
    result = simulate(cfg)
    assert result.summary["rejected"] == 5 and result.summary["completed"] == 0


def test_least_outstanding_balances_replicas_better_than_round_robin():
    requests = RequestTable(np.arange(40) * 0.001, np.where(np.arange(40) % 2, 4000, 50),
                            np.where(np.arange(40) % 2, 400, 5))
    loads = {}
    for router in ("round_robin", "least_outstanding"):
        result = simulate(small(replicas=2, router=router), requests=requests)
        per = result.requests.groupby("replica")["output_tokens"].sum()
        loads[router] = per.max() / per.min()
        assert set(result.requests["replica"]) == {0, 1}
    assert loads["round_robin"] > 10  # every long request lands on replica 1
    assert loads["least_outstanding"] < loads["round_robin"]


def test_goodput_counts_only_requests_within_every_slo():
    result = simulate(small(slo={"ttft_ms": 1e9, "tpot_ms": 1e9}))
    assert result.summary["goodput"] == pytest.approx(result.summary["request_throughput"])
    strict = simulate(small(slo={"ttft_ms": 1e-6}))
    assert strict.summary["goodput"] == 0.0 and strict.summary["slo_attainment"] == 0.0


def test_config_errors_name_the_key_path_and_value():
    with pytest.raises(ConfigError, match=r"scheduler.max_num_sqs.*unknown key"):
        SimConfig.from_dict({"scheduler": {"max_num_sqs": 4}})
    with pytest.raises(ConfigError, match=r"workload: arrival.rate|workload.arrival.rate"):
        SimConfig.from_dict({"workload": {"arrival": {"process": "poisson", "rate": -1}}})
    with pytest.raises(ConfigError, match=r"router.*least_outstanding"):
        SimConfig.from_dict({"router": "fastest"})


def test_set_overrides_apply_on_top_of_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("workload:\n  arrival: {process: gamma, rate: 2, cv: 3}\n")
    cfg = SimConfig.load(path, ["workload.arrival.rate=7", "scheduler.max_num_seqs=8",
                                "slo.ttft_ms=null"])
    assert cfg.workload.arrival.rate == 7 and cfg.workload.arrival.cv == 3
    assert cfg.scheduler.max_num_seqs == 8 and cfg.slo.ttft_ms is None
    with pytest.raises(ConfigError, match="--set"):
        SimConfig.load(None, ["no-equals-sign"])
    with pytest.raises(ConfigError, match=r"scheduler\.max_num_seqs"):
        SimConfig.load(None, ["scheduler.max_num_seqs=-3"])


def test_a_model_that_does_not_fit_is_a_config_error():
    with pytest.raises(ConfigError, match="does not fit"):
        simulate(SimConfig.from_dict({"model": "llama-3.1-70b", "device": "h100-sxm"}))
