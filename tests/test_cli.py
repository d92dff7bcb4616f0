"""`infersim hardware`, `infersim models` and `infersim cost` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infersim.cli import app
from infersim.costmodels import PARAMETERS, CostModel, Placement, parse_batch
from infersim.costmodels.kernels import gemm_time
from infersim.hardware import devices, get_device
from infersim.models import get_model, models

runner = CliRunner()
INFERSIM = Path(sys.executable).parent / "infersim"  # the installed console script
OP_KEYS = {"name", "flops", "bytes", "comm_bytes", "time_s", "bound"}


def invoke_json(*args: str):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- hardware ----------------------------------------------------------------------------------
def test_hardware_list_json():
    rows = invoke_json("hardware", "list")
    assert isinstance(rows, list) and len(rows) == len(devices())
    assert all({"name", "family"} <= set(r) for r in rows)
    assert {r["name"] for r in rows} == set(devices())
    assert {r["family"] for r in rows} == {"gpu", "tpu", "cpu", "dataflow", "fpga", "npu"}
    h100 = next(r for r in rows if r["name"] == "h100-sxm")
    assert h100["bf16_flops"] == pytest.approx(989.4e12)


def test_hardware_list_table():
    result = runner.invoke(app, ["hardware", "list"])
    assert result.exit_code == 0 and "h100-sxm" in result.stdout and "tpu-v5e" in result.stdout


def test_hardware_show_json_has_the_full_spec():
    data = invoke_json("hardware", "show", "h100")  # an alias
    spec = get_device("h100-sxm").model_dump(mode="json")
    assert {k: data[k] for k in spec} == spec
    assert data["name"] == "h100-sxm" and data["family"] == "gpu"
    assert data["peak_flops"]["bf16"]["source"] and data["peak_flops"]["bf16"]["grade"]
    assert set(data["efficiency_in_force"]) == set(PARAMETERS)
    assert data["efficiency_in_force"]["graph_max_tokens"]["value"] == 512


def test_hardware_show_table_names_sources():
    result = runner.invoke(app, ["hardware", "show", "sn40l"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    source = get_device("sn40l").peak_flops["bf16"].source
    for text in ("hbm (main)", "ddr", "gemm_efficiency", source.split()[0]):
        assert text in result.stdout


# --- models ------------------------------------------------------------------------------------
def test_models_list_json():
    rows = invoke_json("models", "list")
    assert {r["name"] for r in rows} == set(models())
    row = next(r for r in rows if r["name"] == "mixtral-8x7b")
    assert row["family"] == "moe" and row["active_params"] < row["params"]
    assert {r["family"] for r in rows} >= {"dense", "moe", "ssm", "hybrid"}


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B", "META-LLAMA/llama-3.1-8b",
                                  "llama-3.1-8b"])
def test_models_show_json_accepts_hf_ids_case_insensitively(name):
    data = invoke_json("models", "show", name)
    model = get_model("llama-3.1-8b")
    assert data["name"] == "llama-3.1-8b" and data["hf_id"] == "meta-llama/Llama-3.1-8B"
    assert data["num_layers"] == 32 and data["num_kv_heads"] == 8
    assert data["kv_bytes_per_token"] == model.kv_bytes_per_token
    assert data["params"] == model.param_count
    assert data["mixers"] == ["attention"] * 32


# --- cost --------------------------------------------------------------------------------------
def test_cost_json_matches_the_api():
    data = invoke_json("cost", "--model", "llama-3.1-8b", "--device", "h100-sxm", "--batch",
                       "decode:64x2048")
    assert {"step_time_s", "mfu", "mbu", "ops"} <= set(data)
    assert data["ops"] and all(set(o) == OP_KEYS for o in data["ops"])
    expected = CostModel(get_model("llama-3.1-8b"), Placement(get_device("h100-sxm"))).step(
        parse_batch("decode:64x2048"))
    assert data["step_time_s"] == pytest.approx(expected.seconds, rel=1e-12)
    assert data["mfu"] == pytest.approx(expected.mfu) and data["mbu"] == pytest.approx(
        expected.mbu)
    assert sum(o["time_s"] for o in data["ops"]) == pytest.approx(data["step_time_s"])
    assert 0 < data["mfu"] < 1 and 0 < data["mbu"] < 1


def test_several_batches_make_one_mixed_step():
    base = ["cost", "--model", "llama-3.1-8b", "--device", "h100-sxm"]
    prefill = invoke_json(*base, "--batch", "chunk:1x512@1024")["step_time_s"]
    decode = invoke_json(*base, "--batch", "decode:32x2048")["step_time_s"]
    mixed = invoke_json(*base, "--batch", "chunk:1x512@1024", "-b", "decode:32x2048")
    assert mixed["step_time_s"] > max(prefill, decode)
    # still one step: weights are read once, so it costs less than two steps
    assert mixed["step_time_s"] < prefill + decode
    names = {o["name"] for o in mixed["ops"]}
    assert {"attention_prefill", "attention_decode"} <= names


def test_cost_with_tp_reports_collectives():
    data = invoke_json("cost", "-m", "llama-3.1-70b", "-d", "h100", "--tp", "4", "-b",
                       "prefill:1x2048")
    ar = next(o for o in data["ops"] if o["name"] == "tp_all_reduce")
    assert ar["comm_bytes"] > 0 and ar["bound"] == "comm" and data["comm_bytes"] > 0


def test_cost_table():
    result = runner.invoke(app, ["cost", "-m", "llama-3.1-8b", "-d", "h100-sxm", "-b",
                                 "decode:1x1024"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("qkv_proj", "attention_decode", "step time", "MFU", "MBU", "bound"):
        assert text in result.stdout


def test_cost_op_gemm_json():
    data = invoke_json("cost", "op", "gemm", "--m", "128", "--n", "4096", "--k", "4096",
                       "--device", "a100")
    assert set(data) == {"time_s"}
    assert data["time_s"] == gemm_time(get_device("a100-80gb-sxm"), 128, 4096, 4096)
    assert 1e-6 < data["time_s"] < 1e-3


def test_device_file_works_like_the_catalog_entry(tmp_path):
    src = resources.files("infersim.hardware") / "data" / "devices" / "a100-80gb-sxm.yaml"
    path = tmp_path / "my-a100.yaml"
    path.write_text(src.read_text())
    args = ["-m", "llama-3.1-8b", "-b", "prefill:1x1024"]
    mine = invoke_json("cost", *args, "--device-file", str(path))
    catalog = invoke_json("cost", *args, "--device", "a100")
    assert mine["step_time_s"] == catalog["step_time_s"]
    gemm = invoke_json("cost", "op", "gemm", "--m", "64", "--n", "64", "--k", "64",
                       "--device-file", str(path))
    assert gemm["time_s"] == gemm_time(get_device("a100"), 64, 64, 64)
    # a device file with a tuned parameter changes the prediction
    data = yaml.safe_load(path.read_text())
    data["efficiency"] = {"gemm_efficiency": {"value": 0.35, "unit": "1", "source": "test",
                                              "grade": "C"}}
    path.write_text(yaml.safe_dump(data))
    assert invoke_json("cost", *args, "--device-file", str(path))["step_time_s"] > \
        1.5 * catalog["step_time_s"]


# --- errors: one line, exit code 2, no traceback (through main(), the console script) ---------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [str(INFERSIM)] if INFERSIM.exists() else [sys.executable, "-c",
                                                      "from infersim.cli import main; main()"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize(("args", "expected"), [
    (("hardware", "show", "h10"), ["unknown device 'h10'", "did you mean", "h100-sxm"]),
    (("models", "show", "llama-3.1-9b"), ["unknown model 'llama-3.1-9b'", "llama-3.1-8b"]),
    (("cost", "-m", "llama-3.1-8b", "-d", "h100x", "-b", "decode:1x1"),
     ["unknown device 'h100x'", "h100-sxm"]),
    (("cost", "-m", "llama-3.1-8b", "-d", "h100", "-b", "decode:64"), ["--batch", "decode:64"]),
])
def test_user_errors_print_one_line_and_exit_2(args, expected):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "Traceback" not in proc.stderr
    for text in expected:
        assert text in lines[0]
    assert proc.stdout == ""


def test_bad_device_file_is_a_user_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: Bad Name\n")
    proc = run_cli("cost", "op", "gemm", "--m", "1", "--n", "1", "--k", "1", "--device-file",
                   str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
