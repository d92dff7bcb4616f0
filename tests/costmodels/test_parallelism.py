"""Tensor parallelism divides the GEMMs and adds collectives."""

from __future__ import annotations

import pytest

LAYER_GEMMS = ("qkv_proj", "o_proj", "mlp_up", "mlp_down")


def gemm_time(step) -> float:
    return sum(o.time_s for o in step.ops if o.name in LAYER_GEMMS)


def op(step, name):
    return next((o for o in step.ops if o.name == name), None)


def test_doubling_tp_halves_gemm_time(cm, batch):
    """Llama-3.1-70B prefill 1x2048 on H100: compute-bound GEMMs split evenly over ranks, so
    each doubling of TP halves their time per rank. Tolerance: within [0.50, 0.52] (the fixed
    per-kernel launch overhead does not shrink with TP; it is ~1% at tp=8)."""
    b = batch("prefill:1x2048")
    t = {tp: gemm_time(cm("llama-3.1-70b", "h100-sxm", tp=tp).step(b)) for tp in (2, 4, 8)}
    for lo, hi in ((2, 4), (4, 8)):
        assert 0.50 <= t[hi] / t[lo] <= 0.52, (lo, hi, t[hi] / t[lo])


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tp_adds_all_reduce(cm, batch, tp):
    b = batch("prefill:1x2048")
    step = cm("llama-3.1-70b", "h100-sxm", tp=tp).step(b)
    ar = op(step, "tp_all_reduce")
    assert ar is not None and ar.comm_bytes > 0 and ar.time_s > 0 and ar.bound == "comm"
    # two all-reduces per layer (after attention and after the MLP) of T x hidden bf16
    # activations, plus the vocab-parallel embedding's; comm_bytes are totals over ranks
    m = cm("llama-3.1-70b", "h100-sxm").model
    message = 2048 * m.hidden_size * 2
    assert ar.comm_bytes == pytest.approx(message * (2 * m.num_layers + 1) * tp)
    gather = op(step, "logits_gather")
    assert gather is not None and gather.comm_bytes > 0 and gather.time_s > 0


def test_all_reduce_time_grows_with_ranks(cm, batch):
    b = batch("prefill:1x2048")
    t = [op(cm("llama-3.1-70b", "h100-sxm", tp=tp).step(b), "tp_all_reduce").time_s
         for tp in (2, 4, 8)]
    assert t[0] < t[1] < t[2]  # ring all-reduce moves 2(p-1)/p of the message


def test_no_collectives_at_tp_1(cm, batch):
    for spec in ("prefill:1x2048", "decode:64x2048"):
        step = cm("llama-3.1-70b", "h100-sxm").step(batch(spec))
        assert step.comm_bytes == 0
        assert not {o.name for o in step.ops} & {"tp_all_reduce", "logits_gather", "pp_send",
                                                "ep_all_to_all"}


def test_pipeline_and_expert_parallelism_add_their_own_traffic(cm, batch):
    b = batch("decode:32x1024")
    pp = cm("llama-3.1-70b", "h100-sxm", pp=2).step(b)
    assert op(pp, "pp_send").comm_bytes > 0 and op(pp, "tp_all_reduce") is None
    ep = cm("mixtral-8x7b", "h100-sxm", tp=2, ep=2).step(b)
    assert op(ep, "ep_all_to_all").comm_bytes > 0
