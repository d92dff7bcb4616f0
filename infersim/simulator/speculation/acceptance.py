"""Acceptance models: how many of a verify's drafts the target accepts.

Each model gives every request a per-position vector a_i = P(the first i drafts are all
accepted), i = 1..k_max (its class's, for ``classes``), and draws the tokens a verify of K
drafts emits, N in 1..K+1, from P(N = j) = a_(j-1) - a_j (a_0 = 1, a_(K+1) = 0; DESIGN.md).
A draw uses one uniform u from the model's own seeded stream: N = 1 + #{i <= K : u < a_i},
which has exactly that distribution because a_i does not increase. Trees use the same rule
with the tree's a_t (``DraftTree.position_acceptance``).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infersim.errors import ConfigError
from infersim.registry import Registry
from infersim.simulator.request import Request
from infersim.simulator.speculation.config import AcceptanceConfig
from infersim.workloads import stream_rng

ACCEPT_STREAM = 0x53504543  # "SPEC": uniforms of the accept/reject draws
CLASS_STREAM = 0x53504543 + 1  # each request's acceptance class
REPLAY_STREAM = 0x53504543 + 2  # where a replay starts in its recorded counts
_CHUNK = 4096

ACCEPTANCE_MODELS: Registry[type[AcceptanceModel]] = Registry("acceptance model")
register = ACCEPTANCE_MODELS.register


def make_acceptance(cfg: AcceptanceConfig, k_max: int, seed: int,
                    base_dir: Path | None = None) -> AcceptanceModel:
    return ACCEPTANCE_MODELS.lookup(cfg.model)(cfg, k_max, seed, base_dir)


class Uniforms:
    """Uniforms in [0, 1) from one seeded stream, drawn in chunks (same sequence whatever
    the chunking)."""

    def __init__(self, seed: int, stream: int) -> None:
        self._rng = stream_rng(seed, stream)
        self._buf = np.empty(0)
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(_CHUNK)
            self._i = 0
        u = self._buf[self._i]
        self._i += 1
        return float(u)


def count_accepted(neg_a: Sequence[float], k: int, u: float) -> int:
    """Drafts accepted (0..k) for uniform ``u``: #{i <= k : u < a_i}, with ``neg_a`` the
    vector negated (ascending, for bisect)."""
    return bisect_left(neg_a, -u, 0, min(k, len(neg_a)))


class AcceptanceModel:
    """Per-request acceptance vectors (``vector``, by class) and seeded draws of the
    tokens one verify emits (``draw``)."""

    name = "base"

    def __init__(self, cfg: AcceptanceConfig, k_max: int, seed: int,
                 base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.k_max = k_max
        self.uniforms = Uniforms(seed, ACCEPT_STREAM)
        self.class_names: tuple[str, ...] = ("all",)
        self._vectors: list[np.ndarray] = []  # per class, length k_max (zeros past the end)
        self._neg: list[list[float]] = []

    def _set_vectors(self, vectors: list[Sequence[float]]) -> None:
        out = []
        for v in vectors:
            a = np.zeros(self.k_max)
            v = np.asarray(v, dtype=np.float64)[:self.k_max]
            a[:len(v)] = v
            out.append(a)
        self._vectors = out
        self._neg = [(-a).tolist() for a in out]

    def class_of(self, req: Request) -> int:
        return 0

    def vector(self, cls: int) -> np.ndarray:
        """a_1..a_kmax of class ``cls`` (read only)."""
        return self._vectors[cls]

    def draw(self, req: Request, k: int) -> int:
        """Tokens a verify of ``k`` drafts of ``req`` emits: 1..k+1."""
        return 1 + count_accepted(self._neg[self.class_of(req)], k, self.uniforms.next())


@register("rate")
class RateAcceptance(AcceptanceModel):
    """A constant per-token rate a: a_i = a^i, E[N] = (1 - a^(K+1)) / (1 - a)."""

    def __init__(self, cfg, k_max, seed, base_dir=None) -> None:
        super().__init__(cfg, k_max, seed, base_dir)
        self._set_vectors([cfg.rate ** np.arange(1, k_max + 1)])


@register("vector")
class VectorAcceptance(AcceptanceModel):
    """A measured per-position vector a_i (e.g. vLLM's per-position acceptance);
    positions past its end are never accepted. E[N] = 1 + sum_(i<=K) a_i."""

    def __init__(self, cfg, k_max, seed, base_dir=None) -> None:
        super().__init__(cfg, k_max, seed, base_dir)
        self._set_vectors([cfg.vector])


@register("classes")
class ClassAcceptance(AcceptanceModel):
    """Each request belongs to one class (drawn with the classes' shares from its own
    stream, by request id, so the assignment depends on the seed only), with the class's
    rate or vector."""

    def __init__(self, cfg, k_max, seed, base_dir=None) -> None:
        super().__init__(cfg, k_max, seed, base_dir)
        self.class_names = tuple(c.name for c in cfg.classes)
        self._set_vectors([c.rate ** np.arange(1, k_max + 1) if c.rate is not None
                           else c.vector for c in cfg.classes])
        shares = np.array([c.share for c in cfg.classes], dtype=np.float64)
        self._cdf = np.cumsum(shares / shares.sum())
        self._cdf[-1] = 1.0
        self._rng = stream_rng(seed, CLASS_STREAM)
        self._of = np.empty(0, dtype=np.int64)

    def class_of(self, req: Request) -> int:
        rid = req.id
        if rid >= len(self._of):
            grow = max(rid + 1 - len(self._of), _CHUNK)
            draws = np.searchsorted(self._cdf, self._rng.random(grow), side="right")
            self._of = np.concatenate((self._of, np.minimum(draws, len(self._cdf) - 1)))
        return int(self._of[rid])


class TreeAcceptance(AcceptanceModel):
    """Trees: no per-request vector (the tree's own a_t apply, drawn by the speculator
    with :func:`count_accepted` on this model's uniforms); one class."""

    name = "tree"

    def __init__(self, seed: int) -> None:
        super().__init__(None, 0, seed)
        self._set_vectors([()])


def read_counts(path: Path) -> tuple[int, ...]:
    """Accepted-draft counts from a text file: integers separated by commas, spaces or new
    lines; ``#`` starts a comment; a first line that is not a number is a header."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("speculation.acceptance.path", str(path),
                          f"cannot be read: {exc.strerror}") from None
    counts = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        for item in filter(None, re.split(r"[,\s]+", line)):
            try:
                value = int(item)
            except ValueError:
                if n == 1 and not counts:
                    break  # a header
                raise ConfigError("speculation.acceptance.path", f"{path}:{n}",
                                  f"{item!r} is not an integer count") from None
            if value < 0:
                raise ConfigError("speculation.acceptance.path", f"{path}:{n}",
                                  "counts must be >= 0")
            counts.append(value)
    if not counts:
        raise ConfigError("speculation.acceptance.path", str(path), "holds no counts")
    return tuple(counts)


@register("replay")
class ReplayAcceptance(AcceptanceModel):
    """Recorded accepted-draft counts (e.g. from vLLM's spec-decode metrics), one per
    verify, replayed in order from a seeded start, cyclically: a verify of K drafts emits
    min(count, K) + 1. The vector the policies predict with is the record's empirical
    a_i = P(count >= i). K may not exceed ``recorded_k`` (what happens past it is not in
    the record)."""

    def __init__(self, cfg, k_max, seed, base_dir=None) -> None:
        super().__init__(cfg, k_max, seed, base_dir)
        if cfg.path is not None:
            path = cfg.path if cfg.path.is_absolute() or base_dir is None \
                else base_dir / cfg.path
            counts = read_counts(path)
        else:
            counts = cfg.counts
        recorded = cfg.recorded_k or max(max(counts), 1)
        if max(counts) > recorded:
            raise ConfigError("speculation.acceptance.recorded_k", recorded,
                              f"a recorded count ({max(counts)}) exceeds it")
        if k_max > recorded:
            raise ConfigError("speculation.k", k_max, f"the replayed counts were recorded "
                              f"with {recorded} drafts per verify; use k <= {recorded}")
        self.counts = np.asarray(counts, dtype=np.int64)
        hist = np.bincount(self.counts, minlength=recorded + 1)
        at_least = 1.0 - np.cumsum(hist)[:-1] / len(self.counts)  # P(count >= i), i = 1..
        self._set_vectors([at_least])
        self._pos = int(stream_rng(seed, REPLAY_STREAM).integers(len(self.counts)))

    def draw(self, req: Request, k: int) -> int:
        count = int(self.counts[self._pos])
        self._pos = (self._pos + 1) % len(self.counts)
        return 1 + min(count, k)
