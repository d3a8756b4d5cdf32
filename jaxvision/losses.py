"""Loss functions: pure, unreduced, computed in float32.

Each loss returns unreduced values (one per example, or per anchor or box for
the detection losses); the caller averages (and masks), so padding and
weighting stay visible at the call site.
"""

import math

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


def combined_margin_logits(
    cosines: jax.Array, labels: jax.Array, *, scale: float, m1: float, m2: float, m3: float,
    easy_margin: bool = False,
) -> jax.Array:
    """Margin-softmax logits of the ArcFace family (insightface's combined margin).

    The logit of the true class becomes `s * (cos(m1 * theta + m2) - m3)`,
    where `theta` is the angle between the embedding and its class centre;
    every other logit stays `s * cos(theta_j)`. `m1` is SphereFace's
    multiplicative angular margin, `m2` ArcFace's additive angular margin and
    `m3` CosFace's additive cosine margin; (1, 0, 0) is the normalised softmax.

    `cos(m1 * theta + m2)` stops decreasing once `m1 * theta + m2 > pi`, which
    would reward a sample for moving *away* from its centre. Past that angle
    the margin is replaced:
      - `easy_margin=False` (default): by `cos(theta) - d`, the shift `d` making
        the logit continuous at the boundary angle `(pi - m2) / m1` (insightface's
        ArcFace uses `d = m2 * sin(m2)`, which jumps by about 0.1 there);
      - `easy_margin=True`: the margin applies only where `cos(theta) > 0`
        (insightface's `easy_margin`), else the logit is plain `cos(theta)`.

    Args:
      cosines: `[B, K]` cosine similarities of L2-normalised embeddings and
        class centres, in `[-1, 1]`.
      labels: `[B]` int true classes in `[0, K)`.
      scale: `s`, the logit scale (64 for faces).
      m1, m2, m3: the margins (static Python floats).
      easy_margin: see above.

    Returns:
      `[B, K]` float32 logits for `softmax_cross_entropy`. Finite, with finite
      gradients, at `theta` = 0 and pi too.
    """
    chex.assert_rank(cosines, 2)
    chex.assert_shape(labels, cosines.shape[:1])
    cosines = jnp.clip(cosines.astype(jnp.float32), -1.0, 1.0)  # [B, K]
    cos_t = jnp.take_along_axis(cosines, labels[:, None], axis=1)[:, 0]  # [B] true class
    if m1 == 1.0:
        # cos(theta + m2) - m3 without arccos; the clip keeps sqrt's gradient finite at theta = 0.
        sin_t = jnp.sqrt(jnp.clip(1.0 - cos_t**2, 1e-6, 1.0))  # [B]
        margin = cos_t * math.cos(m2) - sin_t * math.sin(m2) - m3  # [B]
    else:
        theta = jnp.arccos(jnp.clip(cos_t, -1.0 + 1e-6, 1.0 - 1e-6))  # [B]
        margin = jnp.cos(m1 * theta + m2) - m3  # [B]
    if easy_margin:
        target = jnp.where(cos_t > 0.0, margin, cos_t)  # [B]
    else:
        boundary = min((math.pi - m2) / m1, math.pi)  # The angle where m1 * theta + m2 = pi.
        cos_b = math.cos(boundary)
        shift = cos_b - (math.cos(m1 * boundary + m2) - m3)  # Continuity at the boundary.
        target = jnp.where(cos_t >= cos_b, margin, cos_t - shift)  # [B]
    is_label = labels[:, None] == jnp.arange(cosines.shape[1])  # [B, K]
    return scale * jnp.where(is_label, target[:, None], cosines)  # [B, K]


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
