"""A piecewise-linear LOWER envelope of ``CostModel.step_time`` for the schedule model.

A step is reduced to four features, all linear in the CP-SAT model's variables:

- ``T`` tokens computed (sum of q),
- ``N`` sequences in the step,
- ``K`` KV tokens read (sum of k + q over its sequences: the attention reads),
- ``S`` sequences that sample a token.

The envelope is the maximum of a few affine pieces ``alpha + beta T + gamma N + delta K +
eps S`` (``beta..delta >= 0``, ``eps = 0``): the engine computes the LM head on a row of
every sequence, partial prompt chunks too, as vLLM V1 does, so a step's time does not depend
on how many of its sequences emit a token, and ``gamma`` carries the LM head's rows (when
only emitting rows paid, a step that emitted nothing skipped the LM head's weight read, a
fixed cost no term linear in S follows: the pieces sat 4.7% below the cost model on average
where they now sit 0.8%). Each piece is fitted by a linear program on a sample of step
shapes in the instance's range: maximise the piece's sum over the samples of its own token
range (tight there) subject to staying at or below the cost model on EVERY sample (valid
everywhere sampled). A maximum of pieces that each lie below the cost model lies below it
too, so an optimum under the envelope is a lower bound on the optimum under the cost model
(as far as the samples cover the shapes a schedule can form: a held-out sample and every step
of every replayed schedule are checked, and violations are reported, never hidden).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from infersim.costmodels import BatchShape, CostModel
from infersim.errors import SolverError

FEATURES = ("tokens", "seqs", "kv_read", "sampled")


def shape_features(batch: BatchShape) -> np.ndarray:
    """(T, N, K, S) of a step (arrays broadcast for vectorised decode runs)."""
    k = (np.asarray(batch.decode_context) + batch.decode_seqs + batch.prefill_context
         + batch.prefill_tokens)
    return np.broadcast_arrays(np.asarray(batch.num_tokens, dtype=np.float64),
                               np.asarray(batch.num_seqs, dtype=np.float64),
                               np.asarray(k, dtype=np.float64),
                               np.asarray(batch.sampled, dtype=np.float64))


@dataclass(frozen=True)
class EnvelopeFit:
    """How well the envelope follows the cost model: relative error (cost - envelope) / cost
    over the fit samples and a held-out sample; ``violations``: held-out shapes where the
    envelope exceeds the cost model (by more than 1e-9 relative), which would weaken the
    bound's validity there."""

    samples: int
    max_rel_error: float
    mean_rel_error: float
    holdout_samples: int
    holdout_max_rel_error: float
    holdout_mean_rel_error: float
    holdout_violations: int
    holdout_max_violation: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StepEnvelope:
    """``pieces``: one row (alpha [s], beta [s/token], gamma [s/seq], delta [s/KV token],
    eps [s/sampled]) per affine piece; step time = max over pieces, 0 for an empty step."""

    pieces: np.ndarray
    fit: EnvelopeFit | None = field(default=None, compare=False)
    ranges: dict = field(default_factory=dict, compare=False)

    def seconds(self, tokens, seqs, kv_read, sampled) -> np.ndarray | float:
        z = np.stack(np.broadcast_arrays(np.ones_like(np.asarray(tokens, dtype=float)),
                                         tokens, seqs, kv_read, sampled), axis=-1)
        value = np.max(z @ self.pieces.T, axis=-1)
        value = np.where(np.asarray(tokens) > 0, np.maximum(value, 0.0), 0.0)
        return float(value) if value.ndim == 0 else value

    def step_time(self, batch: BatchShape):
        return self.seconds(*shape_features(batch))

    def to_dict(self) -> dict:
        return {"features": ["1", *FEATURES],
                "pieces": [[float(v) for v in row] for row in self.pieces],
                "fit": self.fit.to_dict() if self.fit else None, "ranges": dict(self.ranges)}


class LinearizedCost(CostModel):
    """A cost model whose steps take the envelope's time: replays under it reproduce the
    schedule model's objective. Shares everything else (model, placement, memory plan) with
    the cost model it was fitted on."""

    def __init__(self, base: CostModel, envelope: StepEnvelope) -> None:  # no super(): a view
        self.__dict__.update(base.__dict__)
        self.base = base
        self.envelope = envelope

    def step_time(self, batch: BatchShape):
        return self.envelope.step_time(batch)


# --- sampling the cost model -----------------------------------------------------------------
@dataclass(frozen=True)
class ShapeRange:
    """The step shapes a schedule of an instance can form."""

    max_tokens: int  # per step: min(budget, sum of sequence lengths)
    max_seqs: int  # min(max_num_seqs, requests)
    max_len: int  # longest sequence (prompt + output - 1)
    max_kv: int  # min(KV capacity, sum of sequence lengths)


def _random_shape(rng: np.random.Generator, r: ShapeRange) -> BatchShape:
    """A random step: some decodes (q = 1) and some prefill chunks (q >= 2) within the token
    budget, contexts within the longest sequence and the KV capacity. Counts are drawn
    log-uniform or uniform (even odds), so that both small steps and many-chunk steps near
    the budget are well covered."""
    spread = rng.uniform() < 0.5
    n = (int(rng.integers(1, r.max_seqs + 1)) if spread else
         int(np.clip(round(np.exp(rng.uniform(0, np.log(r.max_seqs + 1)))), 1, r.max_seqs)))
    n_pre = int(rng.integers(0, n + 1)) if r.max_tokens >= 2 and r.max_len >= 2 else 0
    n_pre = min(n_pre, r.max_tokens // 2)
    n_dec = min(n - n_pre, r.max_tokens - 2 * n_pre)
    if n_dec + n_pre == 0:
        n_dec = 1
    q = np.ones(n_dec + n_pre, dtype=np.int64)
    room = r.max_tokens - n_dec
    if n_pre:
        total = (int(rng.integers(2 * n_pre, room + 1)) if spread else
                 int(np.exp(rng.uniform(np.log(2 * n_pre), np.log(room + 1)))))
        total = int(np.clip(total, 2 * n_pre, room))
        extra = rng.multinomial(total - 2 * n_pre, rng.dirichlet(np.ones(n_pre)))
        q[n_dec:] = np.minimum(2 + extra, max(r.max_len, 2))
    room_kv = max(r.max_kv - int(q.sum()), 0)
    k = rng.uniform(0, 1, len(q)) * np.maximum(r.max_len - q, 0)
    if k.sum() > 0:
        k = np.floor(k * min(1.0, rng.uniform(0, 1) ** 2 * room_kv / k.sum()))
    return BatchShape.from_sequences(q, k.astype(np.int64))


def sample_shapes(r: ShapeRange, count: int, seed: int) -> list[BatchShape]:
    """Random steps in range ``r`` plus a structured grid: one prefill chunk of every size
    on a log-dense grid, at every multiple of 8 tokens (CUDA-graph capture sizes) and one
    past every multiple of 16 also split evenly into 2, 4, ... sequences (empty and full
    context), and decode batches of every width with short and long contexts. Every
    sequence has an LM head row, as in the engine's steps."""
    rng = np.random.default_rng([seed, 0x5C4ED])
    shapes = [_random_shape(rng, r) for _ in range(count)]
    eights = np.concatenate([np.arange(0, r.max_tokens + 1, 8)[1:],
                             np.arange(0, r.max_tokens + 1, 16)[1:] + 1])
    grid = np.unique(np.concatenate([np.arange(1, min(r.max_tokens, 64) + 1),
                                     np.geomspace(1, r.max_tokens, 400).astype(np.int64),
                                     eights]))
    grid = grid[(grid >= 1) & (grid <= r.max_tokens)]
    widths = np.unique(np.minimum(2 ** np.arange(1, 12), r.max_seqs))
    for t in grid:
        t = int(t)
        for n in [1, *(int(w) for w in widths if t in eights and 2 <= 2 * w <= t)]:
            q = np.full(n, t // n) + (np.arange(n) < t % n)
            for ctx in (0, max(min(r.max_len, r.max_kv // n) - int(q.max()), 0)):
                shapes.append(BatchShape.from_sequences(q, np.full(n, ctx)))
    for n in np.unique(np.geomspace(1, r.max_seqs, 64).astype(np.int64)):
        n = int(n)
        for ctx in (0, max(min(r.max_len, r.max_kv // n) - 1, 0)):
            if n <= r.max_tokens:
                shapes.append(BatchShape.uniform(n, 1, ctx))
    return shapes


def _features(shapes: list[BatchShape]) -> np.ndarray:
    rows = [[1.0, b.num_tokens, b.num_seqs,
             b.decode_context + b.decode_seqs + b.prefill_context + b.prefill_tokens,
             b.sampled] for b in shapes]
    return np.asarray(rows, dtype=np.float64)


def _piece_edges(max_tokens: int) -> list[tuple[float, float]]:
    edges = [1, 16, 128, 512, 2048, 8192, 1 << 30]
    cut = [e for e in edges if e < max_tokens] + [max_tokens + 1]
    return [(float(a), float(b)) for a, b in itertools.pairwise(cut)]


def _fit_pieces(z: np.ndarray, f: np.ndarray, max_tokens: int) -> np.ndarray:
    from scipy.optimize import linprog

    scale = np.maximum(z.max(axis=0), 1.0)  # column scaling keeps the LP well conditioned
    zs = z / scale
    bounds = [(None, None)] + [(0, None)] * (z.shape[1] - 2) + [(0, 0)]  # eps = 0
    pieces = []
    for lo, hi in _piece_edges(max_tokens):
        mask = (z[:, 1] >= lo) & (z[:, 1] < hi)
        if not mask.any():
            continue
        res = linprog(-zs[mask].sum(axis=0), A_ub=zs, b_ub=f, bounds=bounds, method="highs")
        if res.status != 0:
            raise SolverError(f"fitting the step-time envelope failed: {res.message}")
        pieces.append(res.x / scale)
    p = np.asarray(pieces)
    over = (z @ p.T - f[:, None]).max(axis=0)  # LP tolerances: shift each piece below
    p[:, 0] -= np.maximum(over, 0.0) + 1e-12
    p = np.unique(p, axis=0)  # ranges may share a piece
    keep = np.unique((z @ p.T).argmax(axis=1))  # drop pieces that are never the maximum
    return p[keep]


def fit_envelope(cost: CostModel, r: ShapeRange, samples: int = 3000, seed: int = 0,
                 rounds: int = 10, margin: float = 0.002) -> StepEnvelope:
    """Fit the pieces (one per token range: 1-15, 16-127, 128-511, 512-2047, ...) by linear
    programming on ``samples`` random shapes plus a structured grid, then, for ``rounds``
    fresh random batches, add the shapes the envelope exceeds and refit (every round runs:
    such shapes are rare, and a batch without one does not show there are none left);
    scale the pieces down by ``margin`` (a safety margin for shapes never sampled); finally
    check on a held-out batch the fit never saw."""
    shapes = sample_shapes(r, samples, seed)
    z = _features(shapes)
    f = np.asarray([cost.step_time(b) for b in shapes], dtype=np.float64)
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise SolverError("the cost model returned a non-positive or non-finite step time; "
                          "cannot linearise it")
    p = _fit_pieces(z, f, r.max_tokens)
    rng = np.random.default_rng([seed, 0x5C4EE])
    for _ in range(rounds):
        extra = [_random_shape(rng, r) for _ in range(samples)]
        ze = _features(extra)
        fe = np.asarray([cost.step_time(b) for b in extra], dtype=np.float64)
        bad = (ze @ p.T).max(axis=1) > fe
        if bad.any():
            z, f = np.vstack([z, ze[bad]]), np.concatenate([f, fe[bad]])
            p = _fit_pieces(z, f, r.max_tokens)
    p = p * (1.0 - margin)
    env = (z @ p.T).max(axis=1)
    rel = (f - env) / f
    hold_rng = np.random.default_rng([seed, 0x401D])
    hold = [_random_shape(hold_rng, r) for _ in range(samples)]
    zh = _features(hold)
    fh = np.asarray([cost.step_time(b) for b in hold], dtype=np.float64)
    relh = (fh - (zh @ p.T).max(axis=1)) / fh
    viol = relh < -1e-9
    fit = EnvelopeFit(len(f), float(rel.max()), float(rel.mean()), len(hold),
                      float(relh.max()), float(relh.mean()), int(viol.sum()),
                      float(-relh.min()) if viol.any() else 0.0)
    return StepEnvelope(p, fit, {"max_tokens": r.max_tokens, "max_seqs": r.max_seqs,
                                 "max_len": r.max_len, "max_kv": r.max_kv})
