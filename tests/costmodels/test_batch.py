"""Batch specs (`--batch`) and BatchShape aggregates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infersim.costmodels import BatchShape, parse_batch
from infersim.errors import ConfigError


@pytest.mark.parametrize(("spec", "expected"), [
    ("decode:64x2048", BatchShape(decode_seqs=64, decode_context=64 * 2048, sampled=64)),
    ("prefill:2x512", BatchShape(prefill_seqs=2, prefill_tokens=1024, prefill_qk=0.0,
                                 prefill_qq=2 * 512 * 513 / 2, sampled=2)),
    ("chunk:1x256@1024", BatchShape(prefill_seqs=1, prefill_tokens=256, prefill_context=1024,
                                    prefill_qk=256.0 * 1024, prefill_qq=256 * 257 / 2,
                                    sampled=1)),
    ("chunk:4x1@100", BatchShape(decode_seqs=4, decode_context=400, sampled=4)),  # q=1 decodes
    ("  Decode:1X1024 ", BatchShape(decode_seqs=1, decode_context=1024, sampled=1)),
    ("prefill:1x1", BatchShape(decode_seqs=1, decode_context=0, sampled=1)),
])
def test_good_specs(spec, expected):
    assert parse_batch(spec) == expected


@pytest.mark.parametrize("spec", [
    "", "decode", "decode:64", "decode:64x", "decode:0x10", "prefill:0x10", "decode:1x0",
    "decode:-1x5", "decode:1.5x2", "decode:2x3x4", "decode 2x3", "gen:1x10", "chunk:1x512",
    "prefill:1x512@10", "decode:1x512@10", "chunk:1x512@", "chunk:1x512@-3", "decode:x10",
])
def test_bad_specs_name_the_option(spec):
    with pytest.raises(ConfigError) as err:
        parse_batch(spec)
    assert err.value.field == "--batch"
    assert "--batch" in str(err.value) and "prefill:BxL" in str(err.value)


def test_batch_properties():
    b = parse_batch("chunk:2x300@100") + parse_batch("decode:5x10")
    assert (b.num_seqs, b.num_tokens, b.is_empty) == (7, 605, False)
    assert BatchShape().is_empty and BatchShape().num_tokens == 0


@pytest.mark.parametrize(("seqs", "q", "k"), [(1, 1, 0), (64, 1, 2048), (3, 512, 0),
                                               (2, 128, 4096)])
def test_from_sequences_agrees_with_uniform(seqs, q, k):
    assert BatchShape.from_sequences([q] * seqs, [k] * seqs) == BatchShape.uniform(seqs, q, k)
    assert BatchShape.from_sequences([q] * seqs, [k] * seqs, sampled=[False] * seqs) == \
        BatchShape.uniform(seqs, q, k, sampled=False)


sequences = st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 100_000)), min_size=1,
                     max_size=30)


@settings(max_examples=100, deadline=None)
@given(a=sequences, b=sequences)
def test_from_sequences_is_additive(a, b):
    qa, ka = zip(*a, strict=True)
    qb, kb = zip(*b, strict=True)
    whole = BatchShape.from_sequences(qa + qb, ka + kb)
    assert whole == BatchShape.from_sequences(qa, ka) + BatchShape.from_sequences(qb, kb)


@settings(max_examples=50, deadline=None)
@given(seqs=sequences)
def test_from_sequences_aggregates(seqs):
    q, k = zip(*seqs, strict=True)
    b = BatchShape.from_sequences(q, k)
    assert b.num_tokens == sum(q) and b.num_seqs == len(q) and b.sampled == len(q)
    assert b.decode_context == sum(kk for qq, kk in seqs if qq == 1)
    assert b.prefill_qk == sum(qq * kk for qq, kk in seqs if qq > 1)
    assert b.prefill_qq == sum(qq * (qq + 1) / 2 for qq, _ in seqs if qq > 1)


@pytest.mark.parametrize(("q", "k"), [([0], [1]), ([1, 2], [3]), ([1], [-1])])
def test_from_sequences_rejects_bad_input(q, k):
    with pytest.raises(ConfigError):
        BatchShape.from_sequences(q, k)


@pytest.mark.parametrize(("seqs", "q", "k"), [(0, 1, 1), (1, 0, 1), (1, 1, -1)])
def test_uniform_rejects_bad_input(seqs, q, k):
    with pytest.raises(ConfigError):
        BatchShape.uniform(seqs, q, k)
