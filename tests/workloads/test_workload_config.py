"""WorkloadConfig validation and build_requests: determinism, stream independence."""

import numpy as np
import pytest
import yaml

from infersim.errors import ConfigError
from infersim.workloads import CHAT_DEFAULTS, WorkloadConfig, build_requests

POISSON = {"arrival": {"process": "poisson", "rate": 5.0}, "num_requests": 500}


def test_defaults_are_chat_lengths():
    cfg = WorkloadConfig.from_dict({"arrival": {"process": "poisson", "rate": 5.0}})
    assert cfg.prompt is None
    assert cfg.prompt_dist.model_dump(exclude_none=True) == CHAT_DEFAULTS["prompt"]
    assert cfg.output_dist.model_dump(exclude_none=True) == CHAT_DEFAULTS["output"]
    r = build_requests(cfg, seed=0)
    assert len(r) == 2000
    assert r.prompt_tokens.max() <= 8192 and r.output_tokens.max() <= 1000
    assert r.prompt_tokens.mean() == pytest.approx(1155, rel=0.08)


def test_same_seed_identical_other_seed_differs():
    cfg = WorkloadConfig.from_dict(POISSON)
    a, b, c = build_requests(cfg, 7), build_requests(cfg, 7), build_requests(cfg, 8)
    for col in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col))
        assert not np.array_equal(getattr(a, col), getattr(c, col))


def test_streams_are_independent():
    base = build_requests(WorkloadConfig.from_dict(POISSON), 3)
    other = build_requests(WorkloadConfig.from_dict(
        {**POISSON, "prompt": {"dist": "uniform", "low": 1, "high": 9}}), 3)
    np.testing.assert_array_equal(base.arrival_s, other.arrival_s)
    np.testing.assert_array_equal(base.output_tokens, other.output_tokens)
    assert not np.array_equal(base.prompt_tokens, other.prompt_tokens)
    faster = build_requests(WorkloadConfig.from_dict(
        {**POISSON, "arrival": {"process": "gamma", "rate": 9.0, "cv": 3.0}}), 3)
    np.testing.assert_array_equal(base.prompt_tokens, faster.prompt_tokens)


@pytest.mark.parametrize(("data", "field"), [
    ({**POISSON, "bogus": 1}, "workload: bogus"),
    ({"arrival": {"process": "poisson", "rate": 5, "burst": 2}}, "workload: arrival.burst"),
    ({"arrival": {"process": "poisson", "rate": -1}}, "workload: arrival.rate"),
    ({"arrival": {"process": "gamma", "rate": 1, "cv": 0}}, "workload: arrival.cv"),
    ({"arrival": {"process": "gamma", "rate": 1, "cv": -2}}, "workload: arrival.cv"),
    ({"arrival": {"process": "poison", "rate": 1}}, "workload: arrival"),
    ({**POISSON, "prompt": {"dist": "lognormal", "mean": 9, "cv": 1, "max": 0}},
     "workload: prompt.max"),
    ({**POISSON, "num_requests": 0}, "workload: num_requests"),
    ({"trace": {"path": "t.csv", "rate_scale": 0}}, "workload: trace.rate_scale"),
    ({"trace": {"path": "t.csv", "start_s": 5, "end_s": 5}}, "workload: trace.end_s"),
    ({"trace": {"path": "t.csv"}, "prompt": 5}, "workload"),
    ({}, "workload"),
])
def test_config_errors_name_the_key(data, field):
    with pytest.raises(ConfigError) as err:
        WorkloadConfig.from_dict(data)
    assert err.value.field == field


def test_unknown_process_lists_known_names():
    with pytest.raises(ConfigError, match="poisson"):
        WorkloadConfig.from_dict({"arrival": {"process": "poison", "rate": 1}})


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                    + "".join(f"{t / 2},{10 * t + 1},{t + 1}\n" for t in range(20)))
    return path


def test_trace_replay_from_yaml(tmp_path, trace_file):
    spec = {"trace": {"path": "t.csv", "rate_scale": 2.0, "end_s": 5.0}, "num_requests": 6}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(spec))
    r = build_requests(WorkloadConfig.from_yaml(tmp_path / "w.yaml"), seed=0)
    np.testing.assert_allclose(r.arrival_s, np.arange(6) / 4)
    assert r.prompt_tokens.tolist() == [1, 11, 21, 31, 41, 51]


def test_trace_arrivals_with_synthetic_and_empirical_lengths(trace_file):
    cfg = WorkloadConfig.from_dict({
        "trace": {"path": str(trace_file), "use_lengths": False},
        "prompt": {"dist": "empirical", "path": str(trace_file), "column": "prompt"},
        "output": 7})
    r = build_requests(cfg, seed=1)
    np.testing.assert_allclose(r.arrival_s, np.arange(20) / 2)
    assert set(r.prompt_tokens.tolist()) <= {10 * t + 1 for t in range(20)}
    assert (r.output_tokens == 7).all()


@pytest.mark.parametrize("data", [POISSON, {"trace": {"path": "t.csv"}},
                                  {"trace": {"path": "t.csv", "use_lengths": False},
                                   "output": {"dist": "uniform", "low": 1, "high": 3}}])
def test_dump_round_trip(data):
    cfg = WorkloadConfig.from_dict(data)
    text = yaml.safe_dump(cfg.model_dump(mode="json"))
    assert WorkloadConfig.from_dict(yaml.safe_load(text)) == cfg


def test_bad_seed():
    with pytest.raises(ConfigError, match="seed"):
        build_requests(WorkloadConfig.from_dict(POISSON), seed=-1)
