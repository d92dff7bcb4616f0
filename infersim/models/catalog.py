"""Shipped model configs (Hugging Face config.json files) and user config paths."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from infersim.errors import ConfigError, UnknownNameError, config_error_from
from infersim.models.spec import ModelSpec, model_from_hf_config

_CONFIGS = resources.files("infersim.models") / "configs"


class CatalogEntry(BaseModel):
    """One line of configs/index.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    hf_id: str
    config: str
    source: str
    aliases: tuple[str, ...] = ()


@cache
def _entries() -> dict[str, CatalogEntry]:
    data = yaml.safe_load((_CONFIGS / "index.yaml").read_text()) or []
    try:
        entries = [CatalogEntry.model_validate(d) for d in data]
    except ValidationError as exc:
        raise config_error_from(exc, "models/configs/index.yaml") from None
    return {e.name: e for e in entries}


def _load(entry: CatalogEntry) -> ModelSpec:
    cfg = json.loads((_CONFIGS / entry.config).read_text())
    return model_from_hf_config(cfg, entry.name, entry.hf_id, entry.source)


@cache
def models() -> dict[str, ModelSpec]:
    """All shipped models by name."""
    return {name: _load(e) for name, e in _entries().items()}


def load_model_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """A model from a user's config.json (a file, or a folder holding config.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError("model", str(path), f"cannot be read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError("model", str(path), f"not valid JSON: {exc}") from None
    return model_from_hf_config(cfg, name or path.parent.name.lower(), source=str(path))


def get_model(name: str) -> ModelSpec:
    """A model by catalog name, alias or Hugging Face id (case-insensitive), or a path to a
    config.json."""
    key = name.strip().lower()
    for entry in _entries().values():
        if key in (entry.name, entry.hf_id.lower(), *(a.lower() for a in entry.aliases)):
            return models()[entry.name]
    if key.endswith(".json") or Path(name).is_dir():
        return load_model_config(name)
    raise UnknownNameError("model", name, _entries())
