"""`linear_assignment` against scipy's `linear_sum_assignment` with a big constant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxvision.ops import assignment

# A few static shapes (one compilation each), many random problems per shape.
SHAPES = [(5, 5), (3, 7), (7, 3), (1, 6), (6, 1)]
PROBLEMS = 50

linear_assignment = jax.jit(assignment.linear_assignment)


def scipy_reference(cost, feasible):
    """Number and total cost of the feasible pairs scipy keeps with infeasible = 1e9."""
    rows, cols = scipy.optimize.linear_sum_assignment(
        np.where(feasible, cost.astype(np.float64), 1e9)
    )
    keep = feasible[rows, cols]
    return keep.sum(), cost[rows[keep], cols[keep]].astype(np.float64).sum()


def check(cost, feasible, row_to_col, col_to_row):
    """Consistency, feasibility; returns (number of pairs, total cost)."""
    row_to_col, col_to_row = np.asarray(row_to_col), np.asarray(col_to_row)
    assert row_to_col.shape == (cost.shape[0],) and row_to_col.dtype == np.int32
    assert col_to_row.shape == (cost.shape[1],) and col_to_row.dtype == np.int32
    rows = np.flatnonzero(row_to_col >= 0)
    cols = row_to_col[rows]
    np.testing.assert_array_equal(col_to_row[cols], rows)  # The inverse map...
    assert np.sum(col_to_row >= 0) == len(rows)  # ...with nothing else in it.
    assert np.all(feasible[rows, cols])
    return len(rows), cost[rows, cols].astype(np.float64).sum()


def random_problem(rng, shape, integer):
    """Costs (integers: many ties) and a feasibility mask of random density."""
    if integer:
        cost = rng.integers(0, 4, shape).astype(np.float32)
    else:
        cost = rng.uniform(-1, 2, shape).astype(np.float32)
    feasible = rng.uniform(size=shape) < rng.uniform(0, 1)
    return cost, feasible


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_scipy_on_random_problems(shape):
    rng = np.random.default_rng(sum(shape))
    for i in range(PROBLEMS):
        cost, feasible = random_problem(rng, shape, integer=i % 4 == 0)
        got = check(cost, feasible, *linear_assignment(cost, feasible))
        want = scipy_reference(cost, feasible)
        assert got[0] == want[0]  # As many feasible pairs as possible, first.
        np.testing.assert_allclose(got[1], want[1], atol=1e-5)


def test_most_pairs_before_lowest_cost():
    # Row 0 alone would take column 0 (cost 0); both rows matched cost 10 + 10.
    # (In a 5 x 5 problem, a shape already compiled, with the rest infeasible.)
    cost = np.full((5, 5), 1000.0, np.float32)
    cost[:2, :2] = [[0.0, 10.0], [10.0, 100.0]]
    feasible = np.zeros((5, 5), bool)
    feasible[:2, :2] = [[True, True], [True, False]]
    row_to_col, col_to_row = linear_assignment(cost, feasible)
    np.testing.assert_array_equal(row_to_col, [1, 0, -1, -1, -1])
    np.testing.assert_array_equal(col_to_row, [1, 0, -1, -1, -1])


def test_all_infeasible_and_non_finite():
    cost = np.random.default_rng(0).uniform(size=(5, 5)).astype(np.float32)
    row_to_col, col_to_row = linear_assignment(cost, np.zeros((5, 5), bool))
    np.testing.assert_array_equal(row_to_col, -1)
    np.testing.assert_array_equal(col_to_row, -1)
    # Non-finite costs are infeasible, and do not spoil the rest.
    cost[0, :] = np.nan
    cost[:, 0] = np.inf
    row_to_col, _ = linear_assignment(cost, np.ones((5, 5), bool))
    assert row_to_col[0] == -1 and np.all(np.asarray(row_to_col)[1:] > 0)


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (0, 0)])
def test_empty(shape):
    row_to_col, col_to_row = linear_assignment(jnp.zeros(shape), jnp.ones(shape, bool))
    np.testing.assert_array_equal(row_to_col, np.full(shape[0], -1))
    np.testing.assert_array_equal(col_to_row, np.full(shape[1], -1))


def test_same_under_jit():
    rng = np.random.default_rng(1)
    cost, feasible = random_problem(rng, (2, 3), integer=False)
    eager = assignment.linear_assignment(jnp.asarray(cost), jnp.asarray(feasible))
    jitted = linear_assignment(cost, feasible)
    for a, b in zip(eager, jitted):
        np.testing.assert_array_equal(a, b)
