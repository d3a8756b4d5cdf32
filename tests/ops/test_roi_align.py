"""RoIAlign against hand-computed values, a plain NumPy reference and torchvision's output."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import roi_align as ra

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "roi_align.npz")
# Jitted, as in a model (and faster to test than op by op).
roi_align = jax.jit(ra.roi_align, static_argnums=(2, 3, 4))
multilevel_roi_align = jax.jit(ra.multilevel_roi_align, static_argnums=(1, 4, 5))


def _numpy_roi_align(features, box, scale, out_h, out_w, ratio):
    """torchvision's aligned=True RoIAlign for one box on one [H, W, C] map, written plainly."""
    height, width, channels = features.shape
    x0, y0, x1, y1 = [v * scale - 0.5 for v in box]
    bin_h, bin_w = (y1 - y0) / out_h, (x1 - x0) / out_w
    out = np.zeros((out_h, out_w, channels))
    for ph in range(out_h):
        for pw in range(out_w):
            total = np.zeros(channels)
            for iy in range(ratio):
                y = y0 + ph * bin_h + (iy + 0.5) * bin_h / ratio
                for ix in range(ratio):
                    x = x0 + pw * bin_w + (ix + 0.5) * bin_w / ratio
                    if y < -1 or y > height or x < -1 or x > width:
                        continue  # Reads 0.
                    y, x = max(y, 0.0), max(x, 0.0)
                    yl, xl = min(int(y), height - 1), min(int(x), width - 1)
                    yh, xh = min(yl + 1, height - 1), min(xl + 1, width - 1)
                    y, x = min(y, height - 1), min(x, width - 1)
                    ly, lx = y - yl, x - xl
                    total += ((1 - ly) * (1 - lx) * features[yl, xl] + (1 - ly) * lx * features[yl, xh]
                              + ly * (1 - lx) * features[yh, xl] + ly * lx * features[yh, xh])
            out[ph, pw] = total / (ratio * ratio)
    return out


def test_hand_computed_ramps_and_outside_boxes():
    ramp_x = np.tile(np.arange(4, dtype=np.float32), (4, 1))  # value = x
    features = jnp.asarray(np.stack([ramp_x, ramp_x.T, np.full((4, 4), 7.0)], -1)[None])
    boxes = jnp.asarray([[[0.0, 0.0, 4.0, 4.0], [8.0, 8.0, 12.0, 12.0]]])
    out = np.asarray(roi_align(features, boxes, (2, 2), 1.0, 2))
    # Box 0 covers pixels 0..3: bin centers of the samples at x = 0, 1 | 2, 3.
    np.testing.assert_allclose(out[0, 0, :, :, 0], [[0.5, 2.5], [0.5, 2.5]])
    np.testing.assert_allclose(out[0, 0, :, :, 1], [[0.5, 0.5], [2.5, 2.5]])
    np.testing.assert_allclose(out[0, 0, :, :, 2], 7.0)
    # Box 1 starts more than a pixel outside the 4 x 4 map: every sample reads 0.
    np.testing.assert_array_equal(out[0, 1], 0.0)


def test_matches_numpy_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 12, 3)).astype(np.float32)
    x0, y0 = rng.uniform(-8, 40, (2, 2, 10))
    boxes = np.stack([x0, y0, x0 + rng.uniform(0.5, 40, (2, 10)), y0 + rng.uniform(0.5, 30, (2, 10))],
                     -1).astype(np.float32)  # [2, 10, 4]
    out = np.asarray(roi_align(jnp.asarray(features), jnp.asarray(boxes), (3, 4), 0.25, 2))
    for b in range(2):
        for r in range(10):
            expected = _numpy_roi_align(features[b], boxes[b, r], 0.25, 3, 4, 2)
            np.testing.assert_allclose(out[b, r], expected, rtol=1e-5, atol=1e-5)


def test_matches_torchvision_on_one_level():
    golden = np.load(GOLDEN)
    out = roi_align(jnp.asarray(golden["single_features"]), jnp.asarray(golden["single_boxes"]),
                    (7, 7), 0.25, 2)
    np.testing.assert_allclose(np.asarray(out), golden["single_output"], rtol=1e-5, atol=1e-5)


def test_matches_torchvision_over_fpn_levels():
    golden = np.load(GOLDEN)
    boxes = jnp.asarray(golden["multi_boxes"])
    levels = ra.assign_levels(boxes, min_level=2, max_level=5)
    np.testing.assert_array_equal(np.asarray(levels), golden["multi_levels"])  # LevelMapper's.
    features = [jnp.asarray(golden[f"multi_features_{i}"]) for i in range(4)]
    out = multilevel_roi_align(features, (4, 8, 16, 32), boxes, levels - 2, (5, 5), 2)
    np.testing.assert_allclose(np.asarray(out), golden["multi_output"], rtol=1e-5, atol=1e-5)


def test_assign_levels_hand_values():
    sizes = [224, 112, 448, 111.9, 1, 5000, 0]
    boxes = jnp.asarray([[0.0, 0.0, s, s] for s in sizes])
    expected = [4, 3, 5, 2, 2, 5, 2]  # floor(4 + log2(s / 224)), clamped to 2..5.
    assert [math.floor(4 + math.log2(s / 224)) for s in sizes[:4]] == [4, 3, 5, 2]
    np.testing.assert_array_equal(np.asarray(ra.assign_levels(boxes, 2, 5)), expected)


def test_gradient_reaches_the_features_with_the_sample_weights():
    features = jnp.ones((1, 6, 6, 1))
    boxes = jnp.asarray([[[1.0, 1.0, 4.0, 5.0], [0.5, 2.0, 3.0, 3.0]]])  # Inside the map.

    def total(f):
        return ra.roi_align(f, boxes, (2, 3), 1.0, 2).sum()

    grad = np.asarray(jax.jit(jax.grad(total))(features))
    # Each output cell averages weights that sum to 1: the gradient sums to the cell count.
    assert grad.sum() == pytest.approx(2 * 2 * 3, rel=1e-6)
    assert (grad >= 0).all() and grad[0, 0, 0, 0] == 0.0  # Pixel (0, 0) is never sampled.


def test_rejects_adaptive_sampling():
    with pytest.raises(ValueError, match="sampling_ratio must be > 0"):
        ra.roi_align(jnp.ones((1, 4, 4, 1)), jnp.zeros((1, 1, 4)), (2, 2), 1.0, 0)
