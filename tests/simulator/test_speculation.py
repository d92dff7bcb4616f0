"""Speculative decoding in the simulator: the closed form, the emitted-token draws, KV
lookahead, plain-run equivalence, drafters, trees and the length policies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from infersim.costmodels import BatchShape, CostModel, Placement
from infersim.errors import ConfigError
from infersim.hardware import get_device
from infersim.models import get_model
from infersim.optimizer.trees import best_tree, expected_tokens_chain
from infersim.simulator import SimConfig, simulate
from infersim.simulator.engine import build_cost_model
from infersim.simulator.output import write_result
from infersim.simulator.request import Request
from infersim.simulator.speculation import (
    AcceptanceConfig,
    Speculation,
    SpeculationConfig,
    compare,
)
from infersim.simulator.speculation.acceptance import make_acceptance
from infersim.workloads import RequestTable

DRAFT = {"method": "draft_model", "draft_model": "llama-3.2-1b"}


def config(speculation: dict | None = None, **top) -> SimConfig:
    data = {"workload": {"arrival": {"process": "poisson", "rate": 20.0}, "num_requests": 150},
            "seed": 3, **top}
    if speculation is not None:
        data["speculation"] = speculation
    return SimConfig.from_dict(data)


def one_request(output: int, prompt: int = 128) -> RequestTable:
    return RequestTable(np.zeros(1), np.array([prompt]), np.array([output]))


# --- the closed form ---------------------------------------------------------------------
@pytest.mark.parametrize("a", [0.6, 0.8, 0.9])
@pytest.mark.parametrize("k", [1, 4])
def test_single_sequence_speedup_matches_the_closed_form(a, k):
    """One sequence, no load, fixed K: TPOT speedup = (1 - a^(K+1)) / ((1 - a)(K c + 1)),
    c = draft step / target step from the same cost models (at the mean context)."""
    output, prompt = 16000, 128
    cfg = config({**DRAFT, "k": k, "acceptance": a})
    result = compare(cfg, one_request(output, prompt))
    ctx = prompt + output // 2
    target = build_cost_model(cfg)
    draft = CostModel(get_model("llama-3.2-1b"), Placement(get_device("h100-sxm")))
    c = (draft.step_time(BatchShape.uniform(1, 1, ctx))
         / target.step_time(BatchShape.uniform(1, 1, ctx)))
    formula = (1 - a ** (k + 1)) / ((1 - a) * (k * c + 1))
    assert result.tpot_speedup == pytest.approx(formula, rel=0.02)
    # with the realised mean N in place of E[N], only the cost model's verify premium is left
    realised = result.speculative["speculation"]["mean_accepted_length"]
    assert result.tpot_speedup == pytest.approx(realised / (k * c + 1), rel=0.01)


# --- sampling the emitted tokens ---------------------------------------------------------
def _draws(cfg: AcceptanceConfig, k: int, n: int, seed: int = 0, k_max: int = 8) -> np.ndarray:
    model = make_acceptance(cfg, k_max, seed)
    req = Request(0, 0.0, 10, 10)
    return np.array([model.draw(req, k) for _ in range(n)])


@pytest.mark.parametrize("a, k", [(0.5, 3), (0.8, 4), (0.95, 8), (0.0, 2), (1.0, 5)])
def test_rate_draws_have_the_closed_form_mean(a, k):
    n = _draws(AcceptanceConfig(model="rate", rate=a), k, 40000)
    assert n.min() >= 1 and n.max() <= k + 1
    expected = expected_tokens_chain(a, k)
    assert n.mean() == pytest.approx(expected, abs=4 * n.std() / np.sqrt(len(n)) + 1e-9)


def test_vector_draws_have_mean_one_plus_the_sum_and_the_right_pmf():
    vector = [0.7617, 0.6158, 0.5125, 0.4243, 0.3640, 0.3094, 0.2722, 0.2365]  # vLLM MTP
    n = _draws(AcceptanceConfig(vector=vector), 8, 60000)
    assert n.mean() == pytest.approx(4.496, rel=0.01)
    a = np.concatenate(([1.0], vector, [0.0]))
    pmf = np.bincount(n, minlength=10)[1:] / len(n)
    np.testing.assert_allclose(pmf, a[:-1] - a[1:], atol=0.01)
    # a shorter K truncates the vector: E[N] = 1 + sum of its first K
    n3 = _draws(AcceptanceConfig(vector=vector), 3, 40000)
    assert n3.mean() == pytest.approx(1 + sum(vector[:3]), rel=0.015)


def test_draws_are_seeded_and_deterministic():
    cfg = AcceptanceConfig(rate=0.7)
    assert (_draws(cfg, 4, 500, seed=1) == _draws(cfg, 4, 500, seed=1)).all()
    assert (_draws(cfg, 4, 500, seed=1) != _draws(cfg, 4, 500, seed=2)).any()


def test_classes_are_assigned_by_seed_and_request_id_with_their_shares():
    cfg = AcceptanceConfig(model="classes", classes=[
        {"name": "code", "share": 1, "rate": 0.9}, {"name": "chat", "share": 3, "rate": 0.4}])
    m1, m2 = make_acceptance(cfg, 4, 5), make_acceptance(cfg, 4, 5)
    reqs = [Request(i, 0.0, 1, 1) for i in range(4000)]
    forward = [m1.class_of(r) for r in reqs]
    backward = [m2.class_of(r) for r in reversed(reqs)][::-1]
    assert forward == backward  # independent of the order requests are seen in
    assert np.mean(forward) == pytest.approx(0.75, abs=0.03)
    np.testing.assert_allclose(m1.vector(0), 0.9 ** np.arange(1, 5))


def test_replay_follows_the_record_and_predicts_its_empirical_vector():
    counts = [0, 3, 1, 2, 3, 0, 1, 3]
    model = make_acceptance(AcceptanceConfig(model="replay", counts=counts), 3, 0)
    req = Request(0, 0.0, 1, 1)
    start = model._pos  # seeded
    first = [model.draw(req, 3) - 1 for _ in range(len(counts))]
    assert first == (counts * 2)[start:start + len(counts)]  # in order, cyclically
    np.testing.assert_allclose(model.vector(0), [6 / 8, 4 / 8, 3 / 8])
    assert model.draw(req, 1) <= 2  # K below the recorded count caps the tokens
    with pytest.raises(ConfigError, match=r"speculation\.k"):
        make_acceptance(AcceptanceConfig(model="replay", counts=counts), 5, 0)


# --- the simulator -----------------------------------------------------------------------
def test_method_none_and_fixed_k0_are_exactly_the_plain_run(tmp_path):
    plain = config()
    for i, cfg in enumerate((config({"method": "none"}), config({**DRAFT, "k": 0,
                                                                  "acceptance": 0.8}))):
        write_result(simulate(plain), tmp_path / f"a{i}", plot=False)
        write_result(simulate(cfg), tmp_path / f"b{i}", plot=False)
        for name in ("summary.json", "requests.csv", "steps.csv"):
            assert (tmp_path / f"a{i}" / name).read_bytes() == \
                (tmp_path / f"b{i}" / name).read_bytes()
    assert "speculation" not in plain.to_yaml()


def test_a_speculative_run_is_deterministic_and_conserves_requests(tmp_path):
    cfg = config({**DRAFT, "k": 4, "acceptance": 0.7}, check=True)
    write_result(simulate(cfg), tmp_path / "a", plot=False)
    result = simulate(cfg)
    write_result(result, tmp_path / "b", plot=False)
    for name in ("summary.json", "requests.csv", "steps.csv", "config.yaml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    r = result.requests
    assert r["finished"].all() and (r["generated_tokens"] == r["output_tokens"]).all()
    steps = result.steps
    s = result.summary["speculation"]
    assert steps["spec_tokens"].sum() == s["proposed_tokens"]
    assert steps["accepted_tokens"].sum() == s["accepted_tokens"]
    assert s["acceptance_rate"] == pytest.approx(s["accepted_tokens"] / s["proposed_tokens"])
    assert s["draft_share"] + s["verify_share"] == pytest.approx(1.0)  # same device: serial
    assert SimConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


def test_the_kv_cache_reserves_the_lookahead_and_never_overruns(make_v1, new_request):
    spec = Speculation(SpeculationConfig(**DRAFT, k=4, acceptance=0.6), seed=0)
    sched = make_v1(blocks=100, block_size=4)
    sched.spec = spec.speculator(build_cost_model(SimConfig()))
    req = new_request(0, 7, 50)
    sched.add(req)
    plan = sched.schedule(0.0)
    sched.complete(plan, 1.0, [])
    assert req.num_output == 1 and req.num_computed == 7
    plan = sched.schedule(1.0)
    assert plan.scheduled == [(req, 5)] and plan.spec_tokens == 4
    assert req.blocks == sched.kv.blocks_for(7 + 5)  # the 4 lookahead slots are held
    assert plan.shape.sampled == 5 and plan.num_tokens == 5
    sched.complete(plan, 2.0, itl := [])
    n = req.num_output - 1
    assert 1 <= n <= 5 and req.num_computed == 7 + n and len(itl) == 1
    # a tight cache under load: preemptions happen, every invariant holds, all finish
    result = simulate(config({**DRAFT, "k": 6, "acceptance": 0.8}, check=True,
                             scheduler={"num_gpu_blocks": 700}))
    assert result.summary["num_preemptions"] > 0
    assert (result.requests["generated_tokens"] == result.requests["output_tokens"]).all()


def test_a_request_never_emits_past_its_length():
    result = simulate(config({**DRAFT, "k": 8, "acceptance": 1.0},
                             workload={"arrival": {"process": "poisson", "rate": 5.0},
                                       "num_requests": 60,
                                       "output": {"dist": "uniform", "low": 1, "high": 12}}))
    r = result.requests
    assert (r["generated_tokens"] == r["output_tokens"]).all()
    s = result.summary["speculation"]
    assert s["acceptance_rate"] == 1.0


@pytest.mark.parametrize("name", ["vllm_v0", "sarathi", "orca"])
def test_the_scheduler_family_speculates_with_invariants_checked(name):
    result = simulate(config({**DRAFT, "k": 3, "acceptance": 0.7}, check=True,
                             scheduler={"name": name}))
    r = result.requests
    assert (r["finished"] | r["rejected"]).all() and r["finished"].sum() > 140
    assert (r["generated_tokens"] == r["output_tokens"])[r["finished"]].all()
    assert result.summary["speculation"]["verifies"] > 0


def test_static_batching_refuses_speculation():
    with pytest.raises(ConfigError, match="iteration-level"):
        simulate(config({**DRAFT, "acceptance": 0.7}, scheduler={"name": "static"}))


def test_a_same_device_drafter_takes_kv_room_and_another_device_does_not():
    plain = simulate(config()).summary["kv_blocks_total"]
    same = simulate(config({**DRAFT, "acceptance": 0.7})).summary["kv_blocks_total"]
    other = simulate(config({**DRAFT, "acceptance": 0.7, "draft_device": "h100-sxm"})
                     ).summary["kv_blocks_total"]
    assert same < plain == other


def test_another_device_is_never_slower_than_the_same_device():
    for rate in (0.5, 20.0):
        base = {**DRAFT, "k": 4, "acceptance": 0.8}
        wl = {"arrival": {"process": "poisson", "rate": rate}, "num_requests": 150}
        same = simulate(config(base, workload=wl, scheduler={"num_gpu_blocks": 20000}))
        other = simulate(config({**base, "draft_device": "h100-sxm"}, workload=wl,
                                scheduler={"num_gpu_blocks": 20000}))
        assert other.summary["mean_tpot_ms"] <= same.summary["mean_tpot_ms"] * 1.01
    assert other.summary["speculation"]["overlapped_steps"] > 0


def test_heads_and_ngram_cost_less_than_a_draft_model():
    shares = {}
    for method, extra in (("draft_model", {"draft_model": "llama-3.2-1b"}),
                          ("heads", {"head_layers": 1}), ("ngram", {})):
        result = simulate(config({"method": method, "k": 3, "acceptance": 0.7, **extra}))
        shares[method] = result.summary["speculation"]["draft_share"]
    assert shares["ngram"] < 0.02 < shares["heads"] < shares["draft_model"]


def test_tree_verify_computes_q_equal_to_the_tree_size():
    accept = [0.55, 0.15, 0.07, 0.04, 0.02]
    cfg = config({"method": "heads", "tree": {"accept": accept, "nodes": 8, "depth": 6}})
    result = simulate(cfg, one_request(2000))
    steps = result.steps
    spec = steps[(steps["spec_seqs"] == 1) & (steps["spec_tokens"] == 7)]
    assert len(spec) > 0.9 * (steps["spec_seqs"] == 1).sum()
    assert (spec["prefill_tokens"] == 8).all() and (spec["sampled"] == 8).all()
    tree = best_tree(accept, 8, 6)
    s = result.summary["speculation"]
    assert s["mean_accepted_length"] == pytest.approx(tree.score(accept), rel=0.05)


# --- length policies ---------------------------------------------------------------------
def _batch(n: int, context: int, output: int = 500) -> SimpleNamespace:
    running = []
    for i in range(n):
        r = Request(i, 0.0, context, output)
        r.num_output, r.num_computed = 1, context
        running.append(r)
    return SimpleNamespace(running=running, limits=SimpleNamespace(
        max_num_batched_tokens=8192))


def _load_aware(**spec) -> object:
    cfg = SpeculationConfig(**{"k": 6, "policy": "load_aware", **spec})
    return Speculation(cfg, 0).speculator(build_cost_model(SimConfig()))


def test_load_aware_drafts_at_batch_one_and_stops_when_drafting_cannot_pay():
    good = _load_aware(**DRAFT, acceptance=0.8)
    good.begin(_batch(1, 1000))
    assert good.policy.choice > 0
    slow = _load_aware(**DRAFT, acceptance=0.5, draft_device="epyc-9654-2s")
    slow.begin(_batch(256, 1000))
    assert slow.policy.choice == 0
    low = _load_aware(**DRAFT, acceptance=0.3)
    low.begin(_batch(256, 1000))
    assert low.policy.choice == 0
    # in a run, a single request at a time keeps drafting
    one = simulate(config({**DRAFT, "k": 6, "acceptance": 0.8, "policy": "load_aware"}),
                   one_request(300))
    assert one.summary["speculation"]["mean_k"] > 2


def test_threshold_stops_earlier_for_a_low_acceptance_class():
    cfg = {"k": 6, "policy": {"name": "threshold", "threshold": 0.6}, "method": "ngram",
           "acceptance": {"model": "classes", "classes": [
               {"name": "code", "share": 1, "rate": 0.9},
               {"name": "chat", "share": 1, "rate": 0.4},
               {"name": "tail", "share": 1, "vector": [0.8, 0.6, 0.3, 0.1]}]}}
    spec = Speculation(SpeculationConfig(**cfg), 0).speculator(build_cost_model(SimConfig()))
    assert spec.policy._k == [6, 0, 2]  # 0.6/0.8 = 0.75 passes, 0.3/0.6 = 0.5 stops
    result = simulate(config(cfg))
    classes = result.summary["speculation"]["classes"]
    assert classes["chat"]["verifies"] == 0 < classes["tail"]["verifies"]
    assert classes["code"]["mean_accepted_length"] > classes["tail"]["mean_accepted_length"]


# --- configuration -----------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ({"method": "eagle"}, "allowed: none, draft_model, heads, ngram"),
    ({"method": "draft_model", "acceptance": 0.7}, "needs draft_model"),
    ({"method": "heads"}, "needs acceptance"),
    ({"method": "ngram", "acceptance": 1.5}, "acceptance"),
    ({"method": "heads", "acceptance": [0.5, 0.7]}, "cannot increase"),
    ({"method": "ngram", "tree": {"accept": [0.5]}}, "model drafter"),
    ({"method": "heads", "acceptance": 0.7, "policy": "greedy"}, "load_aware"),
    ({"method": "heads", "acceptance": 0.7, "k": -1}, "speculation.k"),
])
def test_bad_speculation_configs_name_the_problem(spec, expected):
    with pytest.raises(ConfigError, match=expected):
        config(spec)


def test_disaggregated_decode_pools_speculate_and_prefill_pools_do_not():
    cfg = config({**DRAFT, "k": 3, "acceptance": 0.7}, check=True,
                 pools=[{"name": "prefill", "role": "prefill"},
                        {"name": "decode", "role": "decode", "device": "h200"}])
    result = simulate(cfg)
    assert result.requests["finished"].all()
    steps = result.steps
    prefill_replica = steps["replica"] == 0
    assert steps[prefill_replica]["spec_seqs"].sum() == 0
    assert steps[~prefill_replica]["spec_seqs"].sum() > 0


def test_the_run_command_prints_acceptance_and_time_shares():
    from typer.testing import CliRunner

    from infersim.cli import app

    result = CliRunner().invoke(app, [
        "run", "--no-progress", "--set", "workload.num_requests=30",
        "--set", "speculation.method=heads", "--set", "speculation.acceptance=0.7"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "acceptance rate" in text and "mean accepted length" in text
    assert "of busy time" in text
    plain = CliRunner().invoke(app, ["run", "--no-progress", "--set",
                                     "workload.num_requests=30"])
    assert "speculation" not in plain.stdout
