"""`infersim optimize tree` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infersim.cli import app
from infersim.optimizer import DraftTree, optimize_tree

runner = CliRunner()
ACCEPT = "0.55,0.15,0.07,0.04,0.02"
INFERSIM = Path(sys.executable).parent / "infersim"


def invoke(*args: str):
    result = runner.invoke(app, ["optimize", "tree", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def test_json_gives_expected_tokens_and_the_tree():
    data = json.loads(invoke("--accept", ACCEPT, "--nodes", "32", "--depth", "8",
                             "--json").stdout)
    assert round(data["expected_tokens"], 2) == 3.13
    assert data["nodes"] == 32 and data["depth"] == 8 and data["size_choice"] is None
    tree = DraftTree(tuple(data["tree"]["parents"]))
    assert tree.size == 32 and tree.score(data["accept"]) == pytest.approx(
        data["expected_tokens"])
    assert data == optimize_tree([0.55, 0.15, 0.07, 0.04, 0.02], 32, 8).to_dict()


def test_text_shows_the_tree():
    out = invoke("--accept", ACCEPT, "--nodes", "16").stdout
    assert "expected tokens per verify: 2.7988" in out
    assert "d0: 4" in out


def test_model_and_device_pick_a_size():
    data = json.loads(invoke("--accept", ACCEPT, "--nodes", "32", "--model", "llama-3.1-70b",
                             "--device", "h100-sxm", "--tp", "4", "--batch", "8",
                             "--json").stdout)
    choice = data["size_choice"]
    assert choice["model"] == "llama-3.1-70b" and choice["tp"] == 4 and choice["batch"] == 8
    options = choice["options"]
    assert [o["nodes"] for o in options] == list(range(1, 33))
    best = min(options, key=lambda o: o["time_per_token_s"])
    assert choice["best"]["nodes"] == best["nodes"]
    assert choice["speedup_vs_plain_decoding"] > 1
    text = invoke("--accept", ACCEPT, "--nodes", "32", "-m", "llama-3.1-70b", "-d",
                  "h100-sxm", "--tp", "4", "--batch", "8").stdout
    assert "best size" in text and "ms/token" in text


@pytest.mark.parametrize(("args", "expected"), [
    (("--accept", "0.55,x"), "--accept"),
    (("--accept", "0.9,0.5"), "--accept"),
    (("--accept", "0,0.5"), "--accept"),
    (("--accept", ACCEPT, "--model", "llama-3.1-70b"), "--device"),
])
def test_bad_options_print_one_line_and_exit_2(args, expected):
    cmd = [str(INFERSIM)] if INFERSIM.exists() else [sys.executable, "-c",
                                                      "from infersim.cli import main; main()"]
    proc = subprocess.run([*cmd, "optimize", "tree", *args], capture_output=True, text=True,
                          timeout=60, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
