"""Draft trees: Sequoia's DP against brute force and REFERENCE.md, the chain formula, the
size choice, and the tree object the simulator uses."""

from __future__ import annotations

import time
from functools import cache

import numpy as np
import pytest

from infersim.costmodels import BatchShape, CostModel, Placement
from infersim.errors import ConfigError
from infersim.hardware import get_device
from infersim.models import get_model
from infersim.optimizer import (
    DraftTree,
    best_size,
    best_tree,
    best_trees_by_size,
    best_trees_shared,
    chain_acceptance,
    check_accept,
    cost_model_draft_time,
    cost_model_verify_time,
    emitted_distribution,
    expected_tokens_chain,
    sample_emitted,
    tree_table,
)

SEQUOIA = (0.55, 0.15, 0.07, 0.04, 0.02)  # REFERENCE.md
MTP = (0.7617, 0.6158, 0.5125, 0.4243, 0.3640, 0.3094, 0.2722, 0.2365)  # vLLM, per position


# --- brute force: every ordered tree, scored independently of the DP ---------------------------
@cache
def _shapes(n: int, depth: int, ranks: int) -> tuple[tuple, ...]:
    """All ordered trees of n nodes, depth <= depth, at most ``ranks`` children per node,
    as nested tuples of children."""
    if n == 1:
        return ((),)
    if depth == 0:
        return ()
    return _forests(n - 1, depth - 1, ranks, ranks)


@cache
def _forests(n: int, depth: int, slots: int, ranks: int) -> tuple[tuple, ...]:
    """Ordered sequences of at most ``slots`` subtrees (each of depth <= depth) with n nodes
    in total."""
    if n == 0:
        return ((),)
    if slots == 0:
        return ()
    out = []
    for first in range(1, n + 1):
        for head in _shapes(first, depth, ranks):
            for rest in _forests(n - first, depth, slots - 1, ranks):
                out.append((head, *rest))
    return tuple(out)


def _brute_score(shape: tuple, p: tuple[float, ...]) -> float:
    return 1.0 + sum(p[k] * _brute_score(child, p) for k, child in enumerate(shape))


def _brute_best(p: tuple[float, ...], n: int, depth: int) -> float:
    scores = [_brute_score(s, p) for s in _shapes(n, depth, len(p))]
    return max(scores) if scores else -np.inf


@pytest.mark.parametrize("p", [SEQUOIA, (0.6, 0.2), (0.3, 0.5, 0.1), (0.9,), (0.25,) * 4])
@pytest.mark.parametrize("depth", [1, 2, 3, 8])
def test_dp_equals_brute_force_enumeration(p, depth):
    table = tree_table(p, 8, depth)
    for n in range(1, 9):
        expected = _brute_best(p, n, depth)
        if not np.isfinite(expected):
            assert not table.feasible(n, depth)
            continue
        assert table.score(n, depth) == pytest.approx(expected, abs=1e-12), (n, depth)
        tree = table.tree(n, depth)
        assert tree.size == n and tree.depth <= depth
        assert max(len(c) for c in tree.children) <= len(p)
        assert tree.score(p) == pytest.approx(expected, abs=1e-12)
        for d in range(depth + 1):  # the same table answers every smaller depth
            want = _brute_best(p, n, d)
            got = table.score(n, d) if table.feasible(n, d) else -np.inf
            assert got == pytest.approx(want, abs=1e-12)


def test_reference_values():
    """REFERENCE.md: p = 0.55, 0.15, 0.07, 0.04, 0.02, depth <= 8: n = 8 -> 2.43,
    16 -> 2.80, 32 -> 3.13, with n counting the root and the score its 1."""
    for n, ref, exact in ((8, 2.43, 2.425381), (16, 2.80, 2.798835), (32, 3.13, 3.132767)):
        tree = best_tree(SEQUOIA, n, 8)
        assert tree.size == n
        assert round(tree.score(SEQUOIA), 2) == ref
        assert tree.score(SEQUOIA) == pytest.approx(exact, abs=1e-6)


def test_dp_is_fast_at_128_nodes_depth_16():
    p = (0.5, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005)  # uncached vector
    started = time.perf_counter()
    table = tree_table(p, 128, 16)
    tree = table.tree(128)
    assert time.perf_counter() - started < 1.0
    assert tree.size == 128 and tree.score(p) == pytest.approx(table.score(128))


def test_sizes_from_one_table_increase_and_stop_at_capacity():
    trees = best_trees_by_size(SEQUOIA, 40, 8)
    assert list(trees) == list(range(1, 41))
    scores = [trees[n].score(SEQUOIA) for n in trees]
    assert np.all(np.diff(scores) > 0)
    assert trees[32].score(SEQUOIA) == pytest.approx(best_tree(SEQUOIA, 32, 8).score(SEQUOIA))
    # two ranks, depth 2: at most 1 + 2 + 4 nodes
    assert list(best_trees_by_size((0.5, 0.3), 20, 2)) == list(range(1, 8))
    assert best_tree((0.5, 0.3), 20, 2).size == 7
    assert best_tree(SEQUOIA, 5, 0) == DraftTree((-1,))


# --- the tree object ---------------------------------------------------------------------------
def test_tree_is_canonical_and_round_trips():
    a = DraftTree((-1, 0, 0, 2, 1))  # not breadth-first
    b = DraftTree((-1, 0, 0, 1, 2))
    assert a == b and hash(a) == hash(b)
    assert a.parents == (-1, 0, 0, 1, 2)
    assert a.paths == ((), (0,), (1,), (0, 0), (1, 0))
    assert DraftTree.from_paths(a.paths) == a
    assert a.ranks == (0, 0, 1, 0, 0) and a.depths == (0, 1, 1, 2, 2)
    assert a.widths == (1, 2, 2) and a.depth == 2 and a.size == 5
    assert DraftTree.chain(3).parents == (-1, 0, 1, 2)
    with pytest.raises(ConfigError):
        DraftTree((0, 0))
    with pytest.raises(ConfigError):
        DraftTree((-1, 2, 0))
    with pytest.raises(ConfigError):
        DraftTree.from_paths([(1,)])  # rank 1 without rank 0
    data = a.to_dict(SEQUOIA)
    assert data["size"] == 5 and data["parents"] == [-1, 0, 0, 1, 2]
    assert data["expected_tokens"] == pytest.approx(1 + 0.55 + 0.15 + 0.55**2 + 0.15 * 0.55)
    assert a.render().splitlines() == ["d0: 2", "d1: 1 1"]
    assert "p2 0.1500" in a.outline(SEQUOIA)


def test_tree_emitted_distribution_matches_its_score():
    tree = best_tree(SEQUOIA, 32, 8)
    a = tree.position_acceptance(SEQUOIA)
    assert len(a) == tree.depth and np.all(np.diff(a) <= 1e-12)
    assert 1 + a.sum() == pytest.approx(tree.score(SEQUOIA))
    pmf = tree.emitted_distribution(SEQUOIA)
    assert pmf.sum() == pytest.approx(1.0)
    assert (np.arange(1, len(pmf) + 1) * pmf).sum() == pytest.approx(tree.score(SEQUOIA))
    draws = sample_emitted(a, np.random.default_rng(0), 40_000)
    assert draws.min() >= 1 and draws.max() <= tree.depth + 1
    assert draws.mean() == pytest.approx(tree.score(SEQUOIA), rel=0.01)


# --- chains ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "k"), [(0.8, 4), (0.5, 1), (0.3, 7), (0.0, 3)])
def test_chain_formula(a, k):
    closed = (1 - a ** (k + 1)) / (1 - a)
    assert expected_tokens_chain(a, k) == pytest.approx(closed)
    assert DraftTree.chain(k).score([a]) == pytest.approx(closed)
    assert expected_tokens_chain([a**i for i in range(1, k + 1)]) == pytest.approx(closed)
    assert expected_tokens_chain(1.0, k) == k + 1
    # a chain is the best tree when only one rank is ever accepted
    assert best_tree([a or 0.1], k + 1, k) == DraftTree.chain(k)


def test_chain_per_position_vector():
    assert expected_tokens_chain(MTP) == pytest.approx(4.4964)  # REFERENCE.md: 4.496
    assert expected_tokens_chain(MTP, 3) == pytest.approx(1 + 0.7617 + 0.6158 + 0.5125)
    assert chain_acceptance(0.5, 3).tolist() == [0.5, 0.25, 0.125]
    pmf = emitted_distribution(MTP)
    assert pmf.sum() == pytest.approx(1.0) and len(pmf) == 9
    assert (np.arange(1, 10) * pmf).sum() == pytest.approx(4.4964)
    with pytest.raises(ConfigError):
        expected_tokens_chain([0.5, 0.6])  # P(first i accepted) cannot grow
    with pytest.raises(ConfigError):
        expected_tokens_chain(MTP, 9)
    with pytest.raises(ConfigError):
        expected_tokens_chain(0.5)  # a rate needs a length


@pytest.mark.parametrize("bad", [[], [0.0, 0.1], [1.2], [float("nan")], [0.7, 0.4], ["x"]])
def test_bad_acceptance_vectors_are_config_errors(bad):
    with pytest.raises(ConfigError) as err:
        check_accept(bad, "--accept")
    assert err.value.field == "--accept"


def test_unsorted_vectors_respect_rank_order():
    p = (0.2, 0.6)  # the second-ranked child is likelier, but needs the first
    tree = best_tree(p, 3, 1)
    assert tree.size == 3 and tree.score(p) == pytest.approx(1.8)
    assert best_tree(p, 2, 1).score(p) == pytest.approx(1.2)


# --- several requests, one budget ---------------------------------------------------------------
def test_shared_budget_dp_equals_brute_allocation():
    accepts = [(0.8, 0.1), (0.3, 0.1), SEQUOIA]
    total = 14
    trees = best_trees_shared(accepts, total, 4)
    assert sum(t.size for t in trees) == total
    best = -1.0
    for a in range(1, total - 1):
        for b in range(1, total - a):
            c = total - a - b
            values = [tree_table(p, total, 4) for p in accepts]
            if all(v.feasible(m) for v, m in zip(values, (a, b, c), strict=True)):
                best = max(best, sum(v.score(m) for v, m in zip(values, (a, b, c),
                                                                 strict=True)))
    assert sum(t.score(p) for t, p in zip(trees, accepts, strict=True)) == pytest.approx(best)
    assert trees[0].size > trees[1].size


# --- choosing the size ---------------------------------------------------------------------------
def test_best_size_picks_the_minimiser_of_a_synthetic_curve():
    def verify(n: int) -> float:  # flat while memory-bound, then linear
        return 10e-3 + 0.5e-3 * max(0, n - 12)

    choice = best_size(SEQUOIA, 48, 8, verify)
    table = tree_table(SEQUOIA, 48, 8)
    times = {n: verify(n) / table.score(n) for n in range(1, 49)}
    assert choice.best.nodes == min(times, key=times.get)
    assert choice.best.time_per_token_s == pytest.approx(min(times.values()))
    assert choice.tree.size == choice.best.nodes
    assert choice.speedup == pytest.approx(times[1] / min(times.values()))
    assert [o.nodes for o in choice.options] == list(range(1, 49))
    # a flat curve wants the biggest tree; a steep one wants none
    assert best_size(SEQUOIA, 48, 8, lambda n: 1.0).best.nodes == 48
    assert best_size(SEQUOIA, 48, 8, lambda n: float(n)).best.nodes == 1


def test_best_size_with_draft_time_trades_depth():
    def verify(n: int) -> float:
        return 10e-3 + 0.2e-3 * n

    def draft(d: int) -> float:
        return 2e-3 * d

    choice = best_size(SEQUOIA, 32, 8, verify, draft, batch=4)
    table = tree_table(SEQUOIA, 32, 8)
    brute = min(((verify(n) + (draft(d) if n > 1 else 0.0)) / table.score(n, d), n, d)
                for n in range(1, 33) for d in range(9) if table.feasible(n, d)
                and (n == 1 or d >= 1))
    assert choice.best.inter_token_s == pytest.approx(brute[0])
    assert choice.best.nodes == brute[1]
    assert choice.best.time_per_token_s == pytest.approx(brute[0] / 4)
    assert choice.tree.depth <= 8 and choice.best.draft_s == draft(choice.tree.depth)
    assert choice.options[0].nodes == 1 and choice.options[0].draft_s == 0.0


def test_verify_time_comes_from_the_cost_model():
    cm = CostModel(get_model("llama-3.1-8b"), Placement(get_device("h100-sxm")))
    verify = cost_model_verify_time(cm, batch=8, context=2048)
    assert verify(1) == pytest.approx(cm.step_time(BatchShape.uniform(8, 1, 2048)))
    times = [verify(n) for n in (1, 4, 16, 64, 256)]
    assert np.all(np.diff(times) >= 0)
    assert times[-1] > 2 * times[0]  # 2048 tokens a step is compute-bound
    draft = cost_model_draft_time(cm, 8, 2048)
    assert draft(3) == pytest.approx(3 * verify(1)) and draft(0) == 0.0
