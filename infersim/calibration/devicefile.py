"""Device files written by calibration: the catalog's YAML schema, one quantity per line,
written atomically, byte-for-byte the same for the same device."""

from __future__ import annotations

from pathlib import Path

import yaml

from infersim.atomic import write_text_atomic
from infersim.errors import ConfigError
from infersim.hardware import DeviceSpec, get_device, load_device_file

_QUANTITY_KEYS = {"value", "unit", "source", "grade"}


class _Dumper(yaml.SafeDumper):
    pass


def _dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    flow = set(data) == _QUANTITY_KEYS
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


_Dumper.add_representer(dict, _dict)


def device_yaml(device: DeviceSpec, header: str = "") -> str:
    """``device`` as a device file (loadable by ``load_device_file``)."""
    data = device.model_dump(mode="json", exclude_defaults=True)
    data = {k: data[k] for k in DeviceSpec.model_fields if k in data}
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1_000_000,
                     allow_unicode=True, default_flow_style=False)
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + text


def write_device(device: DeviceSpec, path: str | Path, header: str = "") -> Path:
    """Write ``device`` to ``path`` atomically and check that it loads back unchanged."""
    text = device_yaml(device, header)
    back = yaml.safe_load(text)
    if DeviceSpec.model_validate(back) != device:  # a bug here, not a user error
        raise AssertionError("device file does not round-trip")
    return write_text_atomic(path, text)


def resolve_base(name: str) -> DeviceSpec:
    """A base device: a device file path, ``local-cpu`` (measured now) or a catalog name."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError("--base", name, "the device file does not exist")
        return load_device_file(path)
    if name.strip().lower() == "local-cpu":
        from infersim.calibration.localcpu import local_cpu_device

        return local_cpu_device()
    return get_device(name)
