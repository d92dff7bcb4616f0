"""Efficiency parameters: family defaults, device-file overrides and their validation."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from infersim.costmodels import PARAMETERS, CostModel, Placement, describe_params, parse_batch
from infersim.costmodels.params import FAMILY_DEFAULTS, resolve_params
from infersim.errors import ConfigError
from infersim.hardware import devices, get_device, load_device_file
from infersim.models import get_model


def device_file(tmp_path, efficiency: dict, name: str = "h100-sxm"):
    """A copy of a catalog device file with an ``efficiency:`` section, loaded."""
    src = resources.files("infersim.hardware") / "data" / "devices" / f"{name}.yaml"
    data = yaml.safe_load(src.read_text())
    data["name"] = "my-h100"
    data["efficiency"] = efficiency
    path = tmp_path / "my-h100.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_device_file(path)


def q(value, unit="1"):
    return {"value": value, "unit": unit, "source": "test", "grade": "C"}


@pytest.mark.parametrize("name", sorted(devices()))
def test_every_catalog_device_resolves_every_parameter(name):
    params = resolve_params(get_device(name))
    assert set(params.values) == set(PARAMETERS)
    assert set(describe_params(get_device(name))) == set(PARAMETERS)
    for key in ("gemm_efficiency", "attention_efficiency", "memory_efficiency", "overlap"):
        assert 0 < params.values[key] <= 1


def test_family_defaults_only_use_known_parameters():
    for family, overrides in FAMILY_DEFAULTS.items():
        assert set(overrides) <= set(PARAMETERS), family


def test_gpu_defaults_capture_graphs_and_others_do_not():
    assert resolve_params(get_device("h100-sxm")).graph_max_tokens == 512
    assert resolve_params(get_device("tpu-v5e")).graph_max_tokens == 0


@pytest.mark.parametrize("value", [1.5, 0.0, -0.2])
def test_out_of_range_efficiency_names_the_parameter(tmp_path, value):
    dev = device_file(tmp_path, {"gemm_efficiency": q(value)})
    with pytest.raises(ConfigError) as err:
        resolve_params(dev)
    assert "efficiency.gemm_efficiency" in err.value.field
    with pytest.raises(ConfigError, match=r"efficiency\.gemm_efficiency"):
        CostModel(get_model("llama-3.1-8b"), Placement(dev))


def test_unknown_parameter_names_it_and_lists_the_allowed(tmp_path):
    dev = device_file(tmp_path, {"gemm_eficiency": q(0.5)})
    with pytest.raises(ConfigError) as err:
        resolve_params(dev)
    assert "efficiency.gemm_eficiency" in err.value.field
    assert "gemm_efficiency" in err.value.allowed


def test_wrong_unit_is_an_error(tmp_path):
    dev = device_file(tmp_path, {"kernel_overhead": q(5, "GB")})
    with pytest.raises(ConfigError, match=r"efficiency\.kernel_overhead"):
        resolve_params(dev)


def test_valid_override_changes_the_prediction(tmp_path):
    model, b = get_model("llama-3.1-8b"), parse_batch("prefill:1x2048")
    base = CostModel(model, Placement(get_device("h100-sxm"))).step(b)
    dev = device_file(tmp_path, {"gemm_efficiency": q(0.35), "kernel_overhead": q(8, "us")})
    params = resolve_params(dev)
    assert params.gemm_efficiency == 0.35 and params.kernel_overhead == pytest.approx(8e-6)
    assert params.grade == "D"  # still the lowest grade among all parameters in force
    slow = CostModel(model, Placement(dev)).step(b)
    gemm = {o.name: o.time_s for o in base.ops}, {o.name: o.time_s for o in slow.ops}
    # compute-bound GEMMs at half the efficiency take about twice as long
    assert gemm[1]["mlp_up"] / gemm[0]["mlp_up"] == pytest.approx(2.0, rel=0.01)
    assert slow.seconds > 1.5 * base.seconds
    assert describe_params(dev)["gemm_efficiency"].source == "test"
