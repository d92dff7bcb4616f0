"""Physical sanity of step costs for many models x devices (every family) x batches: no step
beats the compute or memory floor, the breakdown adds up, utilisations are fractions, and
the regimes (memory-bound decode, compute-bound prefill) come out where physics puts them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infersim.costmodels import BatchShape

MODELS = ("llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-30b-a3b", "mamba-2.8b",
          "jamba-v0.1")
DEVICES = ("h100-sxm", "a100-80gb-sxm", "rtx-4090", "mi300x", "tpu-v5e", "xeon-8480-2s", "sn40l",
           "alveo-u55c", "gaudi2")  # every family: gpu, tpu, cpu, dataflow, fpga, npu
GPUS = ("h100-sxm", "h200", "a100-80gb-sxm", "a40", "l40s", "rtx-4090", "mi300x")
BATCHES = {
    "decode-1x1024": ("decode:1x1024",),
    "decode-64x2048": ("decode:64x2048",),
    "prefill-1x2048": ("prefill:1x2048",),
    "mixed": ("chunk:1x512@1024", "decode:32x1500"),  # a prefill chunk with decodes
}
PLACEMENTS = [(m, d, 1, 1) for m in MODELS for d in DEVICES] + [
    ("llama-3.1-70b", "h100-sxm", 4, 1), ("llama-3.1-70b", "tpu-v5e", 8, 1),
    ("mixtral-8x7b", "h100-sxm", 2, 2), ("llama-3.1-8b", "gaudi2", 2, 1),
]
LAYER_GEMMS = ("qkv_proj", "o_proj", "mlp_up", "mlp_down")
REL = 1e-9


def floors(cm, b: BatchShape) -> tuple[float, float]:
    """(compute floor, memory floor) in seconds: all FLOPs at the dense peak of every rank,
    and every byte that must cross main memory at the full bandwidth of every rank. Weights
    and KV always cross it; activations do unless the family keeps them on chip (fused) or
    they fit in a CPU's last-level cache."""
    ranks = cm.placement.ranks
    device = cm.placement.device
    step = cm.step(b)
    compute = step.flops / (device.peak(cm.model.weight_dtype) * ranks)
    llc = cm.roofline.cache_bytes
    main = 0.0
    for w in cm.works(b):
        main += w.weight_bytes
        if not cm.roofline.fused and not w.act_bytes / cm.placement.tp <= llc:
            main += w.act_bytes
    return compute, main / (device.memory_bandwidth * ranks)


def check_step(cm, b: BatchShape) -> None:
    step = cm.step(b)
    assert step.seconds > 0
    compute_floor, memory_floor = floors(cm, b)
    assert step.seconds >= compute_floor * (1 - REL)
    assert step.seconds >= memory_floor * (1 - REL)
    assert cm.step_time(b) == pytest.approx(step.seconds, rel=1e-12)  # same sums, other order
    assert sum(o.time_s for o in step.ops) == pytest.approx(step.seconds, rel=1e-12)
    assert all(o.time_s >= 0 and o.flops >= 0 and o.bytes >= 0 for o in step.ops)
    assert {o.bound for o in step.ops} <= {"compute", "memory", "comm", "overhead"}
    assert 0 < step.mfu <= 1 and 0 < step.mbu <= 1
    if not cm.roofline.fused:  # unfused: every op alone also respects its own roofline
        peak = cm.roofline.peak * cm.placement.ranks
        for o in step.ops:
            assert o.time_s >= o.flops / peak * (1 - REL), o.name


@pytest.mark.parametrize("batch_name", BATCHES)
@pytest.mark.parametrize(("model", "device", "tp", "ep"), PLACEMENTS,
                         ids=[f"{m}-{d}-tp{t}" for m, d, t, _ in PLACEMENTS])
def test_step_respects_floors_and_adds_up(cm, batch, model, device, tp, ep, batch_name):
    check_step(cm(model, device, tp=tp, ep=ep), batch(*BATCHES[batch_name]))


sequences = st.lists(
    st.tuples(st.one_of(st.just(1), st.integers(1, 4096)), st.integers(0, 16_384)),
    min_size=1, max_size=48)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seqs=sequences, placement=st.sampled_from(PLACEMENTS))
def test_random_batches_respect_floors(cm, seqs, placement):
    model, device, tp, ep = placement
    q, k = zip(*seqs, strict=True)
    check_step(cm(model, device, tp=tp, ep=ep), BatchShape.from_sequences(q, k))


@settings(max_examples=40, deadline=None)
@given(seqs=sequences, extra=st.integers(1, 64), device=st.sampled_from(DEVICES))
def test_more_work_never_costs_less(cm, seqs, extra, device):
    """Adding decodes to a step (more tokens, more KV) never makes it faster."""
    q, k = zip(*seqs, strict=True)
    b = BatchShape.from_sequences(q, k)
    more = b + BatchShape.uniform(extra, 1, 1000)
    model = cm("llama-3.1-8b", device)
    assert model.step_time(more) >= model.step_time(b) * (1 - 1e-12)


def test_empty_batch_costs_nothing(cm):
    model = cm("llama-3.1-8b", "h100-sxm")
    assert model.step_time(BatchShape()) == 0.0
    assert model.step(BatchShape()).seconds == 0.0 and model.step(BatchShape()).ops == ()


@pytest.mark.parametrize("device", GPUS)
def test_decode_at_batch_1_is_memory_bound_on_gpus(cm, batch, device):
    step = cm("llama-3.1-8b", device).step(batch("decode:1x1024"))
    memory = sum(o.time_s for o in step.ops if o.bound == "memory")
    assert memory > 0.7 * step.seconds
    assert {o.bound for o in step.ops if o.name in LAYER_GEMMS} == {"memory"}
    assert step.mbu > 0.5 and step.mfu < 0.01


@pytest.mark.parametrize("device", GPUS)
def test_prefill_of_an_8b_model_is_compute_bound_on_gpus(cm, batch, device):
    step = cm("llama-3.1-8b", device).step(batch("prefill:1x2048"))
    assert {o.bound for o in step.ops if o.name in LAYER_GEMMS} == {"compute"}
    compute = sum(o.time_s for o in step.ops if o.bound == "compute")
    assert compute > 0.7 * step.seconds
    assert step.mfu > 0.3


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b",
                                   "qwen3-30b-a3b"])
def test_step_flops_match_the_models_flops_per_token(cm, batch, model):
    """A decode step computes one token per sequence: 2 x active parameters plus attention
    over the k + 1 tokens in the cache (ModelSpec.flops_per_token), within 0.5%."""
    m = cm(model, "h100-sxm")
    step = m.step(batch("decode:16x1000"))
    assert step.flops == pytest.approx(16 * m.model.flops_per_token(1001), rel=5e-3)


def test_tensor_parallel_ranks_count_in_the_floors(cm, batch):
    one, four = cm("llama-3.1-70b", "h100-sxm"), cm("llama-3.1-70b", "h100-sxm", tp=4)
    b = batch("decode:8x2048")
    # same GEMM and attention work spread over four devices (norms are replicated per rank,
    # hence not exactly equal); MFU/MBU are per device-second
    assert four.step(b).flops == pytest.approx(one.step(b).flops, rel=1e-3)
    assert four.step(b).seconds < one.step(b).seconds
