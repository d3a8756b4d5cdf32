"""Fixed-size balanced sampling of positives and negatives (two-stage detectors).

Faster R-CNN trains its RPN on 256 anchors per image, at most half of them
positive, and its box head on 512 RoIs, at most a quarter positive; the rest
are negatives, drawn at random. With static shapes the sample is a fixed
number of slots with a validity mask: when an image has too few candidates,
the unused slots are marked invalid instead of changing the shape.

No Python loop runs over objects: each candidate gets a random priority and
`jax.lax.top_k` picks the sample, so the function jits, vmaps over images and
depends only on the key it is given (the step's RNG).
"""

import jax
import jax.numpy as jnp


def balanced_sample(
    rng: jax.Array, positive: jax.Array, negative: jax.Array,
    num_samples: int, positive_fraction: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draws up to `num_samples` candidates, at most `positive_fraction` of them positive.

    Positives are drawn uniformly without replacement, up to
    `int(num_samples * positive_fraction)`; negatives fill the remaining slots,
    uniformly without replacement. A candidate marked both is a positive.

    Args:
      rng: a PRNG key.
      positive, negative: bool `[N]`, the candidates of each kind.
      num_samples: slots in the sample (static).
      positive_fraction: the largest share of positives (static).

    Returns:
      `(indices, is_positive, valid)`, each `[num_samples]`: int32 indices into
      the N candidates (positives first), bool "this slot is a positive", bool
      "this slot holds a sample" (False for unused slots, whose index is
      meaningless).
    """
    n = positive.shape[0]
    max_positives = min(int(num_samples * positive_fraction), n)
    pos_rng, neg_rng = jax.random.split(rng)
    negative = negative & ~positive
    # The positives that make it: the max_positives with the highest random keys.
    pos_keys = jnp.where(positive, jax.random.uniform(pos_rng, (n,)), -1.0)  # [N]
    top_keys, top = jax.lax.top_k(pos_keys, max_positives)  # [P]
    chosen = jnp.zeros(n, bool).at[top].set(top_keys >= 0.0)  # [N]
    # Chosen positives rank above every negative, negatives above the rest.
    priority = jnp.where(chosen, 2.0, jnp.where(negative, 1.0, -1.0))
    priority = priority + jax.random.uniform(neg_rng, (n,), maxval=0.5)  # [N]
    keys, indices = jax.lax.top_k(priority, min(num_samples, n))  # [S']
    is_positive, valid = keys >= 2.0, keys >= 1.0
    pad = num_samples - indices.shape[0]  # Fewer candidates than slots.
    if pad:
        indices = jnp.pad(indices, (0, pad))
        is_positive, valid = jnp.pad(is_positive, (0, pad)), jnp.pad(valid, (0, pad))
    return indices.astype(jnp.int32), is_positive, valid
