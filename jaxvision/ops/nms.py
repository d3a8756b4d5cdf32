"""Non-maximum suppression: greedy, static shapes, jit- and vmap-able.

Boxes are `[..., 4]` xyxy `(x0, y0, x1, y1)` in pixels, the convention of
`jaxvision.ops.boxes`, whose IoU is used (zero-area boxes have IoU 0, so they
never suppress anything).

Greedy NMS walks the candidates in descending score order (ties: lower input
index first), keeps a candidate unless an already kept box (of the same class,
for class-aware NMS) overlaps it with IoU > `iou_threshold`, and stops after
`max_outputs` kept boxes. Each kept box costs one `[N]` IoU row, so the work
is O(N log N) for the sort plus O(N * max_outputs) for the loop, and the
memory is O(N): no `[N, N]` IoU matrix is built. The loop is a
`jax.lax.while_loop` of at most `max_outputs` sequential steps, which is the
cost to watch on accelerators.

`max_outputs` fixes the output shape, so it must be static under `jax.jit`
(`static_argnames="max_outputs"`); the thresholds may be traced, so changing
them does not recompile.
"""

import jax
import jax.numpy as jnp

from jaxvision.ops import boxes as box_ops


def nms(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: float | jax.Array,
    max_outputs: int,
    score_threshold: float | jax.Array = -jnp.inf,
    classes: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy NMS of one image.

    Args:
      boxes: `[N, 4]` xyxy boxes; N may be 0.
      scores: `[N]` scores; a box with score < `score_threshold` (or NaN) is
        never kept.
      iou_threshold: a candidate is suppressed by a kept box when their
        IoU > `iou_threshold` (and, with `classes`, their classes are equal).
      max_outputs: static number of output slots `K`.
      score_threshold: minimum score of a kept box.
      classes: optional `[N]` integer class ids; boxes of different classes
        never suppress each other (class-aware NMS).

    Returns:
      `(indices, valid)`: `[K]` int32 indices into `boxes` of the kept boxes in
      descending score order (ties: lower index first), padded with 0, and
      `[K]` bool, True for the filled slots (always a prefix).
    """
    num_boxes = boxes.shape[0]
    indices = jnp.zeros((max_outputs,), jnp.int32)  # [K]
    if num_boxes == 0:  # Static: nothing to keep.
        return indices, jnp.zeros((max_outputs,), bool)
    # Stable sort on -score: equal scores keep ascending input order.
    order = jnp.argsort(-scores, stable=True).astype(jnp.int32)  # [N]
    sorted_boxes = boxes[order].astype(jnp.float32)  # [N, 4]
    sorted_classes = None if classes is None else classes[order]  # [N]
    # Candidates still in play, in sorted order; NaN >= t is False.
    alive = scores[order] >= score_threshold  # [N]

    def cond(state):
        alive, _, num_kept = state
        return jnp.any(alive) & (num_kept < max_outputs)

    def body(state):
        alive, indices, num_kept = state
        best = jnp.argmax(alive)  # First alive = highest remaining score.
        ious = box_ops.elementwise_iou(sorted_boxes[best], sorted_boxes)  # [N]
        survives = ious <= iou_threshold  # [N]
        if sorted_classes is not None:
            survives |= sorted_classes != sorted_classes[best]
        # `best` is dropped even when its IoU with itself is not > threshold.
        alive = alive & survives & (jnp.arange(num_boxes) != best)
        indices = indices.at[num_kept].set(order[best])  # [K]
        return alive, indices, num_kept + 1

    _, indices, num_kept = jax.lax.while_loop(
        cond, body, (alive, indices, jnp.int32(0))
    )
    valid = jnp.arange(max_outputs) < num_kept  # [K]
    return indices, valid


def batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    iou_threshold: float | jax.Array,
    max_outputs: int,
    score_threshold: float | jax.Array = -jnp.inf,
) -> dict[str, jax.Array]:
    """Class-aware greedy NMS over a batch of images (vmapped `nms` with `classes`).

    Boxes of different classes never suppress each other. The IoU is that of
    the boxes as given, whatever the number of classes or the coordinates
    (no per-class coordinate offsets, which float32 would round).

    Args:
      boxes: `[B, N, 4]` xyxy boxes.
      scores: `[B, N]` scores.
      classes: `[B, N]` integer class ids.
      iou_threshold: suppression threshold (IoU > threshold suppresses).
      max_outputs: static number of output slots `K` per image.
      score_threshold: minimum score of a kept box.

    Returns:
      Dict of `boxes` `[B, K, 4]`, `scores` `[B, K]`, `classes` `[B, K]`,
      `indices` `[B, K]` int32 (into the `N` inputs) and `valid` `[B, K]` bool,
      in descending score order per image; padded slots have zero box, score,
      class and index and `valid` False.
    """

    def one_image(boxes, scores, classes):  # [N, 4], [N], [N]
        indices, valid = nms(
            boxes, scores, iou_threshold, max_outputs, score_threshold, classes
        )  # [K], [K]

        def kept(x: jax.Array) -> jax.Array:  # [N, ...] -> [K, ...], 0 on padding
            if x.shape[0] == 0:  # Static: nothing to gather from.
                return jnp.zeros((max_outputs, *x.shape[1:]), x.dtype)
            return jnp.where(valid.reshape(-1, *[1] * (x.ndim - 1)), x[indices], 0)

        return {
            "boxes": kept(boxes),  # [K, 4]
            "scores": kept(scores),  # [K]
            "classes": kept(classes),  # [K]
            "indices": indices,  # [K]
            "valid": valid,  # [K]
        }

    return jax.vmap(one_image)(boxes, scores, classes)
