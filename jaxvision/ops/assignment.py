"""Minimum-cost bipartite matching restricted to feasible pairs, inside `jax.jit`.

`linear_assignment` solves the rectangular assignment problem with
`optax.assignment.hungarian_algorithm` (O(n^2 m) sequential steps, static
shapes) on a copy of the cost in which every infeasible pair costs a constant
`big` larger than any difference in total feasible cost, and then drops the
matched pairs that are infeasible. So, as `scipy.optimize.linear_sum_assignment`
on the same big-constant matrix, the result:

1. matches only feasible pairs;
2. has the largest possible number of feasible pairs;
3. among those, has the smallest total cost.

`big = (span + 1) * (min(R, C) + 1)`, with `span` the range of the feasible
costs: a matching with one more feasible pair always saves at least
`big - min(R, C) * span > 0`. Non-finite costs count as infeasible.
"""

import chex
import jax
import jax.numpy as jnp
import optax


def linear_assignment(
    cost: jax.Array, feasible: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Minimum-cost matching of rows to columns over the feasible pairs.

    Args:
      cost: `[R, C]` float costs; R or C may be 0 (static).
      feasible: `[R, C]` bool, True where row `r` may be matched to column `c`.

    Returns:
      `(row_to_col, col_to_row)`: `[R]` int32 column matched to each row and
      `[C]` int32 row matched to each column, -1 where unmatched. Every matched
      pair is feasible; the number of pairs is maximal, then their total cost
      minimal.
    """
    chex.assert_rank(cost, 2)
    chex.assert_shape(feasible, cost.shape)
    num_rows, num_cols = cost.shape
    row_to_col = jnp.full((num_rows,), -1, jnp.int32)  # [R]
    col_to_row = jnp.full((num_cols,), -1, jnp.int32)  # [C]
    if num_rows == 0 or num_cols == 0:  # Static: nothing to match.
        return row_to_col, col_to_row
    cost = cost.astype(jnp.float32)
    feasible = feasible & jnp.isfinite(cost)  # [R, C]
    low = jnp.min(jnp.where(feasible, cost, jnp.inf))
    low = jnp.where(jnp.isfinite(low), low, 0)  # 0 when nothing is feasible.
    shifted = jnp.where(feasible, cost - low, 0)  # [R, C], >= 0
    span = jnp.max(shifted)
    big = (span + 1) * (min(num_rows, num_cols) + 1)
    rows, cols = optax.assignment.hungarian_algorithm(
        jnp.where(feasible, shifted, big)
    )  # [K], [K], K = min(R, C)
    rows, cols = rows.astype(jnp.int32), cols.astype(jnp.int32)
    keep = feasible[rows, cols]  # [K]
    # Infeasible pairs write to an out-of-bounds index, which is dropped.
    row_to_col = row_to_col.at[jnp.where(keep, rows, num_rows)].set(cols, mode="drop")
    col_to_row = col_to_row.at[jnp.where(keep, cols, num_cols)].set(rows, mode="drop")
    return row_to_col, col_to_row
