"""FCOS: hand-built target assignment, parameter count, shapes, loss and an overfit check."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.models.fcos import (
    BACKGROUND_LABEL,
    FCOS,
    centerness_target,
    fcos_targets,
    ltrb_to_boxes,
)
from jaxvision.ops import boxes as box_ops
from tests.models.common import TINY, count_params, key

# ---------------------------------------------------------------------------
# Target assignment, by hand.
#
# A 64x64 image with levels (3, 4): P3 has stride 8 and 8x8 points at
# x, y in {4, 12, ..., 60} (P3 index = 8 * row + col, x = 4 + 8 col,
# y = 4 + 8 row); P4 has stride 16 and 4x4 points at {8, 24, 40, 56}
# (index 64 + 4 * row + col). size_ranges=(48,): P3 takes max(l,t,r,b) in
# [0, 48], P4 in [48, inf].
#
# Box A = (2, 4, 58, 42), class 0, 56 x 38, area 2128, centre (30, 23).
# Box B = (22, 14, 46, 34), class 2, 24 x 20, area 480, centre (34, 24).
# Box C = (26, 18, 30, 22), class 1, area 16, masked out (padding): ignored,
#   although it is the smallest box around P3 point (28, 20).
#
# Radius 1.5 (centre sampling):
#  A on P3: centre region (30 +- 12, 23 +- 12) = (18, 11, 42, 35), inside A.
#    Points strictly inside: x in {20, 28, 36} (cols 2-4), y in {12, 20, 28}
#    (rows 1-3). Their max distance is <= 38 (e.g. (20, 12): l=18, t=8,
#    r=38, b=30), within [0, 48]: 9 candidates.
#  B on P3: centre region (22, 12, 46, 36) clipped to B = (22, 14, 46, 34):
#    x in {28, 36, 44} (cols 3-5), y in {20, 28} (rows 2-3); max distance
#    <= 22: 6 candidates. B (area 480) beats A (2128) at the 4 shared points.
#  => P3 row 1: cols 2-4 -> A; rows 2, 3: col 2 -> A, cols 3-5 -> B (11 points).
#  A on P4: centre region (30 +- 24, 23 +- 24) clipped = (6, 4, 54, 42):
#    x in {8, 24, 40}, y in {8, 24, 40}. In range (max >= 48) only at x = 8
#    (r = 58 - 8 = 50); at x = 24 max = 34, at x = 40 max = 38.
#    => P4 col 0, rows 0-2 -> A (3 points).
#  B on P4: only (24, 24) is strictly inside B, max distance 22 < 48: none.
#  Total 14 positives.
#
# Radius 0 (centre sampling off): every point strictly inside a box.
#  A on P3: x in {4, ..., 52}, y in {12, 20, 28, 36}; in range needs
#    max(x - 2, 58 - x) <= 48, i.e. x in {12, ..., 44} (cols 1-5), rows 1-4:
#    20 points, of which B wins the same 6 as before.
#    (12, 20) (row 2, col 1): inside A, l=10, t=16, r=46, b=22, max 46 in
#    range, but x = 12 < 18 is outside A's centre region: negative at 1.5,
#    positive (class 0) at 0.
#  A on P4: x in {8, 24, 40, 56}, y in {8, 24, 40}; max >= 48 at x = 8
#    (r = 50) and x = 56 (l = 54): cols 0 and 3, rows 0-2 (6 points).
#  Total 26 positives.
# ---------------------------------------------------------------------------

HAND_IMAGE = (64, 64)
HAND_BOXES = np.array(
    [[2, 4, 58, 42], [22, 14, 46, 34], [26, 18, 30, 22]], np.float32
)
HAND_LABELS = np.array([0, 2, 1], np.int32)
HAND_MASK = np.array([True, True, False])


def hand_model(**kwargs):
    return FCOS(num_classes=3, levels=(3, 4), size_ranges=(48,), **kwargs)


def expected_labels(p3, p4):
    """Label grids {(row, col): class} for P3 (8x8) and P4 (4x4) -> [80]."""
    grid3 = np.full((8, 8), BACKGROUND_LABEL)
    grid4 = np.full((4, 4), BACKGROUND_LABEL)
    for (row, col), label in p3.items():
        grid3[row, col] = label
    for (row, col), label in p4.items():
        grid4[row, col] = label
    return np.concatenate([grid3.ravel(), grid4.ravel()])


def assign(radius):
    points, strides, ranges = hand_model().points(HAND_IMAGE)
    return jax.jit(fcos_targets, static_argnames="center_sampling_radius")(
        points, strides, ranges, jnp.asarray(HAND_BOXES), jnp.asarray(HAND_LABELS),
        jnp.asarray(HAND_MASK), center_sampling_radius=radius,
    )


def test_points_strides_and_ranges_per_level():
    points, strides, ranges = map(np.asarray, hand_model().points(HAND_IMAGE))
    assert points.shape == (80, 2) and strides.shape == (80,) and ranges.shape == (80, 2)
    np.testing.assert_array_equal(points[9], [12, 12])  # P3 row 1, col 1
    np.testing.assert_array_equal(points[64 + 5], [24, 24])  # P4 row 1, col 1
    np.testing.assert_array_equal(strides[[0, 63, 64, 79]], [8, 8, 16, 16])
    np.testing.assert_array_equal(ranges[[0, 63, 64]], [[0, 48], [0, 48], [48, np.inf]])
    # Default FCOS ranges for P3-P7.
    ranges = np.asarray(FCOS(num_classes=3).points((128, 128))[2])
    sizes = FCOS(num_classes=3).level_sizes((128, 128))
    assert sizes == (256, 64, 16, 4, 1)
    starts = np.cumsum((0,) + sizes[:-1])
    np.testing.assert_array_equal(
        ranges[starts],
        [[0, 64], [64, 128], [128, 256], [256, 512], [512, np.inf]],
    )


def test_targets_hand_built_with_center_sampling():
    labels, ltrb, positive = assign(1.5)
    a, b = 0, 2
    want = expected_labels(
        p3={(1, 2): a, (1, 3): a, (1, 4): a,
            (2, 2): a, (2, 3): b, (2, 4): b, (2, 5): b,
            (3, 2): a, (3, 3): b, (3, 4): b, (3, 5): b},
        p4={(0, 0): a, (1, 0): a, (2, 0): a},
    )
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(positive, want != BACKGROUND_LABEL)
    assert int(positive.sum()) == 14
    # (28, 20), P3 row 2 col 3: B wins over A and over the (masked) C.
    np.testing.assert_array_equal(ltrb[8 * 2 + 3], [6, 6, 18, 14])
    # (20, 12), P3 row 1 col 2: A: l = 20 - 2, t = 12 - 4, r = 58 - 20, b = 42 - 12.
    np.testing.assert_array_equal(ltrb[8 * 1 + 2], [18, 8, 38, 30])
    # (8, 24), P4 row 1 col 0: A: l = 6, t = 20, r = 50, b = 18.
    np.testing.assert_array_equal(ltrb[64 + 4], [6, 20, 50, 18])
    # Negatives have zero targets.
    np.testing.assert_array_equal(ltrb[~np.asarray(positive)], 0)


def test_targets_hand_built_without_center_sampling():
    labels, ltrb, positive = assign(0.0)
    a, b = 0, 2
    p3 = {(row, col): a for row in range(1, 5) for col in range(1, 6)}
    p3.update({(row, col): b for row in (2, 3) for col in (3, 4, 5)})
    p4 = {(row, col): a for row in range(3) for col in (0, 3)}
    want = expected_labels(p3, p4)
    np.testing.assert_array_equal(labels, want)
    assert int(positive.sum()) == 26
    # (12, 20): inside A and in range, but outside its centre region.
    index = 8 * 2 + 1
    np.testing.assert_array_equal(ltrb[index], [10, 16, 46, 22])
    assert bool(positive[index]) and int(labels[index]) == a
    assert not bool(assign(1.5)[2][index])
    # (56, 8), P4 row 0 col 3: l = 54 >= 48 puts it on P4.
    np.testing.assert_array_equal(ltrb[64 + 3], [54, 4, 2, 34])


def test_targets_size_range_bounds_are_inclusive():
    # Radius 0. P3 takes max(l, t, r, b) in [0, 48], P4 in [48, inf].
    points, strides, ranges = hand_model().points(HAND_IMAGE)
    targets = jax.jit(fcos_targets, static_argnames="center_sampling_radius")

    def one_box(box):
        return targets(
            points, strides, ranges, jnp.array([box], jnp.float32), jnp.array([1]),
            jnp.array([True]), center_sampling_radius=0.0,
        )

    # (12, 20), P3 row 2 col 1, in (4, 10, 60, 30): (8, 10, 48, 10), max 48 = P3's max.
    _, ltrb, positive = one_box([4, 10, 60, 30])
    assert bool(positive[8 * 2 + 1])
    np.testing.assert_array_equal(ltrb[8 * 2 + 1], [8, 10, 48, 10])
    # (8, 24), P4 row 1 col 0, in (0, 10, 56, 30): (8, 14, 48, 6), max 48 = P4's min.
    _, ltrb, positive = one_box([0, 10, 56, 30])
    assert bool(positive[64 + 4])
    np.testing.assert_array_equal(ltrb[64 + 4], [8, 14, 48, 6])


def test_targets_equal_areas_and_no_boxes():
    points, strides, ranges = hand_model().points(HAND_IMAGE)
    # All boxes masked: all background, even with NaN coordinates.
    boxes = jnp.array([[np.nan, 0, 64, 64], [0, 0, 64, 64]], jnp.float32)
    labels, ltrb, positive = fcos_targets(
        points, strides, ranges, boxes, jnp.array([5, 1]), jnp.array([False, False]), 1.5
    )
    assert BACKGROUND_LABEL == -1  # Not a class id: one_hot makes it all zeros.
    assert not positive.any() and (labels == BACKGROUND_LABEL).all()
    assert np.isfinite(ltrb).all() and (ltrb == 0).all()
    # A zero-slot ground truth array is allowed too.
    labels, _, positive = fcos_targets(
        points, strides, ranges, jnp.zeros((0, 4)), jnp.zeros((0,), jnp.int32),
        jnp.zeros((0,), bool), 1.5,
    )
    assert labels.shape == (80,) and not positive.any()


def test_centerness_target_hand_values():
    # (6, 6, 18, 14): sqrt(6/18 * 6/14) = sqrt(1/3 * 3/7) = sqrt(1/7) = 0.37796.
    # The centre of a box: 1. A negative (all zeros): 0, not NaN.
    got = centerness_target(jnp.array([[6, 6, 18, 14], [5, 7, 5, 7], [0, 0, 0, 0]]))
    np.testing.assert_allclose(got, [math.sqrt(1 / 7), 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        centerness_target(assign(1.5)[1][8 * 2 + 3]), math.sqrt(1 / 7), rtol=1e-6
    )


# ---------------------------------------------------------------------------
# Parameter count and shapes.
# ---------------------------------------------------------------------------

# COCO setting (num_classes=80, resnet50, FPN 256, 4-conv towers, GN 32):
#   backbone: torchvision resnet50 25,557,032 - fc (2048 * 1000 + 1000)
#             = 23,508,032 (BatchNorm scale/bias are params here)
#   FPN: lateral 1x1: (512 + 1024 + 2048) * 256 + 3 * 256 =    918,272
#        output 3x3 (P3-P5), P6 (from P5), P7: 5 * (9*256*256 + 256)
#             = 5 * 590,080                                 = 2,950,400
#        total                                              = 3,868,672
#   towers: 2 towers x 4 x (590,080 conv + 512 GroupNorm) = 4,724,736
#   cls_logits 9*256*80 + 80 = 184,400; bbox_pred 9*256*4 + 4 = 9,220;
#   centerness 9*256 + 1 = 2,305; scales 5
#   total = 23,508,032 + 3,868,672 + 4,724,736 + 184,400 + 9,220 + 2,305 + 5
#         = 32,297,370
COCO_PARAMS = 32_297_370


def test_param_count_coco_setting():
    model = FCOS(num_classes=80)
    init = functools.partial(model.init, train=False)
    variables = jax.eval_shape(init, key(0), jnp.zeros((1, 128, 128, 3)))
    assert count_params(variables) == COCO_PARAMS
    params = variables["params"]
    assert set(params) == {
        "backbone", "fpn", "cls_tower", "box_tower", "cls_logits", "bbox_pred",
        "centerness", *(f"scale_p{level}" for level in range(3, 8)),
    }


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_output_shapes_and_dtypes(dtype):
    model = FCOS(num_classes=3, dtype=dtype, **TINY)
    images = jnp.zeros((2, 64, 64, 3))
    variables = jax.eval_shape(functools.partial(model.init, train=False), key(0), images)
    outputs = jax.eval_shape(
        functools.partial(model.apply, train=False), variables, images
    )
    # 64x64: 8*8 + 4*4 + 2*2 + 1*1 + 1*1 = 86 points.
    assert model.level_sizes((64, 64)) == (64, 16, 4, 1, 1)
    assert {k: (v.shape, v.dtype) for k, v in outputs.items()} == {
        "logits": ((2, 86, 3), jnp.float32),
        "ltrb": ((2, 86, 4), jnp.float32),
        "centerness": ((2, 86), jnp.float32),
    }
    # Non-square, not a multiple of the largest stride: ceil sizes.
    assert model.level_sizes((96, 200)) == (12 * 25, 6 * 13, 3 * 7, 2 * 4, 1 * 2)
    outputs = jax.eval_shape(
        functools.partial(model.apply, train=False), variables, jnp.zeros((1, 96, 200, 3))
    )
    assert outputs["logits"].shape == (1, sum(model.level_sizes((96, 200))), 3)


# ---------------------------------------------------------------------------
# Loss.
# ---------------------------------------------------------------------------


def jit_loss(model):
    """`model.loss`, jitted: one compile instead of one per op."""
    return jax.jit(model.loss, static_argnums=4)


def random_outputs(seed, batch, num_points, num_classes=3):
    k1, k2, k3 = jax.random.split(key(seed), 3)
    return {
        "logits": jax.random.normal(k1, (batch, num_points, num_classes)),
        "ltrb": 20 * jax.random.uniform(k2, (batch, num_points, 4)),
        "centerness": jax.random.normal(k3, (batch, num_points)),
    }


def test_padded_rows_have_no_effect():
    model = hand_model()
    outputs = random_outputs(0, 1, 80)
    boxes, labels, mask = HAND_BOXES[None], HAND_LABELS[None], HAND_MASK[None]
    loss3, metrics3 = jit_loss(model)(outputs, boxes, labels, mask, HAND_IMAGE)
    # 5 more masked rows: zeros, a NaN, a tiny box over a positive, the whole image.
    garbage = np.array(
        [[0, 0, 0, 0], [np.nan, 1, 2, np.nan], [27, 19, 29, 21], [0, 0, 64, 64],
         [-100, -100, 1e9, 1e9]],
        np.float32,
    )
    boxes8 = np.concatenate([boxes, garbage[None]], axis=1)
    labels8 = np.concatenate([labels, [[1, 77, -3, 2, 0]]], axis=1)
    mask8 = np.concatenate([mask, np.zeros((1, 5), bool)], axis=1)
    loss8, metrics8 = jit_loss(model)(outputs, boxes8, labels8, mask8, HAND_IMAGE)
    assert metrics3["num_positives"] == 14
    np.testing.assert_allclose(loss8, loss3, rtol=1e-6)
    for name in metrics3:
        np.testing.assert_allclose(metrics8[name], metrics3[name], rtol=1e-6)


def test_image_without_boxes_gives_finite_background_loss():
    model = hand_model()
    outputs = random_outputs(1, 1, 80)
    boxes = jnp.zeros((1, 4, 4))
    labels = jnp.zeros((1, 4), jnp.int32)
    mask = jnp.zeros((1, 4), bool)
    loss, metrics = jit_loss(model)(outputs, boxes, labels, mask, HAND_IMAGE)
    assert np.isfinite(loss)
    assert metrics["num_positives"] == 0
    assert metrics["box_loss"] == 0 and metrics["centerness_loss"] == 0
    # All points are background; normalized by max(0, 1) = 1.
    p = jax.nn.sigmoid(outputs["logits"])
    want = np.sum(0.75 * p**2 * -np.log1p(-p))
    np.testing.assert_allclose(metrics["cls_loss"], want, rtol=1e-5)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_loss_hand_values_and_batch_normalization():
    model = hand_model()
    outputs = random_outputs(2, 2, 80)
    # Zero distances: every predicted box is the point itself, inside its target,
    # so IoU = 0 and GIoU = 0 - (A - A) / A = 0: loss 1 at every positive, and
    # the centerness-weighted mean is exactly 1.
    outputs["ltrb"] = jnp.zeros_like(outputs["ltrb"])
    boxes = np.stack([HAND_BOXES, HAND_BOXES])
    labels = np.stack([HAND_LABELS, HAND_LABELS])
    # Image 0 has A and B (14 positives); image 1 only B (6 positives).
    mask = np.array([[True, True, False], [False, True, False]])
    _, batch = jit_loss(model)(outputs, boxes, labels, mask, HAND_IMAGE)
    assert batch["num_positives"] == 20
    np.testing.assert_allclose(batch["box_loss"], 1.0, rtol=1e-6)

    # Perfect distances: zero box loss.
    _, target_ltrb, positive = assign(1.5)
    perfect = {k: v[:1] for k, v in outputs.items()} | {"ltrb": target_ltrb[None]}
    _, metrics = jit_loss(model)(perfect, boxes[:1], labels[:1], mask[:1], HAND_IMAGE)
    np.testing.assert_allclose(metrics["box_loss"], 0.0, atol=1e-6)
    # Perfect except zero distances at (28, 20) (loss 1 there): the
    # centerness-weighted mean is sqrt(1/7) / (sum of centerness targets).
    one_off = perfect | {"ltrb": perfect["ltrb"].at[0, 8 * 2 + 3].set(0.0)}
    _, metrics = jit_loss(model)(one_off, boxes[:1], labels[:1], mask[:1], HAND_IMAGE)
    ctr_sum = centerness_target(target_ltrb)[positive].sum()
    np.testing.assert_allclose(metrics["box_loss"], math.sqrt(1 / 7) / ctr_sum, rtol=1e-5)

    # Normalized by the positives of the whole batch, not per image.
    singles = [
        jit_loss(model)(
            jax.tree.map(lambda x, i=i: x[i : i + 1], outputs),
            boxes[i : i + 1], labels[i : i + 1], mask[i : i + 1], HAND_IMAGE,
        )[1]
        for i in range(2)
    ]
    for name in ("cls_loss", "centerness_loss"):
        want = sum(m[name] * m["num_positives"] for m in singles) / 20
        np.testing.assert_allclose(batch[name], want, rtol=1e-5)
    np.testing.assert_allclose(
        batch["loss"],
        batch["cls_loss"] + batch["box_loss"] + batch["centerness_loss"],
        rtol=1e-6,
    )
    # box_loss_weight scales the box term.
    weighted = jit_loss(hand_model(box_loss_weight=2.0))
    total, _ = weighted(outputs, boxes, labels, mask, HAND_IMAGE)
    np.testing.assert_allclose(total, batch["loss"] + batch["box_loss"], rtol=1e-6)


# ---------------------------------------------------------------------------
# Decoding and a tiny overfit run.
# ---------------------------------------------------------------------------


def test_detect_decodes_clips_and_scores():
    model = hand_model()
    outputs = {
        "logits": jnp.zeros((1, 80, 3)).at[0, 9, 1].set(2.0),
        "ltrb": jnp.zeros((1, 80, 4)).at[0, 0].set(jnp.array([10.0, 1.0, 2.0, 3.0])),
        "centerness": jnp.zeros((1, 80)).at[0, 9].set(-1.0),
    }
    boxes, scores = model.detect(outputs, HAND_IMAGE)
    assert boxes.shape == (1, 80, 4) and scores.shape == (1, 80, 3)
    # Point (4, 4) with (l, t, r, b) = (10, 1, 2, 3): (-6, 3, 6, 7), x0 clipped to 0.
    np.testing.assert_allclose(boxes[0, 0], [0, 3, 6, 7])
    # P4 row 3 col 3, point (56, 56), zero distances: the point itself.
    np.testing.assert_allclose(boxes[0, 79], [56, 56, 56, 56])
    # sqrt(sigmoid(0) * sigmoid(0)) = 0.5; sqrt(sigmoid(2) * sigmoid(-1)).
    np.testing.assert_allclose(scores[0, 0], 0.5, rtol=1e-6)
    sig = jax.nn.sigmoid
    np.testing.assert_allclose(scores[0, 9, 1], math.sqrt(sig(2.0) * sig(-1.0)), rtol=1e-6)
    np.testing.assert_allclose(scores[0, 9, 0], math.sqrt(0.5 * sig(-1.0)), rtol=1e-6)
    # Decoding inverts the target distances.
    points, _, _ = model.points(HAND_IMAGE)
    _, ltrb, _ = assign(1.5)
    np.testing.assert_allclose(ltrb_to_boxes(points, ltrb)[8 * 2 + 3], HAND_BOXES[1])


# One jitted program (a single compile) serves the last three tests: init,
# 100 adam steps on a batch of a 64x64 image with two boxes of different
# classes (painted so they are visible) and an image without boxes, and the
# outputs before and after. The backbone's BatchNorm uses its (initial)
# running statistics, train=False, so nothing but the params changes.
OVERFIT_BOXES = np.array(
    [[[6, 8, 34, 40], [30, 28, 60, 56]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32
)
OVERFIT_LABELS = np.array([[1, 2], [0, 0]], np.int32)
OVERFIT_MASK = np.array([[True, True], [False, False]])


@pytest.fixture(scope="module")
def overfit():
    # Three levels and one-conv towers: a third less to compile than TINY.
    model = FCOS(num_classes=3, **(TINY | {"levels": (3, 4, 5), "head_convs": 1}))
    images = 0.3 * jax.random.normal(key(0), (2, 64, 64, 3))
    images = images.at[0, 8:40, 6:34, 0].add(1.5).at[0, 28:56, 30:60, 1].add(1.5)
    tx = optax.adam(1e-3)

    @jax.jit
    def run(rng):
        variables = model.init(rng, images, train=False)

        def loss_fn(params):
            outputs = model.apply({**variables, "params": params}, images, train=False)
            loss, metrics = model.loss(
                outputs, OVERFIT_BOXES, OVERFIT_LABELS, OVERFIT_MASK, (64, 64)
            )
            return loss, (metrics, outputs)

        def step(carry, _):
            params, opt_state = carry
            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            leaves = jax.tree.leaves(grads)
            finite = jnp.all(jnp.array([jnp.isfinite(g).all() for g in leaves]))
            nonzero = jnp.any(jnp.array([(g != 0).any() for g in leaves]))
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), (*aux, finite & nonzero)

        init_params = variables["params"]
        _, (metrics, outputs, grads_ok) = jax.lax.scan(
            step, (init_params, tx.init(init_params)), None, length=100
        )
        # Outputs at the first step (initial params) and at the last (99 updates).
        before = jax.tree.map(lambda x: x[0], outputs)
        after = jax.tree.map(lambda x: x[-1], outputs)
        return init_params, before, after, metrics, grads_ok

    return model, *run(key(1))


def test_init_values_and_outputs(overfit):
    _, params, outputs, *_ = overfit
    np.testing.assert_allclose(params["cls_logits"]["bias"], -math.log(99), rtol=1e-6)
    for level in (3, 4, 5):
        assert params[f"scale_p{level}"]["scale"] == 1.0
    assert outputs["logits"].shape == (2, 64 + 16 + 4, 3)
    assert (outputs["ltrb"] >= 0).all() and np.isfinite(outputs["ltrb"]).all()
    # The initial foreground probability is prior_prob, up to N(0, 0.01) weights.
    np.testing.assert_allclose(jax.nn.sigmoid(outputs["logits"]).mean(), 0.01, rtol=0.2)


def test_gradient_is_finite(overfit):
    *_, metrics, grads_ok = overfit
    # Finite and not all zero at every step (image 1 has no boxes at all).
    assert grads_ok.all()
    assert np.isfinite(metrics["loss"]).all()
    # 2 boxes of side ~30 on P3 (stride 8, radius 1.5: <= 3 x 3 points each).
    assert 6 <= metrics["num_positives"][0] <= 18


def test_overfits_one_image(overfit):
    model, _, _, outputs, metrics, _ = overfit
    # Centerness BCE has a floor (the entropy of its soft targets), so compare
    # the classification and box terms.
    fit = metrics["cls_loss"] + metrics["box_loss"]
    assert fit[-1] < 0.1 * fit[0], fit[::10]
    assert metrics["loss"][-1] < 0.5 * metrics["loss"][0], metrics["loss"][::10]

    boxes, scores = model.detect(outputs, (64, 64))
    for m in range(2):
        label = int(OVERFIT_LABELS[0, m])
        best = int(jnp.argmax(scores[0, :, label]))
        iou = box_ops.elementwise_iou(boxes[0, best], OVERFIT_BOXES[0, m])
        assert iou > 0.5, (m, iou, boxes[0, best])
    # The top-scoring candidate of image 0 is one of the boxes, with its class.
    best, cls = np.unravel_index(int(jnp.argmax(scores[0])), scores.shape[1:])
    ious = box_ops.pairwise_iou(boxes[0, best][None], OVERFIT_BOXES[0])[0]
    assert ious.max() > 0.5 and cls == OVERFIT_LABELS[0, int(ious.argmax())]
    # Nothing confident on the image without boxes.
    assert scores[1].max() < 0.5 * scores[0].max()
