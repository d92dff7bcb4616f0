"""The CP-SAT draft-tree model: equal to the DP where the DP applies, and honest about width
caps and shared budgets where it does not."""

from __future__ import annotations

import numpy as np
import pytest

from infersim.errors import ConfigError
from infersim.optimizer import best_tree, best_trees_shared, solve_tree, solve_trees

SEQUOIA = (0.55, 0.15, 0.07, 0.04, 0.02)
SCALING = 1e-6  # integer scaling of the objective: 1e-7 per node


@pytest.mark.parametrize(("p", "n", "d"), [
    (SEQUOIA, 8, 8), (SEQUOIA, 16, 8), (SEQUOIA, 32, 8), (SEQUOIA, 12, 3),
    ((0.6, 0.2), 20, 5), ((0.3, 0.5, 0.1), 10, 4), ((0.9,), 6, 8), (SEQUOIA, 1, 8),
])
def test_cpsat_equals_the_dp_on_unconstrained_instances(p, n, d):
    result = solve_tree(p, n, d)
    dp = best_tree(p, n, d).score(p)
    assert result.status == "OPTIMAL"
    assert result.objective == pytest.approx(dp, abs=SCALING)
    assert result.tree.size <= n and result.tree.depth <= d
    assert result.tree.score(p) == pytest.approx(result.objective)
    assert result.bound >= result.objective and result.gap < SCALING


@pytest.mark.parametrize(("p", "n", "d"), [(SEQUOIA, 8, 3), (SEQUOIA, 10, 4),
                                           ((0.3, 0.5, 0.1), 9, 3)])
def test_cpsat_without_pruning_equals_the_dp(p, n, d):
    """Every candidate path in the model (no bound-based pruning), small instances."""
    result = solve_tree(p, n, d, prune=False)
    assert result.status == "OPTIMAL"
    assert result.objective == pytest.approx(best_tree(p, n, d).score(p), abs=SCALING)
    assert result.candidates > n


@pytest.mark.parametrize("widths", [[2, 2, 2], [1, 3, 3, 3], [3, 1], [4, 4, 4, 4, 4, 4]])
def test_width_caps_are_respected_and_never_help(widths):
    for n, d in ((11, 5), (16, 6)):
        free = best_tree(SEQUOIA, n, d).score(SEQUOIA)
        result = solve_tree(SEQUOIA, n, d, widths=widths)
        assert result.status == "OPTIMAL"
        tree = result.tree
        assert all(tree.widths[t] <= w for t, w in enumerate(widths, 1) if t < len(tree.widths))
        assert tree.size <= n and tree.depth <= d
        assert result.objective <= free + SCALING
        if n == 11:  # small enough to keep every candidate: pruning is exact
            full = solve_tree(SEQUOIA, n, d, widths=widths, prune=False)
            assert full.status == "OPTIMAL"
            assert result.objective == pytest.approx(full.objective, abs=SCALING)


def test_loose_caps_change_nothing_and_tight_caps_cost_tokens():
    free = best_tree(SEQUOIA, 16, 6)
    loose = solve_tree(SEQUOIA, 16, 6, widths=list(free.widths[1:]))
    assert loose.objective == pytest.approx(free.score(SEQUOIA), abs=SCALING)
    tight = solve_tree(SEQUOIA, 16, 6, widths=[1] * 6)  # only a chain fits
    assert tight.tree.widths == (1,) * 7
    assert tight.objective == pytest.approx(sum(0.55**i for i in range(7)), abs=SCALING)


def test_shared_budget_goes_to_the_request_that_accepts_more():
    accepts = [(0.8, 0.1), (0.3, 0.1)]
    result = solve_trees(accepts, 16, 8)
    high, low = result.trees
    assert high.size > low.size and high.size + low.size <= 16
    dp = best_trees_shared(accepts, 16, 8)
    assert result.objective == pytest.approx(
        sum(t.score(a) for t, a in zip(dp, accepts, strict=True)), abs=SCALING)
    assert result.scores == pytest.approx([high.score(accepts[0]), low.score(accepts[1])])


def test_shared_budget_with_caps_and_three_requests():
    accepts = [(0.8, 0.1), (0.3, 0.1), SEQUOIA]
    capped = solve_trees(accepts, 18, 5, widths=[2, 2])
    full = solve_trees(accepts, 18, 5, widths=[2, 2], prune=False)
    free = solve_trees(accepts, 18, 5)
    assert capped.status == full.status == free.status == "OPTIMAL"
    assert capped.objective == pytest.approx(full.objective, abs=SCALING)
    assert capped.objective <= free.objective + SCALING
    assert sum(t.size for t in capped.trees) <= 18
    assert all(t.widths[1] <= 2 and (len(t.widths) < 3 or t.widths[2] <= 2)
               for t in capped.trees)


def test_result_states_how_it_was_solved():
    result = solve_tree(SEQUOIA, 12, 4, time_limit_s=5, num_workers=2, seed=7)
    data = result.to_dict()
    for key in ("status", "objective", "bound", "gap", "solve_time_s", "num_workers", "seed",
                "time_limit_s", "candidates", "heuristic", "trees"):
        assert key in data
    assert data["num_workers"] == 2 and data["seed"] == 7 and data["time_limit_s"] == 5
    assert "OPTIMAL" in result.summary() and "2 workers" in result.summary()
    again = solve_tree(SEQUOIA, 12, 4, time_limit_s=5, num_workers=2, seed=7)
    assert again.trees == result.trees  # deterministic


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError):
        solve_trees([SEQUOIA, SEQUOIA], 1, 4)  # fewer nodes than roots
    with pytest.raises(ConfigError):
        solve_tree(SEQUOIA, 8, 4, widths=[2, -1])
    with pytest.raises(ConfigError):
        solve_tree((0.9, 0.5), 8, 4)
    assert np.isclose(solve_tree(SEQUOIA, 8, 0).objective, 1.0)
