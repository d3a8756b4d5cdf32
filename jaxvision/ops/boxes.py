"""Box conversions, IoU/GIoU and the box <-> delta transform.

Convention, throughout jaxvision: a box is the last axis of a float array,
`[..., 4]` = `(x0, y0, x1, y1)` in pixels, x to the right and y down (xyxy).
`(x0, y0)` is the top-left corner and `(x1, y1)` the bottom-right one, so the
width is `x1 - x0` (no "+1"). Only names containing `cxcywh` use
`(center_x, center_y, width, height)` instead.

Functions keep the input dtype; losses cast to float32 before calling them.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

# detectron2's clamp on dw/dh before `exp`: a box at most 1000/16 times wider
# (or taller) than its anchor, so a wild prediction cannot overflow.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
    """`[..., 4]` xyxy -> `[..., 4]` cxcywh."""
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)  # 4 x [...]
    return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    """`[..., 4]` cxcywh -> `[..., 4]` xyxy."""
    cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)  # 4 x [...]
    return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def area(boxes: jax.Array) -> jax.Array:
    """Area of `[..., 4]` xyxy boxes -> `[...]`; inverted boxes count as 0."""
    wh = jnp.maximum(boxes[..., 2:] - boxes[..., :2], 0)  # [..., 2]
    return wh[..., 0] * wh[..., 1]


def _safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """`num / den` where `den > 0`, else 0; NaN-free values and gradients."""
    positive = den > 0
    return jnp.where(positive, num / jnp.where(positive, den, 1), 0)


def _iou_and_union(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """IoU and union area of broadcastable `[..., 4]` xyxy boxes -> 2 x `[...]`."""
    top_left = jnp.maximum(a[..., :2], b[..., :2])  # [..., 2]
    bottom_right = jnp.minimum(a[..., 2:], b[..., 2:])  # [..., 2]
    wh = jnp.maximum(bottom_right - top_left, 0)  # [..., 2]
    intersection = wh[..., 0] * wh[..., 1]  # [...]
    union = area(a) + area(b) - intersection  # [...]
    return _safe_divide(intersection, union), union


def elementwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """IoU of matching pairs of xyxy boxes.

    Args:
      a: `[..., 4]` xyxy boxes.
      b: `[..., 4]` xyxy boxes, broadcastable against `a`.

    Returns:
      `[...]` IoU in `[0, 1]`. A pair whose union is empty (two zero-area
      boxes) has IoU 0, not NaN.
    """
    return _iou_and_union(a, b)[0]


def elementwise_giou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Generalized IoU (Rezatofighi et al., 2019) of matching pairs of xyxy boxes.

    `GIoU = IoU - (C - U) / C`, with `U` the union and `C` the area of the
    smallest box enclosing both.

    Args:
      a: `[..., 4]` xyxy boxes.
      b: `[..., 4]` xyxy boxes, broadcastable against `a`.

    Returns:
      `[...]` GIoU in `[-1, 1]`. Empty unions or enclosing boxes contribute 0
      instead of NaN (two identical points have GIoU 0).
    """
    iou, union = _iou_and_union(a, b)  # [...], [...]
    top_left = jnp.minimum(a[..., :2], b[..., :2])  # [..., 2]
    bottom_right = jnp.maximum(a[..., 2:], b[..., 2:])  # [..., 2]
    enclosing = area(jnp.concatenate([top_left, bottom_right], axis=-1))  # [...]
    return iou - _safe_divide(enclosing - union, enclosing)


def pairwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (xyxy) -> `[N, M]`.

    Degenerate pairs give 0 as in `elementwise_iou`. Batch with `jax.vmap`.
    """
    return elementwise_iou(a[:, None, :], b[None, :, :])  # [N, M]


def encode(
    boxes: jax.Array,
    anchors: jax.Array,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> jax.Array:
    """Deltas that take `anchors` to `boxes` (Faster R-CNN / RetinaNet transform).

    `dx = wx * (cx - acx) / aw`, `dy = wy * (cy - acy) / ah`,
    `dw = ww * log(w / aw)`, `dh = wh * log(h / ah)`.

    Args:
      boxes: `[..., 4]` xyxy target boxes.
      anchors: `[..., 4]` xyxy anchors, broadcastable against `boxes`.
      weights: `(wx, wy, ww, wh)` multipliers on the deltas (RetinaNet and the
        RPN use ones; Fast R-CNN heads use `(10, 10, 5, 5)`).

    Returns:
      `[..., 4]` deltas `(dx, dy, dw, dh)`. Finite only when boxes and anchors
      have positive width and height: give padding slots a real box (e.g. the
      anchor itself) before encoding.
    """
    wx, wy, ww, wh = weights
    cx, cy, w, h = jnp.moveaxis(xyxy_to_cxcywh(boxes), -1, 0)  # 4 x [...]
    acx, acy, aw, ah = jnp.moveaxis(xyxy_to_cxcywh(anchors), -1, 0)  # 4 x [...]
    return jnp.stack(
        [
            wx * (cx - acx) / aw,
            wy * (cy - acy) / ah,
            ww * jnp.log(w / aw),
            wh * jnp.log(h / ah),
        ],
        axis=-1,
    )  # [..., 4]


def decode(
    deltas: jax.Array,
    anchors: jax.Array,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    scale_clamp: float = DEFAULT_SCALE_CLAMP,
) -> jax.Array:
    """Boxes from `deltas` relative to `anchors`; the inverse of `encode`.

    Args:
      deltas: `[..., 4]` `(dx, dy, dw, dh)`.
      anchors: `[..., 4]` xyxy anchors, broadcastable against `deltas`.
      weights: the `(wx, wy, ww, wh)` given to `encode`.
      scale_clamp: upper bound on `dw / ww` and `dh / wh` before `exp`.

    Returns:
      `[..., 4]` xyxy boxes (not clipped to the image; see `clip`).
    """
    wx, wy, ww, wh = weights
    dx, dy, dw, dh = jnp.moveaxis(deltas, -1, 0)  # 4 x [...]
    acx, acy, aw, ah = jnp.moveaxis(xyxy_to_cxcywh(anchors), -1, 0)  # 4 x [...]
    cxcywh = jnp.stack(
        [
            dx / wx * aw + acx,
            dy / wy * ah + acy,
            jnp.exp(jnp.minimum(dw / ww, scale_clamp)) * aw,
            jnp.exp(jnp.minimum(dh / wh, scale_clamp)) * ah,
        ],
        axis=-1,
    )  # [..., 4]
    return cxcywh_to_xyxy(cxcywh)


def clip(boxes: jax.Array, height: float, width: float) -> jax.Array:
    """Clips `[..., 4]` xyxy boxes to the image `[0, width] x [0, height]` -> `[..., 4]`."""
    upper = jnp.array([width, height, width, height], boxes.dtype)  # [4]
    return jnp.clip(boxes, 0, upper)
