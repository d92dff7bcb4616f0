"""The shipped model catalog: every config parses, lookups, user config files, errors, and
agreement with the model shapes recorded in measured kernel tables."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from infersim.errors import ConfigError, UnknownNameError
from infersim.models import get_model, load_model_config, models
from infersim.models.catalog import CatalogEntry

CONFIGS = resources.files("infersim.models") / "configs"
INDEX = [CatalogEntry.model_validate(d) for d in yaml.safe_load((CONFIGS / "index.yaml")
                                                                .read_text())]
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

REQUIRED = ["llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b",
            "mistral-7b", "llama-3.2-1b", "mixtral-8x7b", "qwen3-32b", "qwen3-30b-a3b", "phi-2",
            "codellama-34b", "internlm-20b", "qwen-72b", "mamba-2.8b", "jamba-v0.1"]


def test_required_models_are_shipped() -> None:
    assert set(REQUIRED) <= set(models())


def test_every_entry_parses_with_its_metadata() -> None:
    shipped = models()
    assert list(shipped) == [e.name for e in INDEX]
    for entry in INDEX:
        spec = shipped[entry.name]
        assert spec.name == entry.name
        assert spec.hf_id == entry.hf_id
        assert spec.source == entry.source and entry.source.strip()
        assert spec.param_count > 0 and spec.num_layers > 0


def test_index_and_files_agree() -> None:
    files = {p.name for p in CONFIGS.iterdir() if p.name.endswith(".json")}
    assert {e.config for e in INDEX} == files  # no missing and no orphaned config files
    keys = [k.lower() for e in INDEX for k in (e.name, e.hf_id, *e.aliases)]
    assert len(keys) == len(set(keys)), "a name, id or alias is used twice"
    for entry in INDEX:
        assert entry.name == entry.name.lower() and " " not in entry.name
        assert entry.hf_id.count("/") == 1


@pytest.mark.parametrize("entry", INDEX, ids=lambda e: e.name)
def test_shipped_files_are_hub_configs(entry: CatalogEntry) -> None:
    cfg = json.loads((CONFIGS / entry.config).read_text())
    # A Hub config.json names its transformers class and model type.
    assert cfg["architectures"] and cfg["model_type"]
    assert get_model(entry.name).model_type == cfg["model_type"]


@pytest.mark.parametrize("entry", INDEX, ids=lambda e: e.name)
def test_lookup_by_name_id_and_alias(entry: CatalogEntry) -> None:
    spec = get_model(entry.name)
    assert get_model(entry.hf_id) is spec
    assert get_model(entry.hf_id.upper()) is spec
    assert get_model(f"  {entry.name.upper()} ") is spec
    for alias in entry.aliases:
        assert get_model(alias) is spec


def test_lookup_examples() -> None:
    assert get_model("meta-llama/Llama-3.1-8B").name == "llama-3.1-8b"
    assert get_model("meta-llama/llama-3.1-8b").name == "llama-3.1-8b"
    assert get_model("mistralai/Mistral-7B-v0.3").name == "mistral-7b"
    assert get_model("ai21labs/Jamba-v0.1").name == "jamba-v0.1"


def test_unknown_name_suggests_near_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        get_model("llama-3.1-8")
    assert "llama-3.1-8b" in str(err.value)
    assert err.value.kind == "model"
    assert "llama-3.1-8b" in err.value.known


def test_user_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "My-Llama"
    folder.mkdir()
    path = folder / "config.json"
    path.write_text((CONFIGS / "llama-3.1-8b.json").read_text())
    shipped = get_model("llama-3.1-8b")
    for spec in (get_model(str(path)), load_model_config(path), load_model_config(folder)):
        assert spec.name == "my-llama"
        assert spec.source == str(path)
        assert spec.param_count == shipped.param_count
        assert spec.kv_bytes_per_token == shipped.kv_bytes_per_token
    assert get_model(str(folder)).param_count == shipped.param_count
    assert load_model_config(path, name="mine").name == "mine"


def test_user_config_without_layers_names_the_field(tmp_path: Path) -> None:
    cfg = json.loads((CONFIGS / "llama-3.1-8b.json").read_text())
    del cfg["num_hidden_layers"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as err:
        get_model(str(path))
    assert "num_hidden_layers" in err.value.field
    assert "num_hidden_layers" in str(err.value)


def test_unreadable_or_invalid_user_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        get_model(str(tmp_path / "absent.json"))
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model_config(bad)


# --- agreement with Vidur's measured kernel tables (../shared/data, when present) ----------


def _vidur_tables() -> list[tuple[str, Path]]:
    root = SHARED_DATA / "kernels" / "compute"
    if not root.is_dir():
        return []
    return sorted((str(p.parent.relative_to(p.parents[2])), p) for p in root.glob("*/*/*/mlp.csv"))


def test_vidur_tables_match_specs() -> None:
    tables = _vidur_tables()
    if not tables:
        pytest.skip(f"no kernel tables under {SHARED_DATA}")
    checked = set()
    for hf_id, path in tables:
        spec = get_model(hf_id)  # every profiled model is in the catalog under its Hub id
        with path.open() as f:
            rows = list(csv.DictReader(f))
        assert rows, path
        # The dims columns hold the whole model's shape on every row, whatever the row's
        # num_tensor_parallel_workers (its times are per GPU; its dims are not divided).
        shapes = {(r["n_head"], r["n_kv_head"], r["n_embd"], r["n_expanded_embd"],
                   r["use_gated_mlp"]) for r in rows}
        assert len(shapes) == 1, path
        heads, kv_heads, hidden, expanded, gated = shapes.pop()
        assert int(heads) == spec.num_heads, path
        assert int(kv_heads) == spec.num_kv_heads, path
        assert int(hidden) == spec.hidden_size, path
        assert int(expanded) == spec.intermediate_size, path
        assert (gated == "True") == spec.gated_mlp, path
        # vocab_size is padded in these tables (32768 for Llama-2), so it is not compared.
        checked.add(spec.name)
    assert {"qwen-72b", "codellama-34b", "internlm-20b", "llama-2-70b", "llama-2-7b",
            "phi-2"} <= checked
