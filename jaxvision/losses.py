"""Loss functions: pure, per-example, computed in float32.

Each loss returns one value per example; the caller averages (and masks), so
padding and weighting stay visible at the call site.
"""

import chex
import jax
import jax.numpy as jnp


def softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
    """Cross-entropy between softmax(logits) and (smoothed) one-hot labels.

    Args:
      logits: `[B, K]` unnormalized scores.
      labels: `[B]` integer class ids in `[0, K)`.
      label_smoothing: mass moved from the true class to a uniform
        distribution over all `K` classes (0 = plain one-hot).

    Returns:
      `[B]` float32 losses.
    """
    chex.assert_rank(logits, 2)
    chex.assert_shape(labels, logits.shape[:1])
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [B, K]
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, K]
    return -jnp.sum(targets * log_probs, axis=-1)  # [B]
