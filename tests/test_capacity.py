"""Capacity search: the search on known pass/fail functions, SLO measurement, prices,
determinism (serial = parallel), trace rate scaling and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from infersim.capacity import (
    find_capacity,
    fleet_price,
    measure,
    parse_slo,
    rate_knob,
    search_max_rate,
    usd_per_million,
)
from infersim.cli import app
from infersim.errors import ConfigError
from infersim.hardware import get_device
from infersim.simulator import SimConfig

runner = CliRunner()
SMALL = ["workload.num_requests=150", "model=llama-3.2-1b"]
SLO = {"ttft_ms": 200.0, "tpot_ms": 20.0}


def threshold(t: float):
    """A monotone pass/fail function passing at rates <= t, recording its calls."""
    calls: list[list[float]] = []

    def evaluate(round_no: int, rates: list[float]) -> list[bool]:
        calls.append(list(rates))
        return [r <= t for r in rates]

    return evaluate, calls


# --- the search ---------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.37, 37.3, 5.0, 1234.5])
@pytest.mark.parametrize("per_round", [1, 2, 3, 4])
@pytest.mark.parametrize("start", [1.0, 5.0, 400.0])
def test_search_finds_a_known_threshold(t, per_round, start):
    evaluate, calls = threshold(t)
    s = search_max_rate(evaluate, start, tolerance=0.02, per_round=per_round)
    assert s.converged and not s.non_monotone and s.note == ""
    assert s.lo <= t < s.hi and s.hi / s.lo - 1 <= 0.02
    assert all(len(c) <= per_round for c in calls) and s.rounds == len(calls)
    assert s.results == {r: r <= t for c in calls for r in c}


def test_more_probes_per_round_need_fewer_rounds():
    rounds = [search_max_rate(threshold(37.3)[0], 1.0, tolerance=0.001, per_round=k).rounds
              for k in (1, 2, 4, 8)]
    assert rounds == sorted(rounds, reverse=True) and rounds[-1] < rounds[0] / 2


def test_tighter_tolerance_gives_a_tighter_bracket():
    for tol in (0.1, 0.01, 0.001):
        s = search_max_rate(threshold(37.3)[0], 3.0, tolerance=tol, per_round=2)
        assert s.lo <= 37.3 < s.hi and s.hi / s.lo - 1 <= tol


def test_non_monotone_probes_are_reported_and_do_not_derail_the_search():
    # fails in a dip [10, 12) below the real threshold 30
    def evaluate(round_no, rates):
        return [r <= 30 and not (10 <= r < 12) for r in rates]

    s = search_max_rate(evaluate, 11.0, tolerance=0.02, per_round=2)
    # the first round probes 11 (fails) and 22 (passes): a contradiction, reported with
    # the lowest failing rate; the bracket stays below that failure (at the dip's edge)
    assert [p for p, _ in s.non_monotone] == [22.0]
    assert all(10 <= f < 12 for _, f in s.non_monotone)
    assert s.converged and s.lo < 10 <= s.hi <= s.lo * 1.02


def test_no_failure_and_no_success_are_reported():
    always = search_max_rate(lambda i, rates: [True] * len(rates), 1.0, per_round=3)
    assert math.isinf(always.hi) and not always.converged
    assert "no failing rate" in always.note and always.lo >= 2**20
    capped = search_max_rate(lambda i, rates: [True] * len(rates), 1.0, max_rounds=4)
    assert capped.rounds == 4 and "4 rounds" in capped.note
    never = search_max_rate(lambda i, rates: [False] * len(rates), 1.0, per_round=4)
    assert never.lo == 0 and not never.converged and "capacity 0" in never.note


@pytest.mark.parametrize("kwargs", [{"tolerance": 0}, {"per_round": 0}])
def test_search_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        search_max_rate(threshold(1.0)[0], 1.0, **kwargs)


# --- SLOs and measurement -----------------------------------------------------------------
def test_parse_slo():
    assert parse_slo("ttft_ms=500,tpot_ms=50") == {"ttft_ms": 500.0, "tpot_ms": 50.0}
    assert parse_slo(" e2el_ms = 2e3 ") == {"e2el_ms": 2000.0}


@pytest.mark.parametrize("text", ["ttft=500", "ttft_ms", "ttft_ms=fast", "ttft_ms=-1",
                                  "ttft_ms=1,ttft_ms=2", "", "ttft_ms=500;tpot_ms=50"])
def test_bad_slo_names_the_option_and_the_keys(text):
    with pytest.raises(ConfigError) as info:
        parse_slo(text)
    message = str(info.value)
    assert message.startswith("--slo") and "ttft_ms, tpot_ms, e2el_ms" in message


def frame(ttft_ms, tpot_ms, finished=None, output=None) -> pd.DataFrame:
    n = len(ttft_ms)
    finished = np.ones(n, bool) if finished is None else np.asarray(finished)
    return pd.DataFrame({
        "finished": finished,
        "ttft_s": np.asarray(ttft_ms, float) / 1e3,
        "tpot_s": np.asarray(tpot_ms, float) / 1e3,
        "e2el_s": np.ones(n),
        "output_tokens": np.full(n, 10) if output is None else output,
    })


def test_joint_and_percentile_modes_differ_as_documented():
    # 10 requests: 2 miss TTFT, another misses TPOT -> joint 70%, TTFT 80%, TPOT 90%
    ttft = [100] * 8 + [900, 900]
    tpot = [10] * 7 + [90, 10, 10]
    slo = {"ttft_ms": 500, "tpot_ms": 50}
    joint = measure(frame(ttft, tpot), slo, 0.8, "joint")
    assert joint["attainment"] == pytest.approx(0.7) and not joint["passed"]
    assert measure(frame(ttft, tpot), slo, 0.7, "joint")["passed"]
    # each metric's p80 is within its limit although only 70% meet both
    pct = measure(frame(ttft, tpot), slo, 0.8, "percentile")
    assert pct["passed"] and pct["ttft_ms"] == pytest.approx(np.percentile(ttft, 80))
    assert pct["tpot_ms"] == pytest.approx(np.percentile(tpot, 80))
    p90 = measure(frame(ttft, tpot), slo, 0.9, "percentile")
    assert p90["ttft_ms"] == pytest.approx(900) and not p90["passed"]


def test_unfinished_requests_miss_and_one_token_outputs_have_no_tpot():
    ttft = [100.0] * 10
    tpot = [10.0] * 9 + [np.nan]  # a one-token output: TPOT undefined
    slo = {"ttft_ms": 500, "tpot_ms": 50}
    ok = measure(frame(ttft, tpot), slo, 1.0, "joint")
    assert ok["attainment"] == 1.0 and ok["passed"]
    finished = [True] * 9 + [False]
    m = measure(frame(ttft, [10.0] * 10, finished), slo, 0.95, "percentile")
    assert math.isinf(m["ttft_ms"]) and not m["passed"]
    assert measure(frame(ttft, [10.0] * 10, finished), slo, 0.9, "joint")["passed"]


# --- prices -------------------------------------------------------------------------------
def test_cost_per_million_tokens_arithmetic():
    # 3 USD/h serving 1,000 tokens/s = 3.6 M tokens/h -> 0.8333 USD per million
    assert usd_per_million(3.0, 1000.0) == pytest.approx(3.0 / 3.6)
    assert math.isinf(usd_per_million(3.0, 0.0))
    cfg = SimConfig.load(None, ["placement.tp=2", "replicas=3", "device=a100-80gb-sxm"])
    price = fleet_price(cfg)
    dev = get_device("a100-80gb-sxm").price_per_hour
    assert price.devices == 6 and price.usd_per_hour == pytest.approx(6 * dev.si)
    assert price.grade == dev.grade == "D"


# --- the simulator search -----------------------------------------------------------------
def test_capacity_result_is_consistent_and_costed():
    cfg = SimConfig.load(None, SMALL)
    r = find_capacity(cfg, SLO, 0.9, "joint", workers=1, per_round=2, start_rate=20)
    assert r.converged and 0 < r.max_rate < r.hi_rate <= r.max_rate * 1.02 + 1e-9
    p = r.probes
    assert list(p["round"]) == sorted(p["round"]) and len(p) == len(set(p["rate"]))
    assert p.loc[p["rate"] == r.max_rate, "passed"].item()
    assert not p.loc[p["rate"] == r.hi_rate, "passed"].item()
    assert (p["num_requests"] == 150).all()
    best = r.best
    assert best["attainment"] >= 0.9
    assert r.output_tokens_per_s == pytest.approx(r.max_rate * best["mean_output_tokens"])
    price = get_device("h100-sxm").price_per_hour.si
    assert r.usd_per_million_output_tokens == pytest.approx(
        price / (r.output_tokens_per_s * 3600) * 1e6)
    assert r.usd_per_million_tokens < r.usd_per_million_output_tokens
    assert r.price.grade == "D" and any("grade D" in n for n in r.notes)
    data = json.loads(json.dumps(r.to_dict()))
    assert data["max_rate"] == r.max_rate and len(data["probes"]) == len(p)


def test_serial_and_parallel_search_give_identical_probes():
    cfg = SimConfig.load(None, SMALL)
    kwargs = {"per_round": 3, "start_rate": 20, "tolerance": 0.05}
    serial = find_capacity(cfg, SLO, 0.9, "percentile", workers=1, **kwargs)
    parallel = find_capacity(cfg, SLO, 0.9, "percentile", workers=3, **kwargs)
    again = find_capacity(cfg, SLO, 0.9, "percentile", workers=3, **kwargs)
    assert serial.max_rate == parallel.max_rate == again.max_rate > 0
    cols = [c for c in serial.probes.columns if c != "wall_s"]
    pd.testing.assert_frame_equal(serial.probes[cols], parallel.probes[cols])
    pd.testing.assert_frame_equal(parallel.probes[cols], again.probes[cols])


def test_slo_defaults_to_the_configs_and_joint_matches_goodput_attainment():
    from infersim.simulator import simulate

    cfg = SimConfig.load(None, [*SMALL, "slo.ttft_ms=200", "slo.tpot_ms=20"])
    r = find_capacity(cfg, None, 0.9, workers=1, per_round=2, start_rate=20, tolerance=0.2)
    assert r.slo == SLO
    row = r.probes.iloc[0]
    run = simulate(cfg.model_copy(update={"workload": cfg.workload.model_copy(update={
        "arrival": cfg.workload.arrival.model_copy(update={"rate": row["rate"]})})}))
    assert row["attainment"] == pytest.approx(run.summary["slo_attainment"])


def test_trace_rates_are_scaled_requests_per_second(tmp_path):
    rng = np.random.default_rng(1)
    n = 120
    arrival = np.cumsum(rng.exponential(0.5, n))  # about 2 requests/s
    arrival -= arrival[0]
    path = tmp_path / "trace.csv"
    pd.DataFrame({"arrived_at": arrival, "num_prefill_tokens": rng.integers(50, 800, n),
                  "num_decode_tokens": rng.integers(5, 200, n)}).to_csv(path, index=False)
    cfg = SimConfig.from_dict({"workload": {"trace": {"path": str(path), "rate_scale": 2}}})
    knob, rate = rate_knob(cfg)
    assert knob.kind == "trace" and knob.base_rate == pytest.approx(n / arrival[-1])
    assert rate == pytest.approx(2 * knob.base_rate)
    r = find_capacity(cfg, SLO, 0.9, "percentile", workers=1, per_round=2, tolerance=0.1)
    assert r.converged
    assert np.allclose(r.probes["rate_scale"] * knob.base_rate, r.probes["rate"])
    assert r.max_rate_scale == pytest.approx(r.max_rate / knob.base_rate)
    # a window of the first 30 trace seconds keeps only those requests
    w = find_capacity(cfg, SLO, 0.9, workers=1, per_round=2, tolerance=0.2, window_s=30)
    assert (w.probes["num_requests"] == int((arrival < 30).sum())).all()


@pytest.mark.parametrize("overrides, kwargs, field", [
    (["workload.arrival={process: burst}"], {}, "workload.arrival.process"),
    ([], {"window_s": 10}, "--window"),
    ([], {"mode": "median"}, "mode"),
    ([], {"attainment": 1.5}, "attainment"),
    ([], {"slo": {"ttft": 5}}, "slo"),
])
def test_bad_options_are_config_errors(overrides, kwargs, field):
    cfg = SimConfig.load(None, SMALL + overrides)
    with pytest.raises(ConfigError) as info:
        find_capacity(cfg, **{"slo": SLO, "workers": 1, **kwargs})
    assert info.value.field == field


# --- CLI ----------------------------------------------------------------------------------
CLI = ["capacity", *(a for o in SMALL for a in ("--set", o)), "--slo",
       "ttft_ms=200,tpot_ms=20", "--workers", "1", "--per-round", "2", "--start-rate", "20"]


def test_cli_json_matches_the_api():
    result = runner.invoke(app, [*CLI, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    api = find_capacity(SimConfig.load(None, SMALL), SLO, 0.9, workers=1, per_round=2,
                        start_rate=20)
    assert data["max_rate"] == api.max_rate and data["mode"] == "joint"
    assert data["usd_per_million_output_tokens"] == pytest.approx(
        api.usd_per_million_output_tokens)
    assert [p["rate"] for p in data["probes"]] == api.probes["rate"].tolist()
    assert data["price_grade"] == "D"


def test_cli_prints_each_probe_and_the_answer():
    result = runner.invoke(app, [*CLI, "--mode", "percentile"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "TTFT p90" in text and "max rate" in text and "USD per million output" in text
    assert "grade D" in text
    assert text.count(" yes ") + text.count(" no ") >= 4


def test_cli_bad_slo_is_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from infersim.cli import main; main()",
                           "capacity", "--slo", "ttft=500"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--slo" in proc.stderr and "ttft_ms, tpot_ms, e2el_ms" in proc.stderr
    assert "Traceback" not in proc.stderr
