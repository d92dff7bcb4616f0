"""The shipped catalog of devices, links and node templates, plus user device files."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from infersim.errors import ConfigError, UnknownNameError, config_error_from
from infersim.hardware.spec import DeviceSpec, LinkSpec, NodeSpec

_DATA = resources.files("infersim.hardware") / "data"


def _read_yaml(path, where: str) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(where, None, f"not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(where, str(path), f"cannot be read: {exc.strerror}") from None


def _validate(cls, data: object, where: str):
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, where) from None


@cache
def devices() -> dict[str, DeviceSpec]:
    """All shipped devices by name."""
    out: dict[str, DeviceSpec] = {}
    for path in sorted(_DATA.joinpath("devices").iterdir(), key=lambda p: p.name):
        if path.name.endswith(".yaml"):
            spec = _validate(DeviceSpec, _read_yaml(path, path.name), f"devices/{path.name}")
            out[spec.name] = spec
    return out


@cache
def links() -> dict[str, LinkSpec]:
    """All shipped interconnects by name."""
    data = _read_yaml(_DATA / "links.yaml", "links.yaml") or []
    specs = [_validate(LinkSpec, d, f"links.yaml: [{i}]") for i, d in enumerate(data)]
    return {s.name: s for s in specs}


@cache
def nodes() -> dict[str, NodeSpec]:
    """All shipped node templates by name."""
    data = _read_yaml(_DATA / "nodes.yaml", "nodes.yaml") or []
    specs = [_validate(NodeSpec, d, f"nodes.yaml: [{i}]") for i, d in enumerate(data)]
    return {s.name: s for s in specs}


def _resolve(kind: str, name: str, specs: dict, aliases) -> object:
    key = name.strip().lower()
    for spec in specs.values():
        if key == spec.name or key in (a.lower() for a in aliases(spec)):
            return spec
    raise UnknownNameError(kind, name, specs)


def get_device(name: str) -> DeviceSpec:
    """A shipped device by name or alias, case-insensitive."""
    return _resolve("device", name, devices(), lambda s: s.aliases)


def get_link(name: str) -> LinkSpec:
    return _resolve("link", name, links(), lambda s: ())


def get_node(name: str) -> NodeSpec:
    return _resolve("node", name, nodes(), lambda s: ())


def load_device_file(path: str | Path) -> DeviceSpec:
    """A user's device YAML, same schema as the catalog; errors name the file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--device-file", str(path), "the file does not exist")
    return _validate(DeviceSpec, _read_yaml(path, str(path)), str(path))


def resolve_device(name: str | None = None, device_file: str | Path | None = None) -> DeviceSpec:
    """A device from a file when given, else from the catalog."""
    if device_file:
        return load_device_file(device_file)
    if not name:
        raise ConfigError("device", name, "name a catalog device or pass a device file")
    return get_device(name)
