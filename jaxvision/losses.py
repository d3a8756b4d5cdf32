"""Loss functions: pure, unreduced, computed in float32.

Each loss returns unreduced values (one per example, or per anchor or box for
the detection losses); the caller averages (and masks), so padding and
weighting stay visible at the call site.
"""

import chex
import jax
import jax.numpy as jnp

from jaxvision.ops import boxes as box_ops


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


def sigmoid_focal_loss(
    logits: jax.Array,
    targets: jax.Array,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
) -> jax.Array:
    """RetinaNet focal loss (Lin et al., 2017), per element.

    `FL = -alpha_t * (1 - p_t)**gamma * log(p_t)`, with `p = sigmoid(logits)`,
    `p_t = p` where the target is 1 and `1 - p` where it is 0. Both logs come
    from `log_sigmoid`, and `(1 - p_t)**gamma = exp(gamma * log(1 - p_t))`, so
    large logits neither overflow nor give NaN gradients.

    Args:
      logits: `[..., K]` unnormalized scores, one binary classifier per class.
      targets: `[..., K]` binary targets in `{0, 1}` (same shape as `logits`).
      alpha: weight of the positives (negatives get `1 - alpha`); `None`
        weighs both by 1.
      gamma: focusing exponent; 0 gives plain binary cross-entropy.

    Returns:
      `[..., K]` float32 losses; the caller sums them and normalizes (RetinaNet
      divides by the number of positive anchors).
    """
    chex.assert_equal_shape([logits, targets])
    logits = logits.astype(jnp.float32)  # [..., K]
    targets = targets.astype(jnp.float32)  # [..., K]
    log_p = jax.nn.log_sigmoid(logits)  # [..., K] log(p)
    log_not_p = jax.nn.log_sigmoid(-logits)  # [..., K] log(1 - p)
    log_p_t = targets * log_p + (1.0 - targets) * log_not_p  # [..., K]
    log_not_p_t = targets * log_not_p + (1.0 - targets) * log_p  # [..., K]
    loss = -jnp.exp(gamma * log_not_p_t) * log_p_t  # [..., K]
    if alpha is not None:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return loss


def giou_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """`1 - GIoU` of matching xyxy boxes, in `[0, 2]`.

    Args:
      pred: `[..., 4]` predicted xyxy boxes.
      target: `[..., 4]` target xyxy boxes (same shape as `pred`).

    Returns:
      `[...]` float32 losses (degenerate boxes handled as in
      `ops.boxes.elementwise_giou`: finite, never NaN).
    """
    chex.assert_equal_shape([pred, target])
    chex.assert_axis_dimension(pred, pred.ndim - 1, 4)
    giou = box_ops.elementwise_giou(
        pred.astype(jnp.float32), target.astype(jnp.float32)
    )  # [...]
    return 1.0 - giou


def smooth_l1_loss(pred: jax.Array, target: jax.Array, beta: float) -> jax.Array:
    """Smooth L1 (Huber-like) loss, per element, as in detectron2/fvcore.

    With `n = |pred - target|`: `0.5 * n**2 / beta` where `n < beta`, else
    `n - 0.5 * beta`. The two branches meet with equal value and slope at
    `n = beta`; `beta = 0` is exactly L1 (RetinaNet in detectron2 uses 0.1).

    Args:
      pred: `[...]` predictions (e.g. box deltas `[..., 4]`).
      target: `[...]` targets (same shape as `pred`).
      beta: width of the quadratic zone, `>= 0` (a static Python float).

    Returns:
      `[...]` float32 losses; the caller sums and normalizes.
    """
    chex.assert_equal_shape([pred, target])
    diff = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))  # [...]
    if beta < 1e-5:  # fvcore: below this the quadratic zone is L1 in all but name.
        return diff
    return jnp.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)  # [...]
