"""What each device family adds to the roofline: fused dataflow/FPGA layers and memory tiers,
TPU MXU padding, CUDA-graph capture sizes on GPUs."""

from __future__ import annotations

import pytest

from infersim.costmodels.kernels import gemm_time, roofline_for
from infersim.hardware import get_device

DENSE_OPS = ("qkv_proj", "o_proj", "mlp_up", "mlp_down", "norm_elementwise", "embedding")
GPUS = ("h100-sxm", "a100-80gb-sxm", "rtx-4090", "mi300x", "l40s")


def ops_by_name(step) -> dict:
    return {o.name: o for o in step.ops}


# --- fused families (dataflow, FPGA) ---------------------------------------------------------
@pytest.mark.parametrize("device", ["sn40l", "alveo-u55c"])
def test_fused_families_do_not_count_activations_as_memory_traffic(cm, batch, device):
    fused, gpu = cm("llama-3.1-8b", device), cm("llama-3.1-8b", "h100-sxm")
    b = batch("prefill:1x2048")
    works = {w.name: w for w in fused.works(b)}
    assert all(w.act_bytes > 0 for n, w in works.items() if n in DENSE_OPS)  # they exist...
    for o in fused.step(b).ops:  # ...but the breakdown charges only weights and KV
        assert o.bytes == works[o.name].weight_bytes, o.name
    # the memory time of a GEMM is its weights alone, however many tokens flow through it
    qkv = works["qkv_proj"]
    assert qkv.t_memory == pytest.approx(qkv.weight_bytes / fused.roofline.weight_bw)
    assert fused.roofline.memory(1e9, 1e12) == fused.roofline.memory(1e9, 0.0)
    # same work on a GPU moves the activations too
    on_gpu, on_fused = ops_by_name(gpu.step(b)), ops_by_name(fused.step(b))
    for name in DENSE_OPS:
        assert on_gpu[name].bytes == pytest.approx(on_fused[name].bytes
                                                   + works[name].act_bytes), name


def test_fused_layer_is_max_of_compute_and_memory_not_a_sum_of_maxima(cm, batch):
    """A 2048-token prefill chunk (compute-bound GEMMs) next to 64 long decodes (memory-bound
    KV reads) in one step on an SN40L: the fused layer overlaps the two resources, so the step
    is max(sum compute, sum memory), far below what op-by-op execution would cost."""
    m = cm("llama-3.1-8b", "sn40l")
    b = batch("prefill:1x2048", "decode:64x8192")
    works = m.works(b)
    bounds = {w.name: w.bound for w in works}
    assert bounds["mlp_up"] == "compute" and bounds["attention_decode"] == "memory"
    layer = [w for w in works if w.in_layer]
    rest = [w for w in works if not w.in_layer]
    fused = (max(sum(w.t_compute for w in layer), sum(w.t_memory for w in layer))
             + sum(w.t_comm + w.t_overhead for w in layer) + sum(w.time for w in rest))
    unfused = sum(w.time for w in works)  # each op bound by its own slower resource
    step = m.step(b)
    assert step.seconds == pytest.approx(fused, rel=1e-12)
    assert m.step_time(b) == pytest.approx(fused, rel=1e-12)
    assert step.seconds < 0.7 * unfused
    assert sum(o.time_s for o in step.ops) == pytest.approx(step.seconds, rel=1e-12)
    # every in-layer op is charged in the resource that bounds the whole layer
    assert {o.bound for o in step.ops if o.name in ("qkv_proj", "attention_decode")} == {
        "compute"}


def test_unfused_gpu_step_is_the_sum_of_per_op_maxima(cm, batch):
    m = cm("llama-3.1-8b", "h100-sxm")
    b = batch("prefill:1x2048", "decode:64x8192")
    assert m.step(b).seconds == pytest.approx(sum(w.time for w in m.works(b)), rel=1e-12)


def test_sn40l_streams_weights_from_ddr_when_they_exceed_hbm(cm, batch):
    """Llama-3.1-70B (141 GB of bf16 weights) on one SN40L socket (64 GiB HBM) at tp=1 streams
    weights from the 1.5 TB DDR tier (~100 GB/s); Llama-3.1-8B (16 GB) fits in HBM."""
    sn = get_device("sn40l")
    tiers = {t.name: t for t in sn.memory}
    small, big = cm("llama-3.1-8b", "sn40l"), cm("llama-3.1-70b", "sn40l")
    eff = small.params.memory_efficiency
    assert big.model.weight_bytes > tiers["hbm"].capacity.si
    assert small.roofline.weight_bw == pytest.approx(tiers["hbm"].bandwidth.si * eff)
    assert big.roofline.weight_bw == pytest.approx(tiers["ddr"].bandwidth.si * eff)
    b = batch("decode:1x1024")
    seconds = big.step_time(b)
    assert seconds >= big.model.weight_bytes * 0.9 / tiers["ddr"].bandwidth.si  # ~1.3+ s
    # bytes per second achieved: DDR-bound for 70B, HBM-bound for 8B
    rate_big = big.step(b).bytes / seconds
    rate_small = small.step(b).bytes / small.step_time(b)
    assert rate_big < tiers["ddr"].bandwidth.si < rate_small
    # spread over 4 sockets (35 GB each) the weights fit in HBM again
    assert cm("llama-3.1-70b", "sn40l", tp=4).roofline.weight_bw == small.roofline.weight_bw


# --- TPU ---------------------------------------------------------------------------------------
def test_tpu_gemms_pay_for_mxu_padding():
    tpu = roofline_for(get_device("tpu-v5e"))
    eff = tpu.params.gemm_efficiency
    m, k = 4096, 4096
    assert tpu.gemm(m, 129, k, eff) == tpu.gemm(m, 256, k, eff)
    assert tpu.gemm(m, 129, k, eff) == pytest.approx(2 * tpu.gemm(m, 128, k, eff))
    assert tpu.gemm(m, 128, 129, eff) == tpu.gemm(m, 128, 256, eff)  # k pads too
    assert tpu.gemm(1, 128, k, eff) == tpu.gemm(8, 128, k, eff)  # rows pad to 8 sublanes
    # a compute-bound GEMM costs the same end to end
    tpu_dev = get_device("tpu-v5e")
    assert gemm_time(tpu_dev, 16384, 129, 16384) == gemm_time(tpu_dev, 16384, 256, 16384)


def test_gpu_gemms_do_not_pad_to_128():
    gpu = roofline_for(get_device("h100-sxm"))
    eff = gpu.params.gemm_efficiency
    assert gpu.gemm(4096, 129, 4096, eff) == pytest.approx(129 / 256 * gpu.gemm(4096, 256, 4096,
                                                                                eff))


# --- CUDA graphs -------------------------------------------------------------------------------
@pytest.mark.parametrize("device", GPUS)
def test_cuda_graph_pads_decode_batch_to_capture_size(cm, batch, device):
    m = cm("llama-3.1-8b", device)
    assert [m.graph_tokens(n) for n in (1, 2, 3, 4, 5, 9, 257, 512)] == [1, 2, 4, 4, 8, 16,
                                                                          272, 512]
    three, four = ops_by_name(m.step(batch("decode:3x1024"))), ops_by_name(
        m.step(batch("decode:4x1024")))
    for name in DENSE_OPS:
        assert three[name].time_s == four[name].time_s, name
        assert three[name].flops == four[name].flops, name  # the graph computes 4 rows
    # attention and the LM head see only the real sequences
    assert three["attention_decode"].time_s < four["attention_decode"].time_s
    assert three["lm_head"].flops < four["lm_head"].flops


@pytest.mark.parametrize("device", GPUS)
def test_steps_above_512_tokens_run_eagerly(cm, batch, device):
    m = cm("llama-3.1-8b", device)
    assert m.graph_tokens(512) == 512 and m.graph_tokens(513) == 0
    layers = m.model.num_layers
    graphed = {w.name: w for w in m.works(batch("decode:512x1024"))}
    eager = {w.name: w for w in m.works(batch("decode:513x1024"))}
    assert graphed["qkv_proj"].t_overhead == pytest.approx(layers * m.params.graph_kernel_overhead)
    assert eager["qkv_proj"].t_overhead == pytest.approx(layers * m.params.kernel_overhead)
    assert m.params.kernel_overhead > m.params.graph_kernel_overhead
    # a prefill is eager too
    prefill = {w.name: w for w in m.works(batch("prefill:1x2048"))}
    assert prefill["o_proj"].t_overhead == pytest.approx(layers * m.params.kernel_overhead)


@pytest.mark.parametrize("device", ["tpu-v5e", "xeon-8480-2s"])
def test_no_graph_padding_without_graphs(cm, batch, device):
    m = cm("llama-3.1-8b", device)
    assert m.graph_tokens(3) == 0
    three = ops_by_name(m.step(batch("decode:3x1024")))
    four = ops_by_name(m.step(batch("decode:4x1024")))
    assert three["mlp_up"].flops < four["mlp_up"].flops
