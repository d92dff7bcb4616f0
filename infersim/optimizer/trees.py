"""Draft trees for speculative decoding: Sequoia's exact dynamic program, the chain special
case, and the choice of tree size against the verify time the cost model predicts.

Conventions (every function here and in ``tree_cpsat`` uses them):

- **Nodes include the root.** The root is the last token the target emitted; the verify step
  runs it together with the drafts, so a tree of ``n`` nodes is verified as ``q = n`` new
  tokens per sequence (a chain of K drafts is a tree of K + 1 nodes, q = K + 1, as in vLLM).
- **Depth counts edges.** The root is at depth 0; a chain of K drafts has depth K. (Sequoia's
  ``max_depth`` counts levels, which is this depth + 1.)
- **Positional acceptance.** ``accept = (p_1, ..., p_K)``: the probability that the k-th
  ranked child of an accepted node is the one the target accepts (Python index k - 1). At most
  one child of a node is accepted, so ``sum(p) <= 1``; the order need not be non-increasing
  (ranks are positions, not values). A rank-k child exists only if its rank k - 1 sibling
  does, as a drafter's top-k children do.
- **Score.** A node's value is the product of p along its path from the root (the root's is 1):
  the probability that the target accepts it. The tree's score, the sum of the values, is the
  expected number of tokens one verify emits, the bonus token included (root-only tree: 1).

Reference check (REFERENCE.md): p = 0.55, 0.15, 0.07, 0.04, 0.02, depth <= 8 gives
n = 8 -> 2.425, 16 -> 2.799, 32 -> 3.133.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache, cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np

from infersim.errors import ConfigError

if TYPE_CHECKING:
    from infersim.costmodels import CostModel

_SUM_TOLERANCE = 1e-9


# --- acceptance vectors ----------------------------------------------------------------------
def check_accept(accept: Iterable[float], field: str = "accept") -> tuple[float, ...]:
    """Validate a positional acceptance vector: each p in (0, 1] and sum(p) <= 1.
    ``field`` names the option in the error (e.g. ``--accept``)."""
    try:
        values = tuple(float(a) for a in accept)
    except (TypeError, ValueError):
        raise ConfigError(field, accept, "expected probabilities in (0, 1], e.g. "
                          "0.55,0.15,0.07") from None
    if not values:
        raise ConfigError(field, values, "give at least one probability")
    bad = [a for a in values if not 0.0 < a <= 1.0]
    if bad:
        raise ConfigError(field, bad[0], "every p_k must be in (0, 1] (drop ranks never "
                          "accepted)")
    if sum(values) > 1.0 + _SUM_TOLERANCE:
        raise ConfigError(field, values, f"sums to {sum(values):.4g}; the ranked children of a "
                          "node are accepted exclusively, so sum(p) <= 1 (a per-position vector "
                          "P(first i drafts accepted) describes a chain: expected_tokens_chain)")
    return values


def chain_acceptance(acceptance: float | Sequence[float], drafts: int | None = None
                     ) -> np.ndarray:
    """Per-position acceptance a_i = P(the first i drafts are all accepted), i = 1..K, of a
    chain of K drafts. A scalar is a constant per-token rate a (a_i = a^i, K = ``drafts``
    required); a sequence is the vector itself (non-increasing, in [0, 1]; K defaults to its
    length and may not exceed it)."""
    if isinstance(acceptance, int | float | np.floating):
        a = float(acceptance)
        if not 0.0 <= a <= 1.0:
            raise ConfigError("acceptance", a, "a per-token rate must be in [0, 1]")
        if drafts is None or drafts < 0:
            raise ConfigError("drafts", drafts, "a scalar rate needs a draft length >= 0")
        return a ** np.arange(1, drafts + 1, dtype=np.float64)
    vec = np.asarray(acceptance, dtype=np.float64).ravel()
    if np.any(~np.isfinite(vec)) or np.any(vec < 0) or np.any(vec > 1):
        raise ConfigError("acceptance", vec.tolist(), "each a_i must be in [0, 1]")
    if np.any(np.diff(vec) > _SUM_TOLERANCE):
        raise ConfigError("acceptance", vec.tolist(), "a_i = P(first i drafts accepted) "
                          "cannot increase with i")
    k = len(vec) if drafts is None else drafts
    if not 0 <= k <= len(vec):
        raise ConfigError("drafts", drafts, f"between 0 and the vector's length {len(vec)}")
    return vec[:k].copy()


def expected_tokens_chain(acceptance: float | Sequence[float], drafts: int | None = None
                          ) -> float:
    """Tokens per verify of a chain of K drafts: E[N] = 1 + sum_i a_i, which for a constant
    per-token rate a is (1 - a^(K+1)) / (1 - a) (K + 1 when a = 1). Arguments as in
    :func:`chain_acceptance`."""
    return 1.0 + float(chain_acceptance(acceptance, drafts).sum())


def emitted_distribution(position_acceptance: Sequence[float]) -> np.ndarray:
    """P(a verify emits j tokens), j = 1..K+1 (element j - 1), from a_i = P(first i drafts
    accepted), i = 1..K: P(N = j) = a_{j-1} - a_j with a_0 = 1, a_{K+1} = 0. Works for trees
    too, with :meth:`DraftTree.position_acceptance`. Its mean is 1 + sum a_i."""
    a = np.concatenate(([1.0], np.asarray(position_acceptance, dtype=np.float64), [0.0]))
    return np.clip(a[:-1] - a[1:], 0.0, None)


def sample_emitted(position_acceptance: Sequence[float], rng: np.random.Generator,
                   size: int | None = None):
    """Draw tokens emitted per verify (1..K+1) from :func:`emitted_distribution`."""
    pmf = emitted_distribution(position_acceptance)
    draws = rng.choice(len(pmf), size=size, p=pmf / pmf.sum()) + 1
    return int(draws) if size is None else draws


# --- the tree --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DraftTree:
    """An ordered rooted tree of draft tokens, immutable. ``parents[i]`` is node i's parent
    (-1 for the root, node 0). Nodes are stored breadth-first with siblings in rank order
    (the constructor relabels any topological order to this canonical one, so equal shapes
    compare equal); a node's rank is its position among its parent's children (0-based here:
    rank index r uses ``accept[r]``)."""

    parents: tuple[int, ...]

    def __post_init__(self) -> None:
        parents = tuple(int(p) for p in self.parents)
        if not parents or parents[0] != -1 or any(not 0 <= p < i
                                                  for i, p in enumerate(parents) if i):
            raise ConfigError("tree.parents", self.parents,
                              "node 0 is the root (-1); every other node's parent comes first")
        children: list[list[int]] = [[] for _ in parents]
        for i, p in enumerate(parents[1:], 1):
            children[p].append(i)
        new_id, order, queue = {0: 0}, [0], deque([0])
        while queue:
            for c in children[queue.popleft()]:
                new_id[c] = len(order)
                order.append(c)
                queue.append(c)
        canonical = tuple(-1 if i == 0 else new_id[parents[i]] for i in order)
        object.__setattr__(self, "parents", canonical)

    # constructors
    @classmethod
    def chain(cls, drafts: int) -> DraftTree:
        """A path of ``drafts`` tokens below the root (K drafts, K + 1 nodes)."""
        return cls(tuple(range(-1, drafts)))

    @classmethod
    def from_paths(cls, paths: Iterable[Sequence[int]]) -> DraftTree:
        """From rank paths (root ``()``, its first child ``(0,)``, that child's second child
        ``(0, 1)``...). The set must be prefix-closed and sibling-closed (``(.., k)`` needs
        ``(.., k - 1)``); the root may be omitted."""
        items = {tuple(int(r) for r in p) for p in paths} | {()}
        for p in items:
            if p and (p[:-1] not in items or (p[-1] > 0 and (*p[:-1], p[-1] - 1) not in items)
                      or p[-1] < 0):
                raise ConfigError("tree.paths", p, "paths must be prefix- and sibling-closed")
        ordered = sorted(items, key=lambda p: (len(p), p))
        index = {p: i for i, p in enumerate(ordered)}
        return cls(tuple(-1 if not p else index[p[:-1]] for p in ordered))

    # structure
    @property
    def size(self) -> int:
        """Nodes, root included (= q of its verify step)."""
        return len(self.parents)

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        kids: list[list[int]] = [[] for _ in self.parents]
        for i, p in enumerate(self.parents[1:], 1):
            kids[p].append(i)
        return tuple(tuple(k) for k in kids)

    @cached_property
    def ranks(self) -> tuple[int, ...]:
        """Each node's 0-based rank among its siblings (root 0)."""
        out = [0] * self.size
        for kids in self.children:
            for r, c in enumerate(kids):
                out[c] = r
        return tuple(out)

    @cached_property
    def depths(self) -> tuple[int, ...]:
        out = [0] * self.size
        for i, p in enumerate(self.parents[1:], 1):
            out[i] = out[p] + 1
        return tuple(out)

    @property
    def depth(self) -> int:
        """Longest path in edges (drafts on it); also the draft passes a level-wise drafter
        needs."""
        return self.depths[-1]

    @cached_property
    def widths(self) -> tuple[int, ...]:
        """Nodes at each depth 0..depth (widths[0] = 1, the root)."""
        return tuple(int(w) for w in np.bincount(self.depths))

    @cached_property
    def paths(self) -> tuple[tuple[int, ...], ...]:
        """Each node's rank path from the root (the root's is ``()``)."""
        out: list[tuple[int, ...]] = [()]
        for i, p in enumerate(self.parents[1:], 1):
            out.append((*out[p], self.ranks[i]))
        return tuple(out)

    # acceptance
    def values(self, accept: Sequence[float]) -> np.ndarray:
        """Each node's probability of being accepted: the product of p along its path
        (ranks beyond ``accept`` have p = 0)."""
        p = np.asarray(accept, dtype=np.float64)
        vals = np.empty(self.size)
        vals[0] = 1.0
        for i, parent in enumerate(self.parents[1:], 1):
            r = self.ranks[i]
            vals[i] = vals[parent] * (p[r] if r < len(p) else 0.0)
        return vals

    def score(self, accept: Sequence[float]) -> float:
        """Expected tokens one verify of this tree emits (bonus token included)."""
        return float(self.values(accept).sum())

    def position_acceptance(self, accept: Sequence[float]) -> np.ndarray:
        """a_t = P(the accepted path reaches depth t), t = 1..depth: the sum of the values at
        depth t (the events are exclusive). Plays the chain's a_i: E[N] = 1 + sum a_t, and
        :func:`emitted_distribution` gives the emitted-count distribution."""
        return np.bincount(self.depths, weights=self.values(accept))[1:]

    def emitted_distribution(self, accept: Sequence[float]) -> np.ndarray:
        """P(one verify emits j tokens), j = 1..depth+1 (element j - 1)."""
        return emitted_distribution(self.position_acceptance(accept))

    # output
    def render(self) -> str:
        """Compact text: line ``d<t>: c c c`` gives the number of children of each node at
        depth t, breadth-first, ranks left to right (it determines the tree)."""
        lines = []
        for d in range(self.depth):
            counts = [len(self.children[i]) for i in range(self.size) if self.depths[i] == d]
            lines.append(f"d{d}: " + " ".join(map(str, counts)))
        return "\n".join(lines) if lines else "root only (no drafts)"

    def outline(self, accept: Sequence[float] | None = None) -> str:
        """Indented rendering; each node shows its rank (1-based, as p_k) and, with
        ``accept``, its acceptance probability."""
        vals = self.values(accept) if accept is not None else None
        lines = ["root" + (" 1" if vals is not None else "")]

        def walk(node: int, prefix: str) -> None:
            kids = self.children[node]
            for j, c in enumerate(kids):
                last = j == len(kids) - 1
                label = f"p{self.ranks[c] + 1}" + (f" {vals[c]:.4f}" if vals is not None else "")
                lines.append(prefix + ("`-- " if last else "|-- ") + label)
                walk(c, prefix + ("    " if last else "|   "))

        walk(0, "")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def to_dict(self, accept: Sequence[float] | None = None) -> dict:
        data = {"size": self.size, "depth": self.depth, "widths": list(self.widths),
                "parents": list(self.parents), "ranks": list(self.ranks),
                "depths": list(self.depths)}
        if accept is not None:
            data["expected_tokens"] = self.score(accept)
            data["position_acceptance"] = self.position_acceptance(accept).tolist()
        return data


# --- Sequoia's dynamic program ---------------------------------------------------------------
def tree_capacity(depth: int, ranks: int, limit: int | None = None) -> int:
    """Most nodes a tree of this depth holds when a node has at most ``ranks`` children
    (stops counting at ``limit``)."""
    total, level = 1, 1
    for _ in range(depth):
        level *= ranks
        total += level
        if level == 0 or (limit is not None and total >= limit):
            break
    return total if limit is None else min(total, limit)


@dataclass(frozen=True, eq=False)
class TreeTable:
    """Sequoia's DP table for one acceptance vector: ``scores[d, m]`` is the best score of a
    tree of exactly m nodes (root included) and depth <= d (-inf where none fits; column 0
    unused), for d <= max_depth, m <= max_nodes, with back-pointers to rebuild any of them.

    Recurrence (ranks 0-based): F_d(1) = 1; F_{d+1}(m) = 1 + G_{d,0}(m - 1), where
    G_{d,k}(0) = 0 and G_{d,k}(j) = max_{1<=s<=j} p_k F_d(s) + G_{d,k+1}(j - s) is the best
    forest of j nodes below a node that uses ranks k, k+1, ... in order (G_{d,K}(j>0) = -inf).
    Exact: the value of a child's subtree is p_k times its own score, so subtrees are
    independent given their sizes. O(depth x ranks x nodes^2) in NumPy."""

    accept: tuple[float, ...]
    max_nodes: int
    max_depth: int
    scores: np.ndarray
    choice: np.ndarray  # [d, k, j]: size of the rank-k subtree in the best G_{d,k}(j)

    def feasible(self, nodes: int, depth: int | None = None) -> bool:
        d = self.max_depth if depth is None else depth
        return 1 <= nodes <= self.max_nodes and 0 <= d <= self.max_depth and bool(
            np.isfinite(self.scores[d, nodes]))

    def largest(self, depth: int | None = None) -> int:
        """The most nodes a tree of this depth can have here (at most max_nodes)."""
        d = self.max_depth if depth is None else depth
        return tree_capacity(d, len(self.accept), self.max_nodes)

    def score(self, nodes: int, depth: int | None = None) -> float:
        """Best expected tokens per verify with exactly ``nodes`` nodes and depth <= depth."""
        self._check(nodes, depth)
        return float(self.scores[self.max_depth if depth is None else depth, nodes])

    def tree(self, nodes: int, depth: int | None = None) -> DraftTree:
        """The best tree with exactly ``nodes`` nodes and depth <= ``depth``."""
        self._check(nodes, depth)
        parents, queue = [-1], deque([(0, nodes, self.max_depth if depth is None else depth)])
        while queue:
            node, m, d = queue.popleft()
            rest, k = m - 1, 0
            while rest > 0:
                s = int(self.choice[d - 1, k, rest])
                parents.append(node)
                queue.append((len(parents) - 1, s, d - 1))
                rest -= s
                k += 1
        return DraftTree(tuple(parents))

    def _check(self, nodes: int, depth: int | None) -> None:
        if not self.feasible(nodes, depth):
            d = self.max_depth if depth is None else depth
            raise ConfigError("nodes", nodes, f"a tree of depth <= {d} with "
                              f"{len(self.accept)} ranks holds 1..{self.largest(d)} nodes "
                              f"(table up to {self.max_nodes} nodes, depth {self.max_depth})")


def _check_size(nodes: int, depth: int) -> None:
    if not isinstance(nodes, int | np.integer) or nodes < 1:
        raise ConfigError("nodes", nodes, "must be an integer >= 1 (the root counts)")
    if not isinstance(depth, int | np.integer) or depth < 0:
        raise ConfigError("depth", depth, "must be an integer >= 0 (edges below the root)")


@lru_cache(maxsize=64)
def _table(p: tuple[float, ...], n: int, depth: int) -> TreeTable:
    ranks = min(len(p), n - 1)
    scores = np.full((depth + 1, n + 1), -np.inf)
    scores[:, 1] = 1.0
    choice = np.zeros((depth, max(ranks, 1), n), dtype=np.int32)
    j = np.arange(n)  # forest sizes 0..n-1
    s = np.arange(1, n)  # sizes of one child's subtree 1..n-1
    rest = j[:, None] - s[None, :]
    fits = rest >= 0
    rest = np.where(fits, rest, 0)
    for d in range(depth):
        sub = scores[d, 1:n]
        g = np.full(n, -np.inf)
        g[0] = 0.0
        for k in reversed(range(ranks)):  # ranks >= 1 whenever n >= 2
            cand = p[k] * sub[None, :] + np.where(fits, g[rest], -np.inf)
            best = cand.argmax(axis=1)
            g = cand[j, best]
            g[0] = 0.0
            choice[d, k] = best + 1
            choice[d, k, 0] = 0
        scores[d + 1, 1:] = 1.0 + g
    scores.flags.writeable = False
    choice.flags.writeable = False
    return TreeTable(p, n, depth, scores, choice)


def tree_table(accept: Sequence[float], max_nodes: int, depth: int) -> TreeTable:
    """Sequoia's DP for every size 1..max_nodes and depth 0..depth at once (cached)."""
    _check_size(max_nodes, depth)
    return _table(check_accept(accept), int(max_nodes), int(depth))


def best_tree(accept: Sequence[float], nodes: int, depth: int) -> DraftTree:
    """The tree of at most ``nodes`` nodes (root included) and depth <= ``depth`` with the
    most expected tokens per verify (exact). Every node adds value, so it has exactly
    ``nodes`` nodes unless the depth and the number of ranks hold fewer."""
    table = tree_table(accept, nodes, depth)
    return table.tree(table.largest(), depth)


def best_trees_by_size(accept: Sequence[float], max_nodes: int, depth: int
                       ) -> dict[int, DraftTree]:
    """The best tree of each size 1..max_nodes (those that fit the depth), from one DP."""
    table = tree_table(accept, max_nodes, depth)
    return {n: table.tree(n) for n in range(1, table.largest() + 1)}


def best_trees_shared(accepts: Sequence[Sequence[float]], nodes: int, depth: int
                      ) -> tuple[DraftTree, ...]:
    """One tree per request, ``nodes`` in total (each root counts), maximising the sum of
    expected tokens: each request's DP table, then an exact allocation DP over requests."""
    count = len(accepts)
    _check_size(nodes, depth)
    if count == 0 or nodes < count:
        raise ConfigError("nodes", nodes, f"need at least one node (the root) for each of the "
                          f"{count} requests")
    tables = [tree_table(a, nodes - count + 1, depth) for a in accepts]
    total = np.full(nodes + 1, -np.inf)
    total[0] = 0.0
    picks = []
    for t in tables:
        f = t.scores[depth]  # f[m], m = 1..; f[0] = -inf
        used = np.arange(nodes + 1)
        m = used[:, None] - used[None, :]  # m = nodes for this request
        ok = (m >= 1) & (m <= t.max_nodes)
        cand = np.where(ok, total[None, :] + f[np.where(ok, m, 0)], -np.inf)
        best = cand.argmax(axis=1)
        picks.append(used - best)
        total = cand[used, best]
    used = int(np.argmax(total))
    sizes = []
    for pick in reversed(picks):
        sizes.append(int(pick[used]))
        used -= sizes[-1]
    sizes.reverse()
    return tuple(t.tree(m) for t, m in zip(tables, sizes, strict=True))


# --- choosing the size -----------------------------------------------------------------------
@dataclass(frozen=True)
class SizeOption:
    """One tree size: its expected tokens, draft and verify seconds, and time per token."""

    nodes: int
    depth: int
    expected_tokens: float
    verify_s: float
    draft_s: float
    batch: int = 1

    @property
    def step_s(self) -> float:
        """Draft plus verify seconds of one speculative step for the whole batch."""
        return self.verify_s + self.draft_s

    @property
    def time_per_token_s(self) -> float:
        """Seconds per emitted token across the batch: step / (batch x E[tokens])."""
        return self.step_s / (self.batch * self.expected_tokens)

    @property
    def inter_token_s(self) -> float:
        """Seconds between one sequence's tokens: step / E[tokens]."""
        return self.step_s / self.expected_tokens

    def to_dict(self) -> dict:
        return {"nodes": self.nodes, "depth": self.depth,
                "expected_tokens": self.expected_tokens, "verify_s": self.verify_s,
                "draft_s": self.draft_s, "time_per_token_s": self.time_per_token_s,
                "inter_token_s": self.inter_token_s, "tokens_per_s": 1 / self.time_per_token_s}


@dataclass(frozen=True)
class SizeChoice:
    """Every size considered, the one with the least time per token, and its tree. The
    root-only option (1 node) is plain decoding, the baseline for the speedup."""

    accept: tuple[float, ...]
    options: tuple[SizeOption, ...]
    best: SizeOption
    tree: DraftTree

    @property
    def speedup(self) -> float:
        """Plain decoding's time per token over the chosen size's (1.0 if 1 node is absent)."""
        base = next((o for o in self.options if o.nodes == 1), None)
        return base.time_per_token_s / self.best.time_per_token_s if base else 1.0

    def to_dict(self) -> dict:
        return {"accept": list(self.accept), "best": self.best.to_dict(),
                "speedup_vs_plain_decoding": self.speedup,
                "tree": self.tree.to_dict(self.accept),
                "options": [o.to_dict() for o in self.options]}


def best_size(accept: Sequence[float], max_nodes: int, depth: int,
              verify_time: Callable[[int], float],
              draft_time: Callable[[int], float] | None = None, *, batch: int = 1,
              sizes: Iterable[int] | None = None) -> SizeChoice:
    """The tree size minimising (draft + verify seconds) / expected tokens.

    ``verify_time(n)``: seconds of the verify step with a tree of n nodes per sequence (for
    the whole batch; see :func:`cost_model_verify_time`). ``draft_time(d)``: seconds to draft
    a tree of depth d (a level-wise drafter runs d passes; see
    :func:`cost_model_draft_time`); with it, every depth <= ``depth`` is tried for each size,
    as Sequoia does, since a shallower tree drafts faster. A root-only tree drafts nothing.
    ``sizes`` restricts the sizes tried (default 1..max_nodes); ties go to the smaller tree."""
    table = tree_table(accept, max_nodes, depth)
    wanted = range(1, max_nodes + 1) if sizes is None else sorted(set(sizes))
    options, trees = [], {}
    for n in wanted:
        if not table.feasible(n):
            continue
        verify = float(verify_time(n))
        depths = [depth] if draft_time is None or n == 1 else range(1, depth + 1)
        best = None
        for d in depths:
            if not table.feasible(n, d):
                continue
            tree = table.tree(n, d)
            draft = float(draft_time(tree.depth)) if draft_time and tree.depth else 0.0
            opt = SizeOption(n, tree.depth, table.score(n, d), verify, draft, batch)
            if best is None or opt.time_per_token_s < best.time_per_token_s:
                best, trees[n] = opt, tree
        if best is not None:
            options.append(best)
    if not options:
        raise ConfigError("sizes", sizes, f"none fits 1..{table.largest()} nodes")
    chosen = min(options, key=lambda o: (o.time_per_token_s, o.nodes))
    return SizeChoice(table.accept, tuple(options), chosen, trees[chosen.nodes])


def cost_model_verify_time(cost_model: CostModel, batch: int = 1, context: int = 1024
                           ) -> Callable[[int], float]:
    """``n -> seconds`` of a verify step: ``batch`` sequences, each a tree of n tokens
    (q = n) on ``context`` cached tokens; the LM head runs on all batch x n rows, since the
    target needs a distribution at every tree node. n = 1 is a plain decode step."""
    from infersim.costmodels import BatchShape

    if batch < 1 or context < 0:
        raise ConfigError("batch/context", (batch, context), "need batch >= 1, context >= 0")

    @cache
    def verify(n: int) -> float:
        shape = BatchShape.uniform(batch, n, context)
        return cost_model.step_time(replace(shape, sampled=batch * n))

    return verify


def cost_model_draft_time(cost_model: CostModel, batch: int = 1, context: int = 1024
                          ) -> Callable[[int], float]:
    """``depth -> seconds`` of drafting with a separate draft model: one decode step of the
    draft per tree level (``batch`` sequences on ``context`` tokens). A level with several
    nodes rides in the same pass; for the memory-bound steps of a small drafter that is a
    good approximation, and it is Sequoia's own draft-cost model."""
    from infersim.costmodels import BatchShape

    step = cost_model.step_time(BatchShape.uniform(batch, 1, context))
    return lambda depth: depth * step


# --- the command's API -----------------------------------------------------------------------
@dataclass(frozen=True)
class TreePlan:
    """What ``infersim optimize tree`` shows: the best tree of the given size and, with a cost
    model, the size choice."""

    accept: tuple[float, ...]
    nodes: int
    depth: int
    tree: DraftTree
    expected_tokens: float
    sizes: SizeChoice | None = None
    setup: Mapping[str, object] | None = None

    def to_dict(self) -> dict:
        return {"accept": list(self.accept), "nodes": self.nodes, "depth": self.depth,
                "expected_tokens": self.expected_tokens,
                "tree": self.tree.to_dict(self.accept),
                "size_choice": None if self.sizes is None else
                {**dict(self.setup or {}), **self.sizes.to_dict()}}


def optimize_tree(accept: Sequence[float], nodes: int, depth: int, *, model: str | None = None,
                  device: str | None = None, tp: int = 1, batch: int = 1, context: int = 1024,
                  draft_model: str | None = None) -> TreePlan:
    """The best tree of ``nodes`` nodes and depth <= ``depth``; with ``model`` and ``device``
    also the size 1..nodes with the least time per token on that placement (verify at
    ``batch`` sequences on ``context`` cached tokens; with ``draft_model``, its draft steps
    on one device of the same kind count too)."""
    accept = check_accept(accept)
    tree = best_tree(accept, nodes, depth)
    plan = TreePlan(accept, nodes, depth, tree, tree.score(accept))
    if model is None and device is None:
        if draft_model is not None:
            raise ConfigError("draft_model", draft_model, "needs model and device")
        return plan
    if model is None or device is None:
        raise ConfigError("model" if model is None else "device", None,
                          "size selection needs both a model and a device")
    from infersim.costmodels import CostModel, Placement
    from infersim.hardware import get_device
    from infersim.models import get_model

    dev = get_device(device)
    cm = CostModel(get_model(model), Placement(dev, tp=tp))
    draft = None
    if draft_model is not None:
        draft = cost_model_draft_time(CostModel(get_model(draft_model), Placement(dev)),
                                      batch, context)
    choice = best_size(accept, nodes, depth, cost_model_verify_time(cm, batch, context), draft,
                       batch=batch)
    setup = {"model": cm.model.name, "device": dev.name, "tp": tp, "batch": batch,
             "context": context, "draft_model": draft_model, "grade": cm.grade}
    return replace(plan, sizes=choice, setup=setup)
