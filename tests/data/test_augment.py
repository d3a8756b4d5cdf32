"""On-device preprocessing against NumPy references and hand-computed values."""

import jax
import numpy as np

from jaxvision.data import augment

_MEAN = (0.5, 0.4, 0.3)
_STD = (0.2, 0.25, 0.5)

# Jitted as in the train step (eager dispatch of these small ops is slow).
_STATIC = ("crop_size", "pad", "flip", "random_resized_crop", "mean", "std")
_train = jax.jit(augment.preprocess_for_train, static_argnames=_STATIC)
_eval = jax.jit(
    augment.preprocess_for_eval, static_argnames=("crop_size", "mean", "std")
)


def _images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _normalized(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255 - np.float32(_MEAN)) / np.float32(_STD)


def test_eval_center_crops_and_normalizes():
    images = _images((2, 10, 9, 3))
    out = _eval(images, crop_size=6, mean=_MEAN, std=_STD)
    assert out.dtype == np.float32 and out.shape == (2, 6, 6, 3)
    # Offsets: (10 - 6) // 2 = 2 rows, (9 - 6) // 2 = 1 column.
    np.testing.assert_allclose(
        out, _normalized(images[:, 2:8, 1:7]), rtol=1e-6, atol=1e-6
    )
    # One hand-computed pixel: 255 in channel 0 -> (1 - 0.5) / 0.2 = 2.5.
    white = np.full((1, 4, 4, 3), 255, np.uint8)
    out = _eval(white, crop_size=4, mean=_MEAN, std=_STD)
    np.testing.assert_allclose(out[0, 0, 0], [2.5, 2.4, 1.4], rtol=1e-6)


def test_train_full_size_crop_without_pad_is_identity_up_to_flip():
    images = _images((16, 8, 8, 3))
    rng = jax.random.key(0)
    out = _train(images, rng, crop_size=8, mean=_MEAN, std=_STD)
    np.testing.assert_allclose(out, _normalized(images), rtol=1e-6, atol=1e-6)

    flipped = np.asarray(
        _train(images, rng, crop_size=8, flip=True, mean=_MEAN, std=_STD)
    )
    expected, mirrored = _normalized(images), _normalized(images[:, :, ::-1])
    was_flipped = [
        np.allclose(f, m, atol=1e-6) for f, m in zip(flipped, mirrored, strict=True)
    ]
    for f, e, m, flip in zip(flipped, expected, mirrored, was_flipped, strict=True):
        np.testing.assert_allclose(f, m if flip else e, atol=1e-6)
    assert 0 < sum(was_flipped) < len(images)  # Per example, not per batch.


def test_train_crop_is_a_window_of_the_zero_padded_image():
    images = _images((32, 8, 8, 1))
    out = np.asarray(
        _train(images, jax.random.key(1), crop_size=8, pad=1, mean=0.0, std=1.0)
    )
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(np.float32) / 255
    offsets = []
    for crop, image in zip(out, padded, strict=True):
        matches = [
            (y, x)
            for y in range(3)
            for x in range(3)
            if np.allclose(crop, image[y : y + 8, x : x + 8], atol=1e-6)
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 1  # Each example gets its own offset.


def test_train_is_deterministic_given_the_rng():
    images = _images((8, 12, 12, 3))
    kwargs = {"crop_size": 10, "pad": 2, "flip": True, "mean": _MEAN, "std": _STD}
    a = _train(images, jax.random.key(7), **kwargs)
    b = _train(images, jax.random.key(7), **kwargs)
    c = _train(images, jax.random.key(8), **kwargs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_resized_crop_shape_and_range():
    images = _images((4, 40, 30, 3))
    kwargs = {
        "crop_size": 16,
        "random_resized_crop": True,
        "flip": True,
        "mean": _MEAN,
        "std": _STD,
    }
    out = np.asarray(_train(images, jax.random.key(0), **kwargs))
    assert out.shape == (4, 16, 16, 3) and out.dtype == np.float32
    assert np.isfinite(out).all()
    low, high = (
        _normalized(np.zeros(3, np.uint8)),
        _normalized(np.full(3, 255, np.uint8)),
    )
    assert (out >= low - 1e-4).all() and (out <= high + 1e-4).all()
    # A constant image stays constant: weights are normalized, the box is inside.
    gray = np.full((4, 40, 30, 3), 100, np.uint8)
    out = _train(gray, jax.random.key(1), **kwargs)
    np.testing.assert_allclose(out, _normalized(gray[:, :16, :16]), atol=1e-5)


def test_random_resized_crop_falls_back_to_a_center_box():
    # In a 2x64 image no box with area >= 8% of 128 and ratio <= 4/3 fits, so
    # the crop is the centered 2 x 8/3 box: columns 30.67..33.33, resized to
    # 4 columns (scale 1.5). Pixel values equal their column index, so output
    # column j is bilinear at x = (j + 0.5) / 1.5 + 30.67 - 0.5.
    image = np.tile(np.arange(64, dtype=np.uint8), (2, 1))[
        None, :, :, None
    ]  # [1, 2, 64, 1]
    out = _train(
        image,
        jax.random.key(3),
        crop_size=4,
        random_resized_crop=True,
        mean=0.0,
        std=1.0,
    )
    left = (64 - 8 / 3) / 2
    expected = [((j + 0.5) / 1.5 + left - 0.5) / 255 for j in range(4)]
    np.testing.assert_allclose(out[0, :, :, 0], np.tile(expected, (4, 1)), rtol=1e-5)


# Detection: scale jitter + flip with boxes kept in sync.
_det_train = jax.jit(
    augment.detection_train,
    static_argnames=("scale_range", "flip", "mean", "std", "min_size"),
)
_det_eval = jax.jit(augment.detection_eval, static_argnames=("mean", "std"))


def _rectangle_images(batch, size, box) -> np.ndarray:
    """uint8 [batch, size, size, 1]: black with a white integer `box` (xyxy)."""
    x0, y0, x1, y1 = box
    images = np.zeros((batch, size, size, 1), np.uint8)
    images[:, y0:y1, x0:x1] = 255
    return images


def _bright_box(image: np.ndarray) -> np.ndarray | None:
    """xyxy bounding box of the pixels above half intensity, None if none."""
    ys, xs = np.nonzero(image[..., 0] > 0.5)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _check_boxes_match_pixels(images, boxes, mask, row=0) -> int:
    """Kept boxes equal their bright-pixel box within 1 px; returns #dropped."""
    dropped = 0
    for image, box, keep in zip(images, boxes[:, row], mask[:, row], strict=True):
        bright = _bright_box(image)
        if keep:
            assert bright is not None
            np.testing.assert_allclose(box, bright, atol=1.0)
        else:
            dropped += 1
            np.testing.assert_array_equal(box, 0)
            # Less than 1 px of the box is left: at most a one-pixel sliver.
            if bright is not None:
                assert min(bright[2] - bright[0], bright[3] - bright[1]) <= 1
    return dropped


def test_detection_eval_normalizes():
    images = _images((2, 8, 8, 3))
    out = _det_eval(images, mean=_MEAN, std=_STD)
    assert out.dtype == np.float32 and out.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out, _normalized(images), rtol=1e-6, atol=1e-6)


def test_detection_train_unit_scale_without_flip_is_identity():
    images = _images((4, 16, 16, 3))
    boxes = np.zeros((4, 3, 4), np.float32)
    boxes[:, 0] = [1.5, 2.0, 10.0, 12.25]
    boxes[:, 1] = [0.0, 0.0, 16.0, 16.0]
    mask = np.array([[True, True, False]] * 4)
    out, out_boxes, out_mask = _det_train(
        images,
        boxes,
        mask,
        jax.random.key(0),
        scale_range=(1.0, 1.0),
        flip=False,
        mean=_MEAN,
        std=_STD,
    )
    assert out.dtype == np.float32 and out.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(out, _normalized(images), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_boxes, boxes, atol=1e-5)
    np.testing.assert_array_equal(out_mask, mask)


def test_detection_train_boxes_follow_the_pixels():
    size, box, batch = 32, (6, 8, 18, 20), 64
    images = _rectangle_images(batch, size, box)
    boxes = np.zeros((batch, 2, 4), np.float32)
    boxes[:, 0] = box
    mask = np.array([[True, False]] * batch)
    kwargs = {"scale_range": (0.5, 1.5), "mean": 0.0, "std": 1.0}
    results = {}
    for flip in (False, True):
        out, out_boxes, out_mask = map(
            np.asarray,
            _det_train(images, boxes, mask, jax.random.key(1), flip=flip, **kwargs),
        )
        # Each example has its own key: this checks `batch` random draws.
        assert _check_boxes_match_pixels(out, out_boxes, out_mask) == 0
        np.testing.assert_array_equal(out_boxes[:, 1], 0)
        assert not out_mask[:, 1].any()
        # The jitter really resizes and moves the box (width 12 at scale 1).
        widths = out_boxes[:, 0, 2] - out_boxes[:, 0, 0]
        assert widths.min() < 8 and widths.max() > 16
        assert len(np.unique(out_boxes[:, 0, 0].round(1))) > batch // 2
        results[flip] = out_boxes[:, 0]
    # Same key, same jitter: flipped examples are the mirror of the plain ones.
    plain, flipped = results[False], results[True]
    mirrored = np.stack(
        [size - plain[:, 2], plain[:, 1], size - plain[:, 0], plain[:, 3]], -1
    )
    was_flipped = np.all(np.abs(flipped - mirrored) < 1e-4, axis=-1)
    was_kept = np.all(np.abs(flipped - plain) < 1e-4, axis=-1)
    assert (was_flipped | was_kept).all()
    assert 0 < was_flipped.sum() < batch  # Per example, not per batch.


def test_detection_train_drops_boxes_that_leave_the_canvas():
    size, corner = 32, (28, 28, 32, 32)
    images = _rectangle_images(32, size, corner)
    boxes = np.zeros((32, 4, 4), np.float32)
    boxes[:, 0] = corner  # Scaled by 2 it is in view only near the largest shift.
    boxes[:, 1] = [10.0, 10.0, 10.4, 20.0]  # 0.8 px wide at scale 2: always dropped.
    boxes[:, 2] = [1.0, 1.0, 9.0, 9.0]  # Padding with garbage: must come out zero.
    boxes[:, 3] = np.nan  # Padding that is NaN: must come out zero too.
    mask = np.array([[True, True, False, False]] * 32)
    out, out_boxes, out_mask = map(
        np.asarray,
        _det_train(
            images,
            boxes,
            mask,
            jax.random.key(2),
            scale_range=(2.0, 2.0),
            flip=True,
            mean=0.0,
            std=1.0,
        ),
    )
    assert np.isfinite(out).all() and np.isfinite(out_boxes).all()
    dropped = _check_boxes_match_pixels(out, out_boxes, out_mask)
    assert dropped > len(images) // 2
    assert not out_mask[:, 1:].any()
    np.testing.assert_array_equal(out_boxes[:, 1:], 0)


def test_detection_train_boxes_match_a_numpy_reference():
    size, batch, scale_range, min_size = 24, 16, (0.5, 1.5), 2.0
    gen = np.random.default_rng(0)
    corners = gen.uniform(0, size, (batch, 6, 2, 2)).astype(np.float32)
    boxes = np.concatenate([corners.min(2), corners.max(2)], -1)  # [B, 6, 4]
    mask = gen.random((batch, 6)) < 0.8
    boxes[~mask] = 0
    rng = jax.random.key(3)
    _, out_boxes, out_mask = _det_train(
        _images((batch, size, size, 3)),
        boxes,
        mask,
        rng,
        scale_range=scale_range,
        flip=False,
        mean=_MEAN,
        std=_STD,
        min_size=min_size,
    )
    # The same key derivation as `detection_train`: one key per example, split
    # into (jitter key, flip key).
    params = jax.vmap(
        lambda key: augment._scale_jitter_params(
            jax.random.split(key)[0], size, scale_range
        )
    )(jax.random.split(rng, batch))
    for i, (s, tx, ty) in enumerate(zip(*map(np.asarray, params), strict=True)):
        assert scale_range[0] <= s <= scale_range[1]
        low, high = sorted((0.0, (1 - s) * size))
        assert low <= tx <= high and low <= ty <= high
        expected = np.clip(boxes[i] * s + [tx, ty, tx, ty], 0, size)
        wh = expected[:, 2:] - expected[:, :2]
        keep = mask[i] & (wh >= min_size).all(-1)
        expected[~keep] = 0
        np.testing.assert_array_equal(out_mask[i], keep)
        np.testing.assert_allclose(out_boxes[i], expected, atol=1e-4)
    assert 0 < (mask & ~np.asarray(out_mask)).sum()  # Some real boxes dropped.


# Instance masks travel with their boxes.


def _l_shape_example(size=64, grid=28):
    """A white L on black, its tight box and its G x G mask (from the host decode)."""
    from jaxvision import data

    shape = np.zeros((size, size), np.uint8)
    shape[12:48, 16:24] = 1  # Vertical bar ...
    shape[40:48, 16:44] = 1  # ... and foot pointing right: mirroring shows.
    box = [16 / size, 12 / size, 44 / size, 48 / size]  # normalized xyxy
    record = {"image": shape[..., None] * 255, "image/id": 0, "instances": shape[..., None],
              "objects": {"bbox": [np.float32([box[1], box[0], box[3], box[2]])],
                          "label": [np.int64(0)]}}
    example = data.DetectionDecode(size, max_boxes=2, mask_size=grid)(record)
    return example["image"], example["boxes"], example["box_mask"], example["masks"]


def _paste(mask: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """bool [size, size]: pixels whose centre falls in `box` and in a mask cell >= 0.5."""
    grid = mask.shape[-1]
    x0, y0, x1, y1 = box
    centres = np.arange(size) + 0.5
    cols = np.floor((centres - x0) / (x1 - x0) * grid).astype(int)  # [S]
    rows = np.floor((centres - y0) / (y1 - y0) * grid).astype(int)  # [S]
    inside = (rows[:, None] >= 0) & (rows[:, None] < grid) & (cols >= 0) & (cols < grid)
    values = mask[np.clip(rows, 0, grid - 1)[:, None], np.clip(cols, 0, grid - 1)]
    return inside & (values >= 0.5)


def test_detection_train_masks_stay_on_their_objects_through_crop_and_flip():
    size, batch = 64, 32
    image, boxes, box_mask, masks = _l_shape_example(size)
    images, boxes, box_mask, masks = (
        np.stack([a] * batch) for a in (image, boxes, box_mask, masks))
    kwargs = {"scale_range": (1.2, 2.0), "mean": 0.0, "std": 1.0}
    results = {}
    for flip in (False, True):
        out, out_boxes, out_mask, out_masks = map(np.asarray, _det_train(
            images, boxes, box_mask, jax.random.key(4), flip=flip, masks=masks, **kwargs))
        assert out_masks.dtype == np.float32 and out_masks.shape == (batch, 2, 28, 28)
        assert (out_masks >= 0).all() and (out_masks <= 1).all()
        clipped = 0
        for i in np.flatnonzero(out_mask[:, 0]):
            box = out_boxes[i, 0]
            clipped += bool((box[:2] == 0).any() or (box[2:] == size).any())
            pasted = _paste(out_masks[i, 0], box, size)
            foreground = out[i, ..., 0] > 0.5
            inter, union = (pasted & foreground).sum(), (pasted | foreground).sum()
            # A box cut down to the L's empty corner shows no object: both empty.
            assert inter > 0.85 * union or union == 0
        assert clipped > batch // 4  # Many boxes are cut by the canvas edge.
        np.testing.assert_array_equal(out_masks[:, 1], 0)  # Padding row.
        results[flip] = out_boxes[:, 0], out_masks[:, 0]
    # Same key, same jitter: flipped examples have the mirrored masks.
    (plain_boxes, plain_masks), (flip_boxes, flip_masks) = results[False], results[True]
    mirrored = np.stack([size - plain_boxes[:, 2], plain_boxes[:, 1],
                         size - plain_boxes[:, 0], plain_boxes[:, 3]], -1)
    was_flipped = np.all(np.abs(flip_boxes - mirrored) < 1e-4, axis=-1) & ~np.all(
        np.abs(flip_boxes - plain_boxes) < 1e-4, axis=-1)
    assert 0 < was_flipped.sum() < batch
    np.testing.assert_array_equal(flip_masks[was_flipped], plain_masks[was_flipped][..., ::-1])
    np.testing.assert_array_equal(flip_masks[~was_flipped], plain_masks[~was_flipped])


def test_detection_train_masks_are_unchanged_when_no_box_is_clipped():
    images = _images((4, 16, 16, 3))
    boxes = np.zeros((4, 2, 4), np.float32)
    boxes[:, 0] = [1.5, 2.0, 10.0, 12.25]
    masks = np.random.default_rng(0).random((4, 2, 5, 5)).astype(np.float32)
    mask = np.array([[True, False]] * 4)
    *_, out_masks = _det_train(images, boxes, mask, jax.random.key(0), scale_range=(1.0, 1.0),
                               flip=False, mean=_MEAN, std=_STD, masks=masks)
    np.testing.assert_allclose(out_masks[:, 0], masks[:, 0], atol=1e-6)
    np.testing.assert_array_equal(out_masks[:, 1], 0)


def test_detection_train_masks_of_dropped_boxes_and_padding_are_zero():
    size = 32
    images = _rectangle_images(32, size, (28, 28, 32, 32))
    boxes = np.zeros((32, 5, 4), np.float32)
    boxes[:, 0] = (28, 28, 32, 32)  # Scaled by 2 it is in view only near the largest shift.
    boxes[:, 1] = [10.0, 10.0, 10.4, 20.0]  # 0.8 px wide at scale 2: always dropped.
    boxes[:, 2] = [5.0, 5.0, 5.0, 5.0]  # No area at all: dropped, no NaN.
    boxes[:, 3] = [1.0, 1.0, 9.0, 9.0]  # Padding with garbage.
    boxes[:, 4] = np.nan  # Padding that is NaN.
    mask = np.array([[True, True, True, False, False]] * 32)
    masks = np.ones((32, 5, 6, 6), np.uint8)
    _, _, out_mask, out_masks = map(np.asarray, _det_train(
        images, boxes, mask, jax.random.key(2), scale_range=(2.0, 2.0), flip=True,
        mean=0.0, std=1.0, masks=masks))
    assert np.isfinite(out_masks).all()
    assert not out_mask[:, 1:].any() and out_mask[:, 0].any() and not out_mask[:, 0].all()
    np.testing.assert_array_equal(out_masks[~out_mask], 0)
    # A full mask stays full on whatever part of its box is left.
    np.testing.assert_allclose(out_masks[out_mask], 1.0, atol=1e-6)


def test_detection_train_without_masks_is_unchanged_by_the_mask_path():
    images = _images((8, 24, 24, 3))
    boxes = np.tile(np.float32([[2, 3, 20, 22], [0, 0, 0, 0]]), (8, 1, 1))
    mask = np.array([[True, False]] * 8)
    kwargs = {"scale_range": (0.5, 1.5), "flip": True, "mean": _MEAN, "std": _STD}
    without = _det_train(images, boxes, mask, jax.random.key(5), **kwargs)
    with_masks = _det_train(images, boxes, mask, jax.random.key(5),
                            masks=np.ones((8, 2, 4, 4), np.uint8), **kwargs)
    assert len(without) == 3 and len(with_masks) == 4
    for a, b in zip(without, with_masks[:3], strict=True):
        np.testing.assert_array_equal(a, b)
