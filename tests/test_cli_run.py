"""`infersim run` from the command line: defaults, files, JSON, errors, examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infersim.cli import app
from infersim.simulator import SimConfig

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_run_writes_all_outputs_and_prints_json(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--set", "workload.num_requests=40", "--out", str(out),
                                 "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["completed"] == 40
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "report.png",
                                                     "requests.csv", "steps.csv",
                                                     "summary.json"]
    assert json.loads((out / "summary.json").read_text()) == summary
    header = (out / "steps.csv").read_text().splitlines()[0].split(",")
    for col in ("start_s", "duration_s", "prefill_tokens", "decode_tokens", "num_seqs",
                "kv_blocks_used", "preemptions"):
        assert col in header
    # the written config reproduces the run
    again = runner.invoke(app, ["run", "-c", str(out / "config.yaml"), "--json",
                                "--no-progress"])
    assert json.loads(again.stdout) == summary


def test_table_output_names_the_model_and_device():
    result = runner.invoke(app, ["run", "--set", "workload.num_requests=20", "--no-progress"])
    assert result.exit_code == 0
    assert "llama-3.1-8b" in result.stdout and "h100-sxm" in result.stdout
    assert "TTFT" in result.stdout and "goodput" in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--set", "scheduler.max_num_sqs=4"], "scheduler.max_num_sqs"),
    (["--set", "workload.arrival.rate=-2"], "arrival.rate"),
    (["--set", "device=h10"], "did you mean"),
    (["--config", "missing.yaml"], "missing.yaml"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, expected, tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from infersim.cli import main; main()",
                           "run", "--no-progress", *args], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 3


def test_failed_run_leaves_no_half_written_folder(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--set", "device=h10", "--out", str(out)])
    assert result.exit_code != 0 and not out.exists()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_and_run(path):
    data = yaml.safe_load(path.read_text())
    trace = data.get("workload", {}).get("trace")
    if trace and not (path.parent / trace["path"]).exists():
        pytest.skip(f"{trace['path']} is not here")
    cfg = SimConfig.load(path, ["workload.num_requests=30"])
    result = runner.invoke(app, ["run", "-c", str(path), "--set", "workload.num_requests=30",
                                 "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["completed"] == 30
    assert cfg.model == data["model"]
