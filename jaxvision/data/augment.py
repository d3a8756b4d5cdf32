"""On-device preprocessing: pure `jnp`, jit-able, static shapes.

Randomness is per example: the batch key is split into one key per example
and the per-example function is `vmap`ped over the batch.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxvision.ops.roi_align import roi_align

# Inception-style random-resized-crop ranges (Szegedy et al., 2015).
_RRC_SCALE = (0.08, 1.0)  # Fraction of the image area kept.
_RRC_RATIO = (3 / 4, 4 / 3)  # Range of width / height.
_RRC_ATTEMPTS = 10  # Boxes sampled; the first that fits the image is used.


def preprocess_for_train(
    images: jax.Array,
    rng: jax.Array,
    *,
    crop_size: int,
    pad: int = 0,
    flip: bool = False,
    random_resized_crop: bool = False,
    mean: float | Sequence[float],
    std: float | Sequence[float],
) -> jax.Array:
    """Random crop (or random-resized-crop), optional flip, then normalize.

    Args:
        images: uint8 [B, H, W, C].
        rng: PRNG key for the whole batch.
        crop_size: Output height and width.
        pad: Zero padding added on every side before a random crop
            (ignored with `random_resized_crop`).
        flip: Whether to flip each image horizontally with probability 1/2.
        random_resized_crop: Whether to use an Inception-style crop (scale
            (0.08, 1), aspect ratio (3/4, 4/3)) resized to `crop_size`.
        mean: Per-channel mean of the [0, 1]-scaled pixels.
        std: Per-channel standard deviation of the [0, 1]-scaled pixels.

    Returns:
        float32 [B, crop_size, crop_size, C].
    """

    def one(image: jax.Array, key: jax.Array) -> jax.Array:
        crop_key, flip_key = jax.random.split(key)
        image = image.astype(jnp.float32)  # [H, W, C]
        if random_resized_crop:
            image = _random_resized_crop(image, crop_key, crop_size)
        else:
            image = _random_crop(image, crop_key, crop_size, pad)
        if flip:
            image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
        return image  # [crop, crop, C]

    keys = jax.random.split(rng, images.shape[0])  # [B] keys
    crops = jax.vmap(one)(images, keys)  # [B, crop, crop, C]
    return _normalize(crops, mean, std)


def preprocess_for_eval(
    images: jax.Array,
    *,
    crop_size: int,
    mean: float | Sequence[float],
    std: float | Sequence[float],
) -> jax.Array:
    """Center crop, then normalize.

    Args:
        images: uint8 [B, H, W, C] with H, W >= crop_size.
        crop_size: Output height and width.
        mean: Per-channel mean of the [0, 1]-scaled pixels.
        std: Per-channel standard deviation of the [0, 1]-scaled pixels.

    Returns:
        float32 [B, crop_size, crop_size, C].
    """
    _, height, width, _ = images.shape
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    crops = images[:, top : top + crop_size, left : left + crop_size]
    return _normalize(crops.astype(jnp.float32), mean, std)  # [B, crop, crop, C]


def detection_train(
    images: jax.Array,
    boxes: jax.Array,
    box_mask: jax.Array,
    rng: jax.Array,
    *,
    scale_range: tuple[float, float],
    flip: bool,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    min_size: float = 1.0,
    masks: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
    """Random scale jitter (crop or pad), optional flip, then normalize.

    Per example, with s ~ Uniform(scale_range), the canvas is scaled by s
    (bilinear, antialiased) and translated by t = (tx, ty) into an S x S
    output: pixel coordinates map as p' = p * s + t. Each t component is
    uniform between 0 and (1 - s) * S, so for s > 1 the output is a random
    window of the scaled image and for s < 1 the scaled image lands at a
    random place inside the canvas. Pixels outside the scaled image are 0,
    like the host's bottom/right padding.

    Boxes get the same map, are clipped to the canvas, and are dropped when
    less than `min_size` px wide or high remains (mask False, coordinates 0).
    Padded rows (mask False) stay zeros and False; no NaN is produced. With
    `flip`, image and boxes are mirrored together with probability 1/2
    (x0' = S - x1, x1' = S - x0).

    Instance masks (G x G grids over their boxes, as `DetectionDecode`
    makes them) stay the masks of their boxes: scaling and translating moves
    a box and its mask together, so a mask changes only where its box is
    clipped by the canvas: it is cropped to the visible part and resampled to
    G x G (`roi_align`, bilinear at each cell centre). Flipped boxes get
    mirrored masks; dropped boxes and padded rows get zeros.

    Each example's key is split into (jitter key, flip key); the jitter key
    drives `_scale_jitter_params`.

    Args:
        images: uint8 [B, S, S, C] canvases.
        boxes: float32 [B, M, 4] xyxy in canvas pixels.
        box_mask: bool [B, M], True for real boxes.
        rng: PRNG key for the whole batch.
        scale_range: (low, high) of the uniform scale factor, e.g. (0.5, 1.5).
        flip: Whether to flip each example horizontally with probability 1/2.
        mean: Per-channel mean of the [0, 1]-scaled pixels.
        std: Per-channel standard deviation of the [0, 1]-scaled pixels.
        min_size: Boxes with a clipped width or height below this are dropped.
        masks: Optional uint8 or float [B, M, G, G] instance masks in [0, 1],
            one per box.

    Returns:
        (float32 [B, S, S, C] normalized images, float32 [B, M, 4] boxes,
        bool [B, M] box_mask), and float32 [B, M, G, G] masks in [0, 1] as a
        fourth element when `masks` is given.
    """
    size = images.shape[1]  # S

    def one(image, boxes, mask, key, masks):
        jitter_key, flip_key = jax.random.split(key)
        s, tx, ty = _scale_jitter_params(jitter_key, size, scale_range)
        image = jax.image.scale_and_translate(
            image.astype(jnp.float32),
            shape=image.shape,
            spatial_dims=(0, 1),
            scale=jnp.stack([s, s]),
            translation=jnp.stack([ty, tx]),
            method="bilinear",
            antialias=True,
        )  # [S, S, C], 0 outside the scaled image
        shift = jnp.stack([tx, ty, tx, ty])  # [4]
        moved = boxes.astype(jnp.float32) * s + shift  # [M, 4]
        boxes = jnp.clip(moved, 0, size)  # [M, 4]
        if masks is not None:
            masks = _crop_masks(masks.astype(jnp.float32), moved, boxes)  # [M, G, G]
        if flip:
            flipped = jax.random.bernoulli(flip_key)
            x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)  # 4 x [M]
            mirrored = jnp.stack([size - x1, y0, size - x0, y1], axis=-1)  # [M, 4]
            image = jnp.where(flipped, image[:, ::-1], image)
            boxes = jnp.where(flipped, mirrored, boxes)
            if masks is not None:
                masks = jnp.where(flipped, masks[..., ::-1], masks)  # [M, G, G]
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # [M]
        # NaN compares False, so a NaN row is dropped and zeroed too.
        keep = mask & (width >= min_size) & (height >= min_size)  # [M]
        boxes = jnp.where(keep[:, None], boxes, 0.0)  # [M, 4]
        if masks is None:
            return image, boxes, keep
        return image, boxes, keep, jnp.where(keep[:, None, None], masks, 0.0)

    keys = jax.random.split(rng, images.shape[0])  # [B] keys
    images, *rest = jax.vmap(one)(images, boxes, box_mask, keys, masks)
    return _normalize(images, mean, std), *rest


def _crop_masks(masks: jax.Array, moved: jax.Array, clipped: jax.Array) -> jax.Array:
    """Resamples each box's mask to the part of the box left after clipping.

    Args:
        masks: float32 [M, G, G], each a grid over its box `moved`.
        moved: float32 [M, 4] xyxy boxes before clipping.
        clipped: float32 [M, 4] the same boxes clipped to the canvas.

    Returns:
        float32 [M, G, G] grids over the clipped boxes; a mask is unchanged
        where its box is not clipped (bilinear at cell centres is then the
        identity). Rows with empty or non-finite boxes come out finite.
    """
    grid = masks.shape[-1]  # G
    origin = jnp.tile(moved[:, :2], 2)  # [M, 4] (x0, y0, x0, y0)
    extent = jnp.tile(moved[:, 2:] - moved[:, :2], 2)  # [M, 4] (w, h, w, h)
    extent = jnp.where(extent > 0, extent, 1.0)  # Empty boxes are dropped later.
    # The visible part of each box in its mask's cell coordinates.
    region = jnp.nan_to_num((clipped - origin) / extent * grid)  # [M, 4]
    crops = roi_align(
        masks[..., None], region[:, None], output_size=(grid, grid),
        spatial_scale=1.0, sampling_ratio=1,
    )  # [M, 1, G, G, 1]: each mask is a one-image batch with one box.
    # Bilinear weights sum to 1 only up to rounding.
    return jnp.clip(crops[:, 0, ..., 0], 0.0, 1.0)  # [M, G, G]


def detection_eval(
    images: jax.Array,
    *,
    mean: float | Sequence[float],
    std: float | Sequence[float],
) -> jax.Array:
    """Normalize only: the host already produced the fixed S x S canvas.

    Args:
        images: uint8 [B, S, S, C].
        mean: Per-channel mean of the [0, 1]-scaled pixels.
        std: Per-channel standard deviation of the [0, 1]-scaled pixels.

    Returns:
        float32 [B, S, S, C].
    """
    return _normalize(images.astype(jnp.float32), mean, std)


def _normalize(
    images: jax.Array, mean: float | Sequence[float], std: float | Sequence[float]
) -> jax.Array:
    """(x / 255 - mean) / std over the channel (last) axis; float32 in and out."""
    mean = jnp.asarray(mean, jnp.float32)  # [] or [C]
    std = jnp.asarray(std, jnp.float32)  # [] or [C]
    return (images / 255.0 - mean) / std


def _random_crop(image: jax.Array, key: jax.Array, size: int, pad: int) -> jax.Array:
    """Zero-pads by `pad`, then takes a uniformly placed [size, size] window."""
    image = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))  # [H + 2p, W + 2p, C]
    height, width, channels = image.shape
    y_key, x_key = jax.random.split(key)
    top = jax.random.randint(y_key, (), 0, height - size + 1)
    left = jax.random.randint(x_key, (), 0, width - size + 1)
    return jax.lax.dynamic_slice(image, (top, left, 0), (size, size, channels))


def _random_resized_crop(image: jax.Array, key: jax.Array, size: int) -> jax.Array:
    """Inception crop: a random box of the image resized to [size, size].

    Box sides are continuous (no rounding), so the crop is an exact
    `scale_and_translate` of the image. If no sampled box fits, the largest
    center box with an allowed aspect ratio is used (as torchvision does).
    """
    height, width, channels = image.shape
    area_key, ratio_key, y_key, x_key = jax.random.split(key, 4)
    fraction = jax.random.uniform(
        area_key, (_RRC_ATTEMPTS,), minval=_RRC_SCALE[0], maxval=_RRC_SCALE[1]
    )
    log_ratio = jax.random.uniform(
        ratio_key,
        (_RRC_ATTEMPTS,),
        minval=math.log(_RRC_RATIO[0]),
        maxval=math.log(_RRC_RATIO[1]),
    )
    area, ratio = height * width * fraction, jnp.exp(log_ratio)  # [attempts]
    box_ws, box_hs = jnp.sqrt(area * ratio), jnp.sqrt(area / ratio)  # [attempts]
    fits = (box_ws <= width) & (box_hs <= height)  # [attempts]
    found, first = fits.any(), jnp.argmax(fits)

    # Fallback: the whole image, narrowed to the nearest allowed aspect ratio.
    box_w = jnp.where(found, box_ws[first], min(width, height * _RRC_RATIO[1]))
    box_h = jnp.where(found, box_hs[first], min(height, width / _RRC_RATIO[0]))
    y_frac = jnp.where(found, jax.random.uniform(y_key), 0.5)
    x_frac = jnp.where(found, jax.random.uniform(x_key), 0.5)
    top, left = y_frac * (height - box_h), x_frac * (width - box_w)

    # Output edge 0 lands on input (top, left) and the box fills `size` pixels.
    scale = jnp.stack([size / box_h, size / box_w])  # [2]
    translation = -jnp.stack([top, left]) * scale  # [2]
    return jax.image.scale_and_translate(
        image,
        shape=(size, size, channels),
        spatial_dims=(0, 1),
        scale=scale,
        translation=translation,
        method="bilinear",
        antialias=True,
    )  # [size, size, C]


def _scale_jitter_params(
    key: jax.Array, size: int, scale_range: tuple[float, float]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Samples one example's scale s and translation (tx, ty): p' = p * s + t.

    s ~ Uniform(scale_range); tx, ty are independently uniform between 0 and
    (1 - s) * size: negative for s > 1 (the size x size window stays inside
    the scaled image), positive for s < 1 (the scaled image stays inside the
    canvas), 0 for s = 1.
    """
    scale_key, shift_key = jax.random.split(key)
    low, high = scale_range
    s = jax.random.uniform(scale_key, (), minval=low, maxval=high)  # []
    shift = jax.random.uniform(shift_key, (2,)) * (1 - s) * size  # [2] = (tx, ty)
    return s, shift[0], shift[1]
