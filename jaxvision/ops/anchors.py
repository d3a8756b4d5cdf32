"""Anchors (RetinaNet) and points (FCOS) for the levels of a feature pyramid.

Level `l` has stride `2**l` and a feature map of `ceil(H / stride)` x
`ceil(W / stride)` cells, which is what a ResNet with "SAME" padding produces
(exact when `H` and `W` are multiples of the largest stride). The cell in row
`i`, column `j` is centred at pixel `((j + 0.5) * stride, (i + 0.5) * stride)`.
For the even strides of a pyramid this equals FCOS's `stride // 2 + j * stride`.

Boxes are xyxy in pixels (see `jaxvision.ops.boxes`); points are `(x, y)`.
Everything is computed from static Python values, so under `jax.jit` the
results are constants.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

# RetinaNet: anchors of side anchor_scale * stride * scale at every level.
DEFAULT_ANCHOR_SCALE = 4.0
DEFAULT_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def fpn_strides(levels: Sequence[int] = (3, 4, 5, 6, 7)) -> tuple[int, ...]:
    """Strides `2**level` of the pyramid levels, e.g. `(8, 16, 32, 64, 128)`."""
    return tuple(2**level for level in levels)


def feature_size(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """`(ceil(H / stride), ceil(W / stride))` for `image_size = (H, W)`."""
    height, width = image_size
    return math.ceil(height / stride), math.ceil(width / stride)


def points_for_level(image_size: tuple[int, int], stride: int) -> jax.Array:
    """Cell centres of one level (FCOS locations).

    Args:
      image_size: `(H, W)` of the (padded) input image in pixels.
      stride: the level's stride in pixels.

    Returns:
      `[Hs * Ws, 2]` float32 `(x, y)` at `((j + 0.5) * stride, (i + 0.5) * stride)`,
      ordered row-major over `(i, j)` (y, then x), `Hs, Ws = feature_size(...)`.
    """
    feat_h, feat_w = feature_size(image_size, stride)
    xs = (jnp.arange(feat_w, dtype=jnp.float32) + 0.5) * stride  # [Ws]
    ys = (jnp.arange(feat_h, dtype=jnp.float32) + 0.5) * stride  # [Hs]
    grid_y, grid_x = jnp.meshgrid(ys, xs, indexing="ij")  # [Hs, Ws] each
    return jnp.stack([grid_x, grid_y], axis=-1).reshape(-1, 2)  # [Hs * Ws, 2]


def anchors_for_level(
    image_size: tuple[int, int],
    stride: int,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
) -> jax.Array:
    """Anchors of one level, `A = len(sizes) * len(aspect_ratios)` per cell.

    An anchor of size `s` and aspect ratio `r = height / width` has area `s**2`:
    width `s / sqrt(r)`, height `s * sqrt(r)`, centred on its cell (see
    `points_for_level`).

    Args:
      image_size: `(H, W)` of the (padded) input image in pixels.
      stride: the level's stride in pixels.
      sizes: anchor sides in pixels, e.g. `32 * 2**(0, 1/3, 2/3)` at stride 8.
      aspect_ratios: `height / width` of the anchors.

    Returns:
      `[Hs * Ws * A, 4]` float32 xyxy anchors ordered row-major over
      `(i, j, a)`, with `a = size_index * len(aspect_ratios) + ratio_index`;
      a head's `[B, Hs, Ws, A * K]` output reshaped to `[B, Hs * Ws * A, K]`
      lines up with them.
    """
    widths = [s / math.sqrt(r) for s in sizes for r in aspect_ratios]  # A
    heights = [s * math.sqrt(r) for s in sizes for r in aspect_ratios]  # A
    half_wh = jnp.array([widths, heights], jnp.float32).T / 2  # [A, 2]
    offsets = jnp.concatenate([-half_wh, half_wh], axis=-1)  # [A, 4]
    centers = points_for_level(image_size, stride)  # [Hs * Ws, 2]
    centers = jnp.tile(centers, 2)  # [Hs * Ws, 4] as (x, y, x, y)
    per_cell = centers[:, None, :] + offsets[None, :, :]  # [Hs * Ws, A, 4]
    return per_cell.reshape(-1, 4)  # [Hs * Ws * A, 4]


def anchors(
    image_size: tuple[int, int],
    levels: Sequence[int] = (3, 4, 5, 6, 7),
    anchor_scale: float = DEFAULT_ANCHOR_SCALE,
    scales: Sequence[float] = DEFAULT_SCALES,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
) -> list[jax.Array]:
    """RetinaNet anchors for every level; sizes `anchor_scale * stride * scales`.

    Args:
      image_size: `(H, W)` of the (padded) input image in pixels.
      levels: pyramid levels; level `l` has stride `2**l`.
      anchor_scale: base anchor side in units of the stride (4: 32 px at P3).
      scales: multipliers on the base side within a level.
      aspect_ratios: `height / width` of the anchors.

    Returns:
      One `[Hs * Ws * A, 4]` xyxy array per level (see `anchors_for_level`);
      `jnp.concatenate` them to match heads concatenated in the same level order.
    """
    return [
        anchors_for_level(
            image_size,
            stride,
            [anchor_scale * stride * s for s in scales],
            aspect_ratios,
        )
        for stride in fpn_strides(levels)
    ]


def points(
    image_size: tuple[int, int], levels: Sequence[int] = (3, 4, 5, 6, 7)
) -> list[jax.Array]:
    """FCOS locations for every level: one `[Hs * Ws, 2]` `(x, y)` array per level."""
    return [points_for_level(image_size, stride) for stride in fpn_strides(levels)]
