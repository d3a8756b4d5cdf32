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
