"""RoIAlign (Mask R-CNN), on one feature map or over FPN levels: gather-based, static shapes.

Conventions are torchvision's `roi_align(..., aligned=True)` (Detectron2's
ROIAlignV2): a box `(x0, y0, x1, y1)` in input pixels is scaled by the level's
`1 / stride` and shifted by -0.5, so pixel centers sit at integer feature
coordinates. Each of the `out_h x out_w` bins averages `sampling_ratio^2`
bilinear samples at the centers of a regular sub-grid. A sample more than one
pixel outside the map reads 0; one within a pixel of the edge reads the
clamped edge. `sampling_ratio` must be fixed (torchvision's adaptive 0 would
make shapes depend on box sizes).

Features are NHWC. Everything is differentiable (gradients flow to the
features, not to the boxes' integer corners) and jit-able with a fixed
number of boxes per image.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def assign_levels(
    boxes: jax.Array, min_level: int, max_level: int,
    canonical_level: int = 4, canonical_size: float = 224.0,
) -> jax.Array:
    """FPN level of each box (Lin et al. 2017, eq. 1): floor(k0 + log2(sqrt(area) / 224)).

    Args:
      boxes: `[..., 4]` xyxy in input pixels.
      min_level, max_level: the pyramid's levels (e.g. 2 and 5 for P2-P5); results
        are clamped to them.
      canonical_level, canonical_size: a box of `canonical_size`^2 pixels goes to
        `canonical_level`.

    Returns:
      int32 `[...]`.
    """
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)  # 4 x [...]
    size = jnp.sqrt(jnp.maximum((x1 - x0) * (y1 - y0), 0.0))
    # As torchvision's LevelMapper: + 1e-6, so that exact powers of two round up.
    # An empty box gives log2(0) = -inf, which the clip sends to `min_level`.
    level = jnp.floor(canonical_level + jnp.log2(size / canonical_size) + 1e-6)
    return jnp.clip(level, min_level, max_level).astype(jnp.int32)


def _axis_samples(start: jax.Array, end: jax.Array, bins: int, ratio: int, size: jax.Array):
    """Bilinear taps along one axis for every box.

    Args:
      start, end: `[R]` box edges in feature coordinates (already shifted by -0.5).
      bins, ratio: output bins and samples per bin along this axis.
      size: `[R]` the feature map's extent along this axis for each box.

    Returns:
      `(low, high, w_low, w_high)`, each `[ratio, R, bins]` (sample `i` of
      every bin first): the two integer taps and their weights (0 for a
      sample more than a pixel outside).
    """
    step = (end - start) / bins / ratio  # [R]
    # Sample i of bin b sits at (b * ratio + i + 0.5) steps from the start.
    offsets = (jnp.arange(bins)[None, :] * ratio + jnp.arange(ratio)[:, None]).astype(
        start.dtype) + 0.5  # [ratio, bins]
    pos = start[None, :, None] + offsets[:, None, :] * step[None, :, None]  # [ratio, R, bins]
    size = size[None, :, None].astype(pos.dtype)  # [1, R, 1]
    inside = (pos >= -1.0) & (pos <= size)
    pos = jnp.clip(pos, 0.0, size - 1.0)
    low = jnp.floor(pos)
    high = jnp.minimum(low + 1.0, size - 1.0)
    frac = pos - low
    return (low.astype(jnp.int32), high.astype(jnp.int32),
            jnp.where(inside, 1.0 - frac, 0.0), jnp.where(inside, frac, 0.0))


def _align_one_image(
    flat: jax.Array, boxes: jax.Array, level: jax.Array, offsets: jax.Array,
    heights: jax.Array, widths: jax.Array, scales: jax.Array,
    output_size: tuple[int, int], sampling_ratio: int,
) -> jax.Array:
    """RoIAlign of one image's boxes from its levels flattened into one array.

    Args:
      flat: `[sum_l H_l * W_l, C]`, the levels' pixels one after the other.
      boxes: `[R, 4]` xyxy in input pixels; level: `[R]` index into the levels.
      offsets, heights, widths, scales: `[L]` where each level starts in
        `flat`, its size and its feature pixels per input pixel.

    Returns:
      `[R, out_h, out_w, C]`.
    """
    out_h, out_w = output_size
    scale = scales[level]  # [R]
    x0, y0, x1, y1 = [boxes[:, i] * scale - 0.5 for i in range(4)]  # 4 x [R]
    height, width = heights[level], widths[level]  # [R]
    ys = _axis_samples(y0, y1, out_h, sampling_ratio, height)  # 4 x [ratio, R, out_h]
    xs = _axis_samples(x0, x1, out_w, sampling_ratio, width)  # 4 x [ratio, R, out_w]
    base = offsets[level][:, None, None]  # [R, 1, 1]
    row = width[:, None, None]  # [R, 1, 1]
    out = 0.0
    # One small gather per (sub-sample, tap), each already [R, out_h, out_w, C]:
    # on CPUs much faster than one gather of all samples reduced afterwards.
    for i in range(sampling_ratio):
        for j in range(sampling_ratio):
            for y, wy in ((ys[0][i], ys[2][i]), (ys[1][i], ys[3][i])):  # [R, out_h] each
                for x, wx in ((xs[0][j], xs[2][j]), (xs[1][j], xs[3][j])):  # [R, out_w] each
                    index = base + y[:, :, None] * row + x[:, None, :]  # [R, out_h, out_w]
                    weight = wy[:, :, None] * wx[:, None, :]  # [R, out_h, out_w]
                    out = out + flat[index] * weight[..., None].astype(flat.dtype)
    return out / sampling_ratio**2  # [R, out_h, out_w, C]


def multilevel_roi_align(
    features: Sequence[jax.Array], strides: Sequence[int], boxes: jax.Array,
    levels: jax.Array, output_size: tuple[int, int], sampling_ratio: int = 2,
) -> jax.Array:
    """RoIAlign of each box from the feature map of its level.

    Args:
      features: per level, `[B, H_l, W_l, C]` (the same B and C).
      strides: per level, its stride in input pixels (e.g. 4, 8, 16, 32 for P2-P5).
      boxes: `[B, R, 4]` xyxy in input pixels.
      levels: int `[B, R]` index into `features` for each box (e.g.
        `assign_levels(boxes, 2, 5) - 2`).
      output_size: `(out_h, out_w)`, e.g. (7, 7) for box heads, (14, 14) for masks.
      sampling_ratio: samples per bin along each axis (> 0).

    Returns:
      `[B, R, out_h, out_w, C]` in the features' dtype.
    """
    return _multilevel(features, [1.0 / s for s in strides], boxes, levels, output_size,
                       sampling_ratio)


def _multilevel(features, scales, boxes, levels, output_size, sampling_ratio):
    """`multilevel_roi_align` with each level's scale (1 / stride) instead of its stride."""
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be > 0 for static shapes, got {sampling_ratio}.")
    if len(features) != len(scales):
        raise ValueError(f"{len(features)} feature maps but {len(scales)} strides.")
    b, c = features[0].shape[0], features[0].shape[-1]
    sizes = [(f.shape[1], f.shape[2]) for f in features]
    flat = jnp.concatenate([f.reshape(b, -1, c) for f in features], axis=1)  # [B, sum HW, C]
    offsets = jnp.asarray([0, *[h * w for h, w in sizes]][:-1], jnp.int32).cumsum()  # [L]
    heights = jnp.asarray([h for h, _ in sizes], jnp.int32)
    widths = jnp.asarray([w for _, w in sizes], jnp.int32)
    align = functools.partial(_align_one_image, output_size=tuple(output_size),
                              sampling_ratio=sampling_ratio)
    align = jax.vmap(align, in_axes=(0, 0, 0, None, None, None, None))  # Over the batch.
    return align(flat, boxes.astype(jnp.float32), levels, offsets, heights, widths,
                 jnp.asarray(scales, jnp.float32))


def roi_align(
    features: jax.Array, boxes: jax.Array, output_size: tuple[int, int],
    spatial_scale: float, sampling_ratio: int = 2,
) -> jax.Array:
    """RoIAlign on one feature map (torchvision's `roi_align`, `aligned=True`, NHWC).

    Args:
      features: `[B, H, W, C]`.
      boxes: `[B, R, 4]` xyxy in input pixels.
      output_size: `(out_h, out_w)`.
      spatial_scale: feature pixels per input pixel (1 / stride).
      sampling_ratio: samples per bin along each axis (> 0).

    Returns:
      `[B, R, out_h, out_w, C]`.
    """
    levels = jnp.zeros(boxes.shape[:2], jnp.int32)  # [B, R]
    return _multilevel([features], [spatial_scale], boxes, levels, output_size, sampling_ratio)
