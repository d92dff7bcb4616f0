"""The shipped hardware catalog: every device, link and node loads, is sourced and consistent."""

from __future__ import annotations

from importlib import resources
from itertools import pairwise

import pytest
import yaml

from infersim.errors import ConfigError, UnknownNameError
from infersim.hardware import (
    devices,
    get_device,
    get_link,
    get_node,
    links,
    load_device_file,
    nodes,
)
from infersim.hardware.quantity import GRADE_ORDER

FAMILIES = {"gpu", "tpu", "cpu", "dataflow", "fpga", "npu"}
DEVICES = sorted(devices())
LINKS = sorted(links())
NODES = sorted(nodes())


def test_catalog_has_at_least_14_devices_covering_all_families():
    specs = devices()
    assert len(specs) >= 14
    assert {s.family for s in specs.values()} == FAMILIES


@pytest.mark.parametrize("name", DEVICES)
def test_device_file_is_named_after_the_device(name):
    folder = resources.files("infersim.hardware") / "data" / "devices"
    assert folder.joinpath(f"{name}.yaml").is_file()


@pytest.mark.parametrize("name", DEVICES)
def test_every_device_number_has_a_source_and_grade(name):
    for q in devices()[name].quantities():
        assert q.source.strip(), f"{name}: a number without source"
        assert q.grade in GRADE_ORDER


@pytest.mark.parametrize("name", LINKS)
def test_every_link_number_has_a_source_and_grade(name):
    link = links()[name]
    for q in (link.bandwidth, link.latency):
        assert q.source.strip() and q.grade in GRADE_ORDER
        assert q.si > 0
    assert "per direction" in link.notes.lower(), f"{name}: notes must state the convention"


@pytest.mark.parametrize("name", DEVICES)
def test_device_has_the_essentials(name):
    spec = devices()[name]
    assert {"bf16", "fp16"} & set(spec.peak_flops), f"{name}: needs a bf16 or fp16 peak"
    assert spec.peak("bf16") > 0
    assert spec.memory_bytes > 0 and spec.memory_bandwidth > 0
    assert spec.power.si > 0
    assert spec.price_per_hour.si > 0
    assert not spec.efficiency, "efficiency defaults belong to infersim.costmodels"


@pytest.mark.parametrize("name", DEVICES)
def test_memory_tiers_go_from_fast_to_slow(name):
    tiers = devices()[name].memory
    for fast, slow in pairwise(tiers):
        assert fast.bandwidth.si > slow.bandwidth.si, f"{name}: {fast.name} before {slow.name}"
        assert fast.capacity.si < slow.capacity.si, f"{name}: {fast.name} before {slow.name}"


@pytest.mark.parametrize("name", DEVICES)
def test_device_links_resolve(name):
    spec = devices()[name]
    for link in (spec.scale_up_link, spec.host_link):
        if link is not None:
            assert link in links(), f"{name}: unknown link {link!r}"


@pytest.mark.parametrize("name", NODES)
def test_node_device_and_links_resolve(name):
    node = nodes()[name]
    assert node.device in devices()
    for link in (node.scale_up_link, node.scale_out_link, node.host_link):
        if link is not None:
            assert link in links(), f"{name}: unknown link {link!r}"


def test_required_nodes_exist():
    for name in (
        "dgx-h100",
        "dgx-a100",
        "hgx-h200",
        "tpu-v5e-8",
        "sn40l-8",
        "xeon-2s",
        "epyc-2s",
        "mi300x-8",
        "gaudi2-8",
    ):
        assert get_node(name).name == name
    assert get_node("tpu-v5e-8").devices_per_node == 8
    assert get_node("xeon-2s").devices_per_node == 1


def test_aliases_are_unique_and_do_not_shadow_names():
    seen: dict[str, str] = {name: name for name in devices()}
    for spec in devices().values():
        for alias in spec.aliases:
            key = alias.lower()
            assert seen.get(key, spec.name) == spec.name, f"{alias!r} is ambiguous"
            seen[key] = spec.name


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("H100", "h100-sxm"),
        ("h100-sxm", "h100-sxm"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("  rtx-4090 ", "rtx-4090"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"),
        ("A100", "a100-80gb-sxm"),
        ("a100-80gb", "a100-80gb-sxm"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA L40S", "l40s"),
        ("AMD Instinct MI300X", "mi300x"),
        ("TPU v5 lite", "tpu-v5e"),
        ("Intel Gaudi 2", "gaudi2"),
        ("SambaNova SN40L", "sn40l"),
    ],
)
def test_lookup_is_case_insensitive_and_accepts_aliases(query, name):
    assert get_device(query).name == name


def test_unknown_name_suggests_near_names():
    with pytest.raises(UnknownNameError) as info:
        get_device("h100-sxn")
    assert "h100-sxm" in str(info.value)
    with pytest.raises(UnknownNameError):
        get_link("nvlink9")
    with pytest.raises(UnknownNameError):
        get_node("dgx-z100")


def test_published_dense_figures():
    h100 = get_device("h100-sxm")
    assert h100.peak("bf16") == pytest.approx(989.4e12)
    assert h100.memory_bandwidth == pytest.approx(3.35e12)
    a100 = get_device("a100")
    assert a100.peak("bf16") == pytest.approx(312e12)
    assert a100.memory_bandwidth == pytest.approx(2.039e12)
    assert a100.memory_bytes == pytest.approx(80 * 2**30)  # GPU "GB" are binary
    rtx = get_device("rtx-4090")
    assert rtx.memory_bytes == pytest.approx(24 * 2**30)
    assert rtx.peak("bf16") == pytest.approx(165.2e12)  # fp32 accumulate, not the 330 headline
    h200 = get_device("h200")
    assert h200.memory_bytes == pytest.approx(141 * 2**30)
    assert h200.memory_bandwidth == pytest.approx(4.8e12)
    mi300x = get_device("mi300x")
    assert mi300x.peak("bf16") == pytest.approx(1307.4e12)
    assert get_device("tpu-v5e").peak("bf16") == pytest.approx(197e12)
    sn40l = get_device("sn40l")
    assert [t.name for t in sn40l.memory] == ["sram", "hbm", "ddr"]
    assert sn40l.main_memory == "hbm"
    assert get_link("nvlink4").bandwidth.si == pytest.approx(450e9)
    assert get_link("infiniband-ndr").bandwidth.si == pytest.approx(50e9)


@pytest.mark.parametrize("name", [n for n in DEVICES if devices()[n].family == "gpu"])
def test_gpu_ridge_point_is_plausible(name):
    spec = devices()[name]
    ridge = spec.peak("bf16") / spec.memory_bandwidth
    assert 50 <= ridge <= 1000, f"{name}: ridge point {ridge:.0f} FLOP/byte"
    assert spec.arch["sm_count"].si > 0


@pytest.mark.parametrize("name", DEVICES)
def test_lower_precisions_are_not_slower(name):
    peaks = devices()[name].peak_flops
    if "fp8" in peaks:
        assert peaks["fp8"].si >= peaks["bf16"].si
    if "int8" in peaks and "bf16" in peaks:
        assert peaks["int8"].si >= peaks["bf16"].si


@pytest.mark.parametrize("name", [n for n in DEVICES if devices()[n].family == "cpu"])
def test_cpu_peak_matches_its_derivation(name):
    spec = devices()[name]
    arch = {k: q.si for k, q in spec.arch.items()}
    derived = (
        arch["sockets"]
        * arch["cores_per_socket"]
        * arch["clock"]
        * arch["flops_per_cycle_per_core"]
    )
    assert spec.peak("bf16") == pytest.approx(derived, rel=0.01)
    assert [t.name for t in spec.memory] == ["llc", "ddr5"]
    assert spec.main_memory == "ddr5"
    assert arch["numa_nodes"] >= 1


@pytest.mark.parametrize("name", [n for n in DEVICES if devices()[n].family == "fpga"])
def test_fpga_peak_matches_its_derivation(name):
    spec = devices()[name]
    arch = {k: q.si for k, q in spec.arch.items()}
    derived = arch["dsp_count"] * arch["clock"] * arch["flops_per_cycle_per_dsp"]
    assert spec.peak("bf16") == pytest.approx(derived, rel=0.01)


@pytest.mark.parametrize("name", [n for n in DEVICES if devices()[n].family == "tpu"])
def test_tpu_peak_matches_its_mxus(name):
    spec = devices()[name]
    arch = {k: q.si for k, q in spec.arch.items()}
    derived = arch["mxu_count"] * arch["mxu_dim"] ** 2 * 2 * arch["clock"]
    assert spec.peak("bf16") == pytest.approx(derived, rel=0.01)
    assert links()[spec.scale_up_link].kind == "ici"


# --- user device files -------------------------------------------------------------------


def _good_device() -> dict:
    folder = resources.files("infersim.hardware") / "data" / "devices"
    return yaml.safe_load(folder.joinpath("h100-sxm.yaml").read_text())


def _write(tmp_path, data) -> str:
    path = tmp_path / "my-device.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_good_user_device_file_loads(tmp_path):
    data = _good_device()
    data["name"] = "my-h100"
    assert load_device_file(_write(tmp_path, data)).name == "my-h100"


def test_wrong_unit_names_file_and_field(tmp_path):
    data = _good_device()
    data["power"]["unit"] = "GB"  # a known unit, wrong dimension
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    assert path in str(info.value) and "power" in str(info.value)


def test_unknown_unit_names_file_and_field(tmp_path):
    data = _good_device()
    data["peak_flops"]["bf16"]["unit"] = "TFLOPS"
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    message = str(info.value)
    assert path in message and "peak_flops.bf16" in message and "TFLOP/s" in message


def test_missing_field_names_file_and_field(tmp_path):
    data = _good_device()
    del data["price_per_hour"]
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    assert path in str(info.value) and "price_per_hour" in str(info.value)


def test_unknown_key_names_file_and_key(tmp_path):
    data = _good_device()
    data["memory_bandwith"] = 3
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    assert path in str(info.value) and "memory_bandwith" in str(info.value)


def test_missing_source_is_rejected(tmp_path):
    data = _good_device()
    data["power"]["source"] = "  "
    with pytest.raises(ConfigError, match="source"):
        load_device_file(_write(tmp_path, data))


def test_main_memory_must_name_a_tier(tmp_path):
    data = _good_device()
    data["main_memory"] = "hbm9"
    with pytest.raises(ConfigError, match="main_memory"):
        load_device_file(_write(tmp_path, data))


def test_missing_device_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_device_file(tmp_path / "nope.yaml")
