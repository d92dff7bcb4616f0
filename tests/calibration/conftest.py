"""Fixtures for the calibration tests: a tiny model, synthetic profiles, the shared data.

Test modules are imported with --import-mode=importlib and cannot import each other, so the
shared pieces are fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infersim.models import ModelSpec, load_model_config

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
KERNELS = SHARED_DATA / "kernels"

TINY = {  # a Llama-shaped model small enough to run every kernel in milliseconds
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3,
    "vocab_size": 512, "head_dim": 16, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "max_position_embeddings": 4096,
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture
def tiny_model(tiny_config: Path) -> ModelSpec:
    return load_model_config(tiny_config, "tiny")


@pytest.fixture(scope="session")
def kernels_dir() -> Path:
    if not (KERNELS / "compute").is_dir():
        pytest.skip(f"no kernel tables under {KERNELS}")
    return KERNELS


@pytest.fixture
def torch():
    """PyTorch with one thread: tiny kernels do not need two, and two threads spinning at
    an OpenMP barrier on a loaded machine turn microseconds into scheduler quanta."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)
