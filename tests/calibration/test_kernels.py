"""Single-kernel predictions (what calibration compares with) cost exactly what the same
operator costs inside a step, so a fitted parameter moves whole-step predictions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from infersim.costmodels import BatchShape, CostModel, Placement
from infersim.costmodels.kernels import KernelModel, gemm_time, roofline_for
from infersim.costmodels.params import resolve_params
from infersim.costmodels.work import overlapped
from infersim.hardware import Quantity, get_device
from infersim.models import get_model


def one_layer(name: str):
    m = get_model(name)
    return replace(m, num_layers=1, mixers=("attention",), mlps=("dense",))


def eager(device_name: str):
    """A catalog device with graph capture off (calibration kernels run eager)."""
    dev = get_device(device_name)
    eff = dict(dev.efficiency)
    eff["graph_max_tokens"] = Quantity(value=0, unit="tokens", source="test", grade="D")
    return dev.model_copy(update={"efficiency": eff})


def works(cm: CostModel, batch: BatchShape) -> dict:
    return {w.name: w for w in cm.works(batch)}


@pytest.mark.parametrize("device", ["a100-80gb-sxm", "xeon-8480-2s", "tpu-v5e", "sn40l"])
@pytest.mark.parametrize("tokens", [1, 7, 300, 4096])
def test_gemm_matches_the_step_gemms(device, tokens):
    model = one_layer("llama-3.1-8b")
    dev = eager(device)
    cm = CostModel(model, Placement(dev))
    km = KernelModel(dev, model.weight_dtype)
    w = works(cm, BatchShape.uniform(1, tokens, 0))
    h, q, kv, inter = model.hidden_size, model.q_size, model.kv_size, model.intermediate_size
    shapes = {"qkv_proj": (q + 2 * kv, h), "o_proj": (h, q), "mlp_up": (2 * inter, h),
              "mlp_down": (h, inter)}
    for name, (n, k) in shapes.items():
        expected = w[name].time if not cm.roofline.fused else None
        got = float(km.gemm(tokens, n, k))
        if expected is not None:
            assert got == pytest.approx(expected, rel=1e-12), name
        else:  # fused families charge launches per layer, not per kernel
            core = overlapped(w[name].t_compute, w[name].t_memory, cm.params.overlap)
            assert got == pytest.approx(core + cm.params.kernel_overhead, rel=1e-12), name


@pytest.mark.parametrize("device", ["a100-80gb-sxm", "xeon-8480-2s", "rtx-4090"])
@pytest.mark.parametrize(("seqs", "q", "k"), [(1, 16, 0), (3, 128, 512), (8, 1, 1000),
                                              (64, 1, 4096)])
def test_attention_matches_the_step_attention(device, seqs, q, k):
    model = one_layer("llama-3.1-8b")
    dev = eager(device)
    cm = CostModel(model, Placement(dev))
    km = KernelModel(dev, model.weight_dtype)
    w = works(cm, BatchShape.uniform(seqs, q, k))
    heads, kvh, d = model.num_heads, model.num_kv_heads, model.head_dim
    if q == 1:
        got = km.attention_decode(seqs, k, heads, kvh, d)
        assert float(got) == pytest.approx(w["attention_decode"].time, rel=1e-12)
    else:
        got = km.attention_prefill(seqs, q, k, heads, kvh, d)
        assert float(got) == pytest.approx(w["attention_prefill"].time, rel=1e-12)


def test_vectorised_equals_one_by_one():
    km = KernelModel(get_device("xeon-8480-2s"))  # exercises the CPU cache branch
    m = np.array([1, 16, 300, 5000, 20000])
    n, k = 4096, 4096
    together = km.gemm(m, n, k)
    for i, mi in enumerate(m):
        assert together[i] == float(km.gemm(int(mi), n, k))
    assert float(km.gemm(0, n, k)) == 0.0


def test_gemm_time_is_the_roofline_formula():
    dev = get_device("h100-sxm")
    roof = roofline_for(dev)
    p = resolve_params(dev)
    m, n, k = 128, 4096, 4096
    expected = overlapped(roof.gemm(m, n, k, p.gemm_efficiency),
                          roof.memory(n * k * 2.0, (m * k + m * n) * 2.0), p.overlap)
    assert gemm_time(dev, m, n, k) == pytest.approx(expected + p.kernel_overhead, rel=1e-15)


def test_new_parameters_move_kernels_and_whole_steps_alike():
    """decode_attention_efficiency, elementwise_efficiency and attention_overhead (added
    for calibration) act on the step the way they act on the single kernel."""
    model = one_layer("llama-3.2-1b")
    base = eager("xeon-8480-2s")
    slow = base.model_copy(update={"efficiency": {
        **base.efficiency,
        "decode_attention_efficiency": Quantity(value=0.01, unit="1", source="t", grade="C"),
        "elementwise_efficiency": Quantity(value=0.25, unit="1", source="t", grade="C"),
        "attention_overhead": Quantity(value=3.0, unit="1", source="t", grade="C")}})
    batch = BatchShape.uniform(32, 1, 2048)
    w0 = works(CostModel(model, Placement(base)), batch)
    w1 = works(CostModel(model, Placement(slow)), batch)
    assert w1["norm_elementwise"].t_memory == pytest.approx(4 * w0["norm_elementwise"].t_memory)
    assert w1["attention_decode"].t_compute == pytest.approx(
        w0["attention_decode"].t_compute * resolve_params(base).decode_attention_efficiency / 0.01)
    k0, k1 = KernelModel(base), KernelModel(slow)
    e0 = k0.elementwise(1e6, 0.0) - k0.params.kernel_overhead
    e1 = k1.elementwise(1e6, 0.0) - k1.params.kernel_overhead
    assert float(e1) == pytest.approx(4 * float(e0))
    assert w0["attention_decode"].t_overhead > 0
    assert w1["attention_decode"].t_overhead == pytest.approx(3 * w0["attention_decode"].t_overhead)
    assert float(k1.attention_decode(0, 0, 32, 8, 128)) == pytest.approx(
        3 * float(k0.attention_decode(0, 0, 32, 8, 128)))  # an empty call costs its overhead
    # prefill attention keeps its own parameter
    assert w1["qkv_proj"].time == w0["qkv_proj"].time


def test_added_parameters_default_to_the_old_behaviour():
    """Splitting decode attention off, the elementwise parameters and the attention
    overhead changed no uncalibrated prediction: their defaults are the values the shared
    parameters had."""
    from infersim.costmodels.params import FAMILY_DEFAULTS
    from infersim.hardware import devices

    for dev in devices().values():
        p = resolve_params(dev)
        assert p.decode_attention_efficiency == p.attention_efficiency, dev.name
        assert p.elementwise_efficiency == 1.0 and p.elementwise_overhead == 1.0, dev.name
        assert p.attention_overhead == 1.0, dev.name
        assert p.attention_causal_skip == 1.0, dev.name
    assert set(FAMILY_DEFAULTS) >= {"gpu", "cpu", "tpu", "fpga", "npu", "dataflow"}


def test_causal_skip_zero_computes_the_full_square():
    """A kernel that skips no masked pair (PyTorch's CPU SDPA) does q x (k + q) pairs."""
    dev = get_device("xeon-8480-2s")
    full = dev.model_copy(update={"efficiency": {
        "attention_causal_skip": Quantity(value=0.0, unit="1", source="t", grade="C"),
        "attention_efficiency": Quantity(value=1.0, unit="1", source="t", grade="C"),
        "kernel_overhead": Quantity(value=0.0, unit="s", source="t", grade="C")}})
    km = KernelModel(full)
    b, q, k, heads, d = 2, 512, 1024, 32, 128
    flops = 4.0 * heads * d * b * q * (k + q)
    assert float(km.attention_prefill(b, q, k, heads, 8, d)) == pytest.approx(
        max(flops / km.roof.peak, float(km._memory((b * (k + q)) * 2 * 8 * d * 2,
                                                   2 * b * q * heads * d * 2))))
    model = one_layer("llama-3.1-8b")
    shape = BatchShape.uniform(b, q, k)
    w = works(CostModel(model, Placement(full)), shape)
    assert w["attention_prefill"].flops == pytest.approx(
        4.0 * model.q_size * b * q * (k + q))


@pytest.mark.parametrize(("name", "value"), [("attention_causal_skip", 1.5),
                                             ("attention_causal_skip", -0.1),
                                             ("elementwise_overhead", -1.0),
                                             ("attention_overhead", -1.0),
                                             ("decode_attention_efficiency", 0.0),
                                             ("elementwise_efficiency", 2.0)])
def test_new_parameters_are_range_checked(name, value):
    from infersim.errors import ConfigError

    dev = get_device("a100").model_copy(update={"efficiency": {
        name: Quantity(value=value, unit="1", source="t", grade="C")}})
    with pytest.raises(ConfigError, match=name):
        resolve_params(dev)
