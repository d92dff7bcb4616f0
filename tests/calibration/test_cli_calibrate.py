"""`infersim calibrate ...`: run, import-tables, fit, report, replay, local-device."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from infersim.calibration import localcpu
from infersim.cli import app
from infersim.errors import ConfigError
from infersim.hardware import load_device_file
from infersim.simulator.metrics import StepLog

cli = CliRunner()


def invoke(*args: str):
    result = cli.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def fast_local(monkeypatch):
    """local-device with its microbenchmarks stubbed (the real ones take seconds)."""
    monkeypatch.setattr(localcpu, "measure_gemm_flops",
                        lambda dtype, **k: ({"bf16": 9e11, "fp32": 2e11}[dtype], "stub"))
    monkeypatch.setattr(localcpu, "measure_copy_bandwidth",
                        lambda nbytes, **k: (3e10 if nbytes > 1 << 26 else 2e11, "stub"))


def test_run_fit_report_on_a_tiny_model(torch, tiny_config, tmp_path: Path, fast_local):
    profile = tmp_path / "p.csv"
    invoke("calibrate", "run", "--device-name", "local-cpu", "--model", str(tiny_config),
           "--quick", "--tp", "1", "--repeats", "2", "--out", str(profile), "--no-progress")
    df = pd.read_csv(profile)
    assert set(df["op"]) == {"gemm", "attn_prefill", "attn_decode", "elementwise"}
    assert set(df["device_name"]) == {"local-cpu"} and set(df["model"]) == {"tiny"}
    base = tmp_path / "cpu.yaml"
    invoke("calibrate", "local-device", "--out", str(base))
    assert load_device_file(base).family == "cpu"
    dev = tmp_path / "fit.yaml"
    result = invoke("calibrate", "fit", "--profile", str(profile), "--base", str(base),
                    "--out", str(dev), "--json")
    data = json.loads(result.output)
    assert data["split"].startswith("by shape")
    assert {"gemm_efficiency", "attention_efficiency", "decode_attention_efficiency",
            "elementwise_efficiency"} <= set(data["fitted"])
    assert load_device_file(dev).calibrated_from == str(profile)
    report_dir = tmp_path / "report"
    result = invoke("calibrate", "report", "--profile", str(profile), "--device-file", str(dev),
                    "--out", str(report_dir))
    assert "held-out" in result.output
    summary = json.loads((report_dir / "summary.json").read_text())
    classes = {(c["op_class"], c["set"]) for c in summary["classes"]}
    assert ("gemm", "held-out") in classes and ("attention", "held-out") in classes
    assert (report_dir / "predicted_vs_measured.png").stat().st_size > 0
    assert len(pd.read_csv(report_dir / "kernels.csv")) == len(df)
    # the calibrated file works where any device file does
    invoke("cost", "--model", str(tiny_config), "--device-file", str(dev), "--batch",
           "decode:4x100")


def test_import_tables_and_fit_a100(kernels_dir: Path, tmp_path: Path):
    profile = tmp_path / "vidur.csv"
    invoke("calibrate", "import-tables", str(kernels_dir), "--gpu", "a100", "--out",
           str(profile))
    dev = tmp_path / "a100.yaml"
    out = invoke("calibrate", "fit", "--profile", str(profile), "--base", "a100-80gb-sxm",
                 "--out", str(dev)).output
    assert "internlm-20b, phi-2" in out
    data = json.loads(invoke("calibrate", "report", "--profile", str(profile), "--device-file",
                             str(dev), "--json").output)
    gemm = next(c for c in data["classes"] if c["op_class"] == "gemm" and c["set"] == "held-out")
    assert gemm["mape"] <= 0.08


def test_replay_command(torch, tiny_config, tmp_path: Path):
    steps = tmp_path / "steps.csv"
    row = {c: 0 for c in StepLog.COLUMNS} | {"decode_tokens": 2, "decode_context": 100,
                                              "sampled": 2, "duration_s": 0.01}
    pd.DataFrame([row, row]).to_csv(steps, index=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": str(tiny_config)}))
    out = tmp_path / "replay.csv"
    result = invoke("calibrate", "replay", "--steps", str(steps), "--device-file",
                    str(Path(__file__).resolve().parents[2] / "infersim" / "hardware" / "data"
                        / "devices" / "xeon-8480-2s.yaml"), "--layers", "1", "--repeats", "1",
                    "--device", "cpu", "--out", str(out))
    assert "MAPE" in result.output and "engine overheads" in " ".join(result.output.split())
    assert len(pd.read_csv(out)) == 2


def test_user_errors_are_one_line(tmp_path: Path):
    result = cli.invoke(app, ["calibrate", "fit", "--profile", str(tmp_path / "none.csv"),
                              "--base", "a100", "--out", str(tmp_path / "x.yaml")])
    assert isinstance(result.exception, ConfigError)
    bad = tmp_path / "bad.csv"
    bad.write_text("op,dtype,median_s\nmatmul,bf16,1e-3\n")
    result = cli.invoke(app, ["calibrate", "report", "--profile", str(bad), "--device-file",
                              str(tmp_path / "x.yaml")])
    assert result.exception is not None


def test_local_device_measures_and_sources(fast_local):
    dev = localcpu.local_cpu_device()
    assert dev.family == "cpu" and dev.main_memory == "dram"
    assert dev.peak_flops["bf16"].grade == "A" and "own measurement" in dev.peak_flops[
        "bf16"].source
    assert dev.tier("dram").bandwidth.si == pytest.approx(3e10)
    assert dev.tier("llc").capacity.si == localcpu.llc_bytes()
    assert dev.arch["cores"].value == localcpu.cores()


def test_bandwidth_microbenchmark_is_real():
    bw, how = localcpu.measure_copy_bandwidth(1 << 20, repeats=2)
    assert 1e8 < bw < 1e13 and "MiB" in how
