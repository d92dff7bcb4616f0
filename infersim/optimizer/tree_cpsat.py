"""Draft trees as a CP-SAT model, for the constraints Sequoia's DP cannot take: a cap on the
nodes at each depth, and one node budget shared by a batch of requests, each with its own
acceptance vector (maximise the batch's expected tokens per verify).

Conventions are those of :mod:`infersim.optimizer.trees` (nodes include each root, depth
counts edges, ``accept`` is positional and sums to <= 1).

Model. A tree is a prefix- and sibling-closed set of rank paths; its score is linear in one
boolean per candidate path, with the path's product of p as its (integer-scaled) objective
coefficient: a node implies its parent and its next-older sibling; the non-root nodes of all
trees fit the budget; the nodes at depth t of each tree fit ``widths[t - 1]``.

Candidates. Paths are enumerated depth-first (first child, next sibling), dropping a path and
everything that contains it when (a) its closure (the path's prefixes and older siblings, the
least any tree holding it contains) breaks the depth, budget or width caps, or (b) an upper
bound on any tree holding it, its closure's value plus the best values of the remaining
budget among all other paths (ignoring closure, keeping the width caps), falls below a
feasible solution's value (the DP's, or a greedy one under caps). Both tests only grow
stricter for paths whose closure contains the dropped one, and (b) never drops a path of a
solution at least as good as the incumbent, so the model still has the true optimum. On
unconstrained instances the optimum equals the DP's value up to the integer scaling
(1e-7 per node); ``prune=False`` keeps every path (small instances).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infersim.errors import ConfigError, SolverError
from infersim.optimizer.trees import DraftTree, best_trees_shared, check_accept

SCALE = 10**7  # objective units per expected token
_TOL = 1e-9

Path = tuple[int, ...]


@dataclass(frozen=True)
class TreeSolution:
    """A CP-SAT answer: status, the trees (one per request), each tree's expected tokens,
    their sum (the objective, recomputed exactly from the trees), the proven upper bound
    (CP-SAT's bound plus the scaling slack), the relative gap, and how it was solved."""

    status: str
    trees: tuple[DraftTree, ...]
    scores: tuple[float, ...]
    objective: float
    bound: float
    gap: float
    solve_time_s: float
    wall_time_s: float
    num_workers: int
    seed: int
    time_limit_s: float
    candidates: int
    heuristic: float

    @property
    def tree(self) -> DraftTree:
        """The first (or only) request's tree."""
        return self.trees[0]

    @property
    def optimal(self) -> bool:
        return self.status == "OPTIMAL"

    def to_dict(self) -> dict:
        return {"status": self.status, "objective": self.objective, "bound": self.bound,
                "gap": self.gap, "solve_time_s": self.solve_time_s,
                "wall_time_s": self.wall_time_s, "num_workers": self.num_workers,
                "seed": self.seed, "time_limit_s": self.time_limit_s,
                "candidates": self.candidates, "heuristic": self.heuristic,
                "scores": list(self.scores), "trees": [t.to_dict() for t in self.trees]}

    def summary(self) -> str:
        return (f"{self.status}: objective {self.objective:.6f}, bound {self.bound:.6f}, "
                f"gap {self.gap:.2e}, {self.solve_time_s:.2f} s solve "
                f"({self.wall_time_s:.2f} s total), {self.num_workers} workers, seed "
                f"{self.seed}, {self.candidates} candidate nodes")


# --- helpers -------------------------------------------------------------------------------
class _Instance:
    def __init__(self, accepts: Sequence[tuple[float, ...]], nodes: int, depth: int,
                 widths: tuple[int, ...] | None) -> None:
        self.accepts = accepts
        self.requests = len(accepts)
        self.budget = nodes - self.requests  # non-root nodes of all trees
        self.depth = depth
        self.widths = widths

    def cap(self, t: int) -> int:
        """Most nodes at depth t (>= 1) of one tree."""
        if self.widths is None or t > len(self.widths):
            return self.budget
        return min(self.widths[t - 1], self.budget)

    def top_values(self, r: int, count: int) -> tuple[list[tuple[float, int, Path]], bool]:
        """The ``count`` most valuable non-root paths of request r (depth <= depth, ranks
        < len(p)), by value, ignoring closure; and whether that is all of them."""
        p = self.accepts[r]
        heap: list[tuple[float, Path]] = [(-p[k], (k,)) for k in range(len(p))]
        heapq.heapify(heap)
        out = []
        while heap and len(out) < count:
            neg, path = heapq.heappop(heap)
            out.append((-neg, len(path), path))
            if len(path) < self.depth:
                for k in range(len(p)):
                    heapq.heappush(heap, (neg * p[k], (*path, k)))
        return out, not heap

    def greedy(self) -> list[set[Path]]:
        """A feasible solution: add the most valuable addable node while budget and caps
        allow (addable: its parent and older sibling are in)."""
        chosen: list[set[Path]] = [set() for _ in self.accepts]
        counts = [dict.fromkeys(range(1, self.depth + 1), 0) for _ in self.accepts]
        heap = [(-a[0], r, (0,)) for r, a in enumerate(self.accepts) if self.depth >= 1]
        heapq.heapify(heap)
        left = self.budget
        while heap and left > 0:
            neg, r, path = heapq.heappop(heap)
            t, p = len(path), self.accepts[r]
            if counts[r][t] >= self.cap(t):
                continue
            chosen[r].add(path)
            counts[r][t] += 1
            left -= 1
            if t < self.depth:
                heapq.heappush(heap, (neg * p[0], r, (*path, 0)))
            if path[-1] + 1 < len(p):
                sib = (*path[:-1], path[-1] + 1)
                parent_value = -neg / p[path[-1]]
                heapq.heappush(heap, (-parent_value * p[path[-1] + 1], r, sib))
        return chosen

    def value(self, r: int, paths: set[Path]) -> float:
        return DraftTree.from_paths(paths).score(self.accepts[r])

    def fits(self, sets: list[set[Path]]) -> bool:
        if sum(len(s) for s in sets) > self.budget:
            return False
        for s in sets:
            if any(len(p) > self.depth for p in s):
                return False
            depth_counts = np.bincount([len(p) for p in s], minlength=self.depth + 1)
            if any(depth_counts[t] > self.cap(t) for t in range(1, self.depth + 1)):
                return False
        return True


def _check_widths(widths: Sequence[int] | None) -> tuple[int, ...] | None:
    if widths is None:
        return None
    try:
        caps = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        raise ConfigError("widths", widths, "expected integers >= 0, one per depth 1, 2, ...")\
            from None
    if any(w < 0 for w in caps) or any(w != float(x) for w, x in zip(caps, widths, strict=True)):
        raise ConfigError("widths", widths, "expected integers >= 0, one per depth 1, 2, ...")
    return caps


# --- the solver ----------------------------------------------------------------------------
def solve_trees(accepts: Sequence[Sequence[float]], nodes: int, depth: int, *,
                widths: Sequence[int] | None = None, time_limit_s: float = 10.0,
                num_workers: int = 2, seed: int = 0, prune: bool = True,
                max_candidates: int = 200_000) -> TreeSolution:
    """One draft tree per request (``accepts``: one positional acceptance vector each),
    ``nodes`` in total with every root counted, depth <= ``depth``, at most ``widths[t-1]``
    nodes at depth t of each tree (depths past the list are uncapped), maximising the sum of
    expected tokens per verify. CP-SAT with a time limit, ``num_workers`` workers and a fixed
    ``seed``; warm-started from the better of the DP's and a greedy solution."""
    started = time.perf_counter()
    from ortools.sat.python import cp_model

    accepts = [check_accept(a, f"accepts[{i}]") for i, a in enumerate(accepts)]
    if not accepts:
        raise ConfigError("accepts", accepts, "give at least one acceptance vector")
    if not isinstance(depth, int | np.integer) or depth < 0:
        raise ConfigError("depth", depth, "must be an integer >= 0 (edges below the root)")
    if not isinstance(nodes, int | np.integer) or nodes < len(accepts):
        raise ConfigError("nodes", nodes, f"need an integer >= {len(accepts)} (one root per "
                          "request)")
    if time_limit_s <= 0 or num_workers < 1:
        raise ConfigError("time_limit_s/num_workers", (time_limit_s, num_workers),
                          "need a positive time limit and at least one worker")
    inst = _Instance(accepts, int(nodes), int(depth), _check_widths(widths))

    # incumbent: the DP (exact without caps) or greedy, whichever is better and feasible
    incumbent = inst.greedy()
    if inst.budget > 0 and inst.depth > 0:
        dp = [set(t.paths[1:]) for t in best_trees_shared(accepts, inst.budget + inst.requests,
                                                          inst.depth)]
        if inst.fits(dp) and _total(inst, dp) > _total(inst, incumbent):
            incumbent = dp
    lower = _total(inst, incumbent)
    candidates = _candidates(inst, lower if prune else -np.inf, max_candidates)

    model = cp_model.CpModel()
    var = {}
    for r, path in candidates:
        var[r, path] = model.new_bool_var(f"r{r}_" + ".".join(map(str, path)))
    for (r, path), x in var.items():
        if len(path) > 1:
            model.add_implication(x, var[r, path[:-1]])
        if path[-1] > 0:
            model.add_implication(x, var[r, (*path[:-1], path[-1] - 1)])
    if len(var) > inst.budget:
        model.add(sum(var.values()) <= inst.budget)
    for r in range(inst.requests):
        for t in range(1, inst.depth + 1):
            level = [x for (rr, path), x in var.items() if rr == r and len(path) == t]
            if len(level) > inst.cap(t):
                model.add(sum(level) <= inst.cap(t))
    coef = {key: round(_path_value(accepts[key[0]], key[1]) * SCALE) for key in var}
    model.maximize(sum(c * var[key] for key, c in coef.items() if c))
    for (r, path), x in var.items():
        model.add_hint(x, path in incumbent[r])

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = int(num_workers)
    solver.parameters.random_seed = int(seed)
    status = solver.solve(model)
    name = solver.status_name(status)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        chosen: list[set[Path]] = [set() for _ in accepts]
        for (r, path), x in var.items():
            if solver.boolean_value(x):
                chosen[r].add(path)
        if _total(inst, chosen) < lower:  # scaling ties: keep the exact better one
            chosen = incumbent
    elif status == cp_model.UNKNOWN:
        chosen = incumbent
    else:
        raise SolverError(f"CP-SAT returned {name} for a draft-tree model that always has a "
                          "solution (roots only); this is a bug")
    slack = 0.5 * inst.budget / SCALE
    bound = solver.best_objective_bound / SCALE + inst.requests + slack
    trees = tuple(DraftTree.from_paths(s) for s in chosen)
    scores = tuple(t.score(a) for t, a in zip(trees, accepts, strict=True))
    objective = float(sum(scores))
    bound = max(bound, objective)
    return TreeSolution(
        status=name, trees=trees, scores=scores, objective=objective, bound=bound,
        gap=(bound - objective) / objective, solve_time_s=solver.wall_time,
        wall_time_s=time.perf_counter() - started, num_workers=int(num_workers),
        seed=int(seed), time_limit_s=float(time_limit_s), candidates=len(var),
        heuristic=lower)


def solve_tree(accept: Sequence[float], nodes: int, depth: int, *,
               widths: Sequence[int] | None = None, **options) -> TreeSolution:
    """One request: the best tree of at most ``nodes`` nodes, depth <= ``depth``, under
    per-depth width caps. Options as in :func:`solve_trees`."""
    return solve_trees([accept], nodes, depth, widths=widths, **options)


def _path_value(p: tuple[float, ...], path: Path) -> float:
    return float(np.prod([p[k] for k in path]))


def _total(inst: _Instance, sets: list[set[Path]]) -> float:
    return sum(inst.value(r, s) for r, s in enumerate(sets))


def _candidates(inst: _Instance, lower: float, limit: int) -> list[tuple[int, Path]]:
    """Paths that may appear in a solution worth at least ``lower`` (see the module doc)."""
    if inst.budget <= 0 or inst.depth <= 0:
        return []
    pools = [inst.top_values(r, inst.budget) for r in range(inst.requests)]
    # every path left out of a pool is worth at most its pool's last value, so the merged
    # pool down to the largest such value is a true prefix of all paths by value
    tail = max(0.0 if done or not top else top[-1][0] for top, done in pools)
    pool = sorted(((v, r, t, path) for r, (top, _) in enumerate(pools) for v, t, path in top
                   if v >= tail), key=lambda e: -e[0])
    base_caps = {(r, t): inst.cap(t) for r in range(inst.requests)
                 for t in range(1, inst.depth + 1)}
    capped = inst.widths is not None

    def upper(r: int, closure: set[Path], value: float, counts: dict[int, int]) -> float:
        need = inst.budget - len(closure)
        total, taken = inst.requests + value, 0
        left = dict(base_caps)
        if capped:
            for t, c in counts.items():
                left[r, t] -= c
        for v, rr, t, path in pool:
            if taken >= need:
                break
            if rr == r and path in closure:
                continue
            if capped:
                if left[rr, t] <= 0:
                    continue
                left[rr, t] -= 1
            total += v
            taken += 1
        return total + (need - taken) * tail

    out: list[tuple[int, Path]] = []
    for r, p in enumerate(inst.accepts):
        # state: path, value, closure (non-root paths), closure value, closure depth counts
        stack = [((0,), p[0], frozenset({(0,)}), p[0], {1: 1})]
        while stack:
            path, v, closure, cl_value, counts = stack.pop()
            t = len(path)
            if (len(closure) > inst.budget or counts[t] > inst.cap(t)
                    or upper(r, closure, cl_value, counts) < lower - _TOL):
                continue  # neither this path nor any path whose closure holds it
            out.append((r, path))
            if len(out) > limit:
                raise SolverError(f"more than {limit} candidate nodes; lower the nodes or depth "
                                  "(or raise max_candidates)")
            k = path[-1]
            if k + 1 < len(p):  # next sibling
                sib, sv = (*path[:-1], k + 1), v / p[k] * p[k + 1]
                stack.append((sib, sv, closure | {sib}, cl_value + sv,
                              {**counts, t: counts[t] + 1}))
            if t < inst.depth:  # first child
                child, cv = (*path, 0), v * p[0]
                stack.append((child, cv, closure | {child}, cl_value + cv,
                              {**counts, t + 1: counts.get(t + 1, 0) + 1}))
    return out
