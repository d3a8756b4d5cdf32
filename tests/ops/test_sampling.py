"""Balanced sampling: counts, validity, no duplicates, uniform draws, jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops.sampling import balanced_sample

sample = jax.jit(balanced_sample, static_argnums=(3, 4))


def _check(indices, is_positive, valid, positive, negative):
    indices, is_positive, valid = map(np.asarray, (indices, is_positive, valid))
    picked = indices[valid]
    assert len(set(picked.tolist())) == len(picked)  # Without replacement.
    np.testing.assert_array_equal(positive[picked], is_positive[valid])
    assert negative[indices[valid & ~is_positive]].all()
    assert not is_positive[~valid].any()
    # Positives first.
    assert (np.flatnonzero(is_positive) < np.flatnonzero(valid & ~is_positive).min(initial=10**9)).all()
    return int(is_positive.sum()), int((valid & ~is_positive).sum())


@pytest.mark.parametrize("num_pos,num_neg,expected", [
    (200, 800, (128, 128)),  # Plenty of both: half and half (RPN: 256 at 50%).
    (20, 900, (20, 236)),  # Few positives: negatives fill the slots.
    (20, 30, (20, 30)),  # Few of both: the rest of the slots are invalid.
    (0, 0, (0, 0)),
])
def test_counts_follow_the_fraction_and_fill_with_negatives(num_pos, num_neg, expected):
    n = 1000
    rng = np.random.default_rng(num_pos + num_neg)
    kind = rng.permutation(np.array([1] * num_pos + [2] * num_neg + [0] * (n - num_pos - num_neg)))
    positive, negative = kind == 1, kind == 2
    out = sample(jax.random.PRNGKey(0), jnp.asarray(positive), jnp.asarray(negative), 256, 0.5)
    assert _check(*out, positive, negative) == expected
    assert int(np.asarray(out[2]).sum()) == sum(expected)


def test_box_head_quarter_and_fewer_candidates_than_slots():
    positive = np.zeros(40, bool)
    positive[:30] = True
    negative = ~positive
    out = sample(jax.random.PRNGKey(1), jnp.asarray(positive), jnp.asarray(negative), 512, 0.25)
    assert out[0].shape == (512,)
    assert _check(*out, positive, negative) == (30, 10)  # All 40 fit; 472 slots unused.


def test_a_candidate_marked_both_is_a_positive():
    both = jnp.ones(10, bool)
    _, is_positive, valid = sample(jax.random.PRNGKey(2), both, both, 8, 0.5)
    assert int(is_positive.sum()) == 4 and int(valid.sum()) == 4  # No negatives exist.


def test_draws_are_uniform_seeded_and_vmap_over_images():
    positive = jnp.arange(20) < 10
    negative = ~positive
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    indices, _, valid = jax.vmap(
        lambda k: balanced_sample(k, positive, negative, 8, 0.25))(keys)  # [4000, 8] each
    counts = np.bincount(np.asarray(indices)[np.asarray(valid)], minlength=20)
    # Each of 10 positives: 2 of 10 slots -> p = 0.2; each negative: 6 of 10 -> p = 0.6.
    np.testing.assert_allclose(counts[:10] / 4000, 0.2, atol=0.03)
    np.testing.assert_allclose(counts[10:] / 4000, 0.6, atol=0.03)
    again = balanced_sample(keys[0], positive, negative, 8, 0.25)
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(indices[0]))
    assert not np.array_equal(np.asarray(indices[0]), np.asarray(indices[1]))
