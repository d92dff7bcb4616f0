"""What one engine step computes, reduced to the aggregates the cost model needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import numpy as np

from infersim.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BatchShape:
    """Aggregates of a step's sequences. A sequence computes q new tokens on top of k cached
    ones; q == 1 is a decode, q > 1 a prefill chunk (or a speculative verify). Attention work
    needs only sums: sum q*k and sum q(q+1)/2 (causal), and KV reads sum (k + q)."""

    decode_seqs: int = 0
    decode_context: int = 0  # sum of k over decode sequences
    prefill_seqs: int = 0
    prefill_tokens: int = 0  # sum of q over prefill sequences
    prefill_context: int = 0  # sum of k over prefill sequences
    prefill_qk: float = 0.0  # sum of q * k
    prefill_qq: float = 0.0  # sum of q * (q + 1) / 2
    sampled: int = 0  # LM head rows (vLLM V1: one per sequence, partial prefills too)

    @property
    def num_seqs(self) -> int:
        return self.decode_seqs + self.prefill_seqs

    @property
    def num_tokens(self) -> int:
        return self.decode_seqs + self.prefill_tokens

    @property
    def is_empty(self) -> bool:
        return self.num_tokens == 0

    def __add__(self, other: BatchShape) -> BatchShape:
        return BatchShape(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @classmethod
    def from_sequences(cls, q, k, sampled=None) -> BatchShape:
        """From per-sequence new tokens ``q`` and cached tokens ``k`` (array-likes);
        ``sampled`` is a boolean mask of sequences that emit a token (default: all)."""
        q = np.asarray(q, dtype=np.int64)
        k = np.asarray(k, dtype=np.int64)
        if q.shape != k.shape or np.any(q < 1) or np.any(k < 0):
            raise ConfigError("batch", (q.tolist(), k.tolist()), "need q >= 1, k >= 0, same length")
        dec = q == 1
        pre = ~dec
        qp, kp = q[pre].astype(np.float64), k[pre].astype(np.float64)
        n_sampled = len(q) if sampled is None else int(np.count_nonzero(sampled))
        return cls(
            decode_seqs=int(dec.sum()),
            decode_context=int(k[dec].sum()),
            prefill_seqs=int(pre.sum()),
            prefill_tokens=int(q[pre].sum()),
            prefill_context=int(k[pre].sum()),
            prefill_qk=float((qp * kp).sum()),
            prefill_qq=float((qp * (qp + 1) / 2).sum()),
            sampled=n_sampled,
        )

    @classmethod
    def uniform(cls, seqs: int, q: int, k: int, sampled: bool = True) -> BatchShape:
        """``seqs`` identical sequences of ``q`` new tokens on ``k`` cached ones."""
        if seqs < 1 or q < 1 or k < 0:
            raise ConfigError("batch", (seqs, q, k), "need sequences >= 1, q >= 1, k >= 0")
        n_sampled = seqs if sampled else 0
        if q == 1:
            return cls(decode_seqs=seqs, decode_context=seqs * k, sampled=n_sampled)
        return cls(prefill_seqs=seqs, prefill_tokens=seqs * q, prefill_context=seqs * k,
                   prefill_qk=float(seqs * q * k), prefill_qq=seqs * q * (q + 1) / 2,
                   sampled=n_sampled)


_SPEC = re.compile(r"^(prefill|decode|chunk):(\d+)x(\d+)(?:@(\d+))?$")


def parse_batch(spec: str) -> BatchShape:
    """``prefill:BxL`` (B sequences of L new tokens, empty cache), ``decode:BxL`` (B sequences
    of one token on L cached), ``chunk:BxQ@L`` (Q new tokens on L cached, all sampled)."""
    m = _SPEC.match(spec.strip().lower())
    allowed = "expected prefill:BxL, decode:BxL or chunk:BxQ@L with positive integers"
    if not m:
        raise ConfigError("--batch", spec, allowed)
    kind, b, x, at = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    if b < 1 or x < 1 or (kind == "chunk") != (at is not None):
        raise ConfigError("--batch", spec, allowed)
    if kind == "prefill":
        return BatchShape.uniform(b, x, 0)
    if kind == "decode":
        return BatchShape.uniform(b, 1, x)
    return BatchShape.uniform(b, x, int(at))
