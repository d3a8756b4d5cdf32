"""RetinaNet: hand-built anchor matching, parameter count, shapes, loss invariants, overfit."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.models.retinanet import (
    MATCH_BACKGROUND,
    MATCH_FOREGROUND,
    MATCH_IGNORE,
    RetinaNet,
    match_anchors,
)
from jaxvision.ops import boxes as box_ops
from tests.models.common import TINY, count_params, key

IMAGE_SIZE = (64, 64)
# Levels 3..7 on 64x64: 8x8, 4x4, 2x2, 1x1, 1x1 cells, 9 anchors each.
NUM_ROWS = 9 * (64 + 16 + 4 + 1 + 1)  # 774


def strip(x0, x1):
    """A box spanning `[x0, x1]` in x and `[0, 10]` in y.

    Two such boxes of lengths `a` and `b` overlapping by `o` in x have
    IoU `o / (a + b - o)`, which keeps the hand computations one-dimensional.
    """
    return [x0, 0.0, x1, 10.0]


MATCH = {"foreground_iou": 0.5, "background_iou": 0.4}


def test_match_anchors_hand_computed():
    boxes = jnp.array(
        [
            strip(0, 10),  # b0, real
            strip(45, 55),  # b1, real
            strip(20, 30),  # padding, identical to a4: would give it IoU 1
            strip(4, 14),  # padding, identical to a1: would give it IoU 1
        ]
    )
    box_mask = jnp.array([True, True, False, False])
    anchors = jnp.array(
        [
            strip(0, 10),  # a0: b0 overlap 10 -> IoU 1 -> fg, b0
            strip(4, 14),  # a1: b0 overlap 6 -> 6/14 = 0.43 in [0.4, 0.5) -> ignore
            strip(40, 50),  # a2: b1 overlap 5 -> 5/15 = 1/3 < 0.4, but b1's best
            strip(50, 60),  # a3: b1 overlap 5 -> 1/3, tied with a2 for b1's best
            strip(20, 30),  # a4: IoU 0 with b0 and b1 -> bg
            strip(38, 48),  # a5: b1 overlap 3 -> 3/17 = 0.18, not b1's best -> bg
            strip(2, 12),  # a6: b0 overlap 8 -> 8/12 = 0.67 >= 0.5 -> fg, b0
        ]
    )
    # b0's best IoU is 1 (a0, already fg); b1's is 1/3, reached by a2 and a3,
    # which both become foreground matched to b1 (low-quality matches).
    index, state = match_anchors(
        anchors, boxes, box_mask, **MATCH, allow_low_quality_matches=True
    )
    assert (MATCH_FOREGROUND, MATCH_BACKGROUND, MATCH_IGNORE) == (1, 0, -1)
    np.testing.assert_array_equal(state, [1, -1, 1, 1, 0, 0, 1])
    fg = np.asarray(state) == 1
    np.testing.assert_array_equal(np.asarray(index)[fg], [0, 1, 1, 0])
    assert index.dtype == jnp.int32 and state.dtype == jnp.int32
    assert (np.asarray(index) < 2).all()  # never a padding column

    # Without low-quality matches b1 gets no anchor: a2 and a3 are background.
    _, state = match_anchors(
        anchors, boxes, box_mask, **MATCH, allow_low_quality_matches=False
    )
    np.testing.assert_array_equal(state, [1, -1, 0, 0, 0, 0, 1])


def test_match_anchors_low_quality_keeps_the_anchors_own_best_box():
    # detectron2's Matcher only relabels the anchor; its match stays its argmax.
    boxes = jnp.array([strip(0, 10), strip(6, 26)])  # A (length 10), B (length 20)
    anchors = jnp.array(
        [
            strip(0, 10),  # A: IoU 1. B: overlap 4 -> 4/26 = 0.15.
            strip(4, 14),  # A: overlap 6 -> 6/14 = 0.43. B: overlap 8 -> 8/22 = 0.36.
        ]
    )
    # B's best anchor is the second (0.36 > 0.15): it becomes foreground, but is
    # matched to A, which it overlaps more (0.43 > 0.36).
    index, state = match_anchors(
        anchors, boxes, jnp.array([True, True]), **MATCH, allow_low_quality_matches=True
    )
    np.testing.assert_array_equal(state, [1, 1])
    np.testing.assert_array_equal(index, [0, 0])


def test_match_anchors_without_real_boxes_is_all_background():
    anchors = jnp.array([strip(0, 10), strip(4, 14), strip(40, 50)])
    boxes = jnp.array([strip(0, 10), [jnp.nan] * 4, strip(0, 0)])  # all padding
    for low_quality in (True, False):
        _, state = match_anchors(
            anchors,
            boxes,
            jnp.zeros(3, bool),
            **MATCH,
            allow_low_quality_matches=low_quality,
        )
        np.testing.assert_array_equal(state, [0, 0, 0])


def test_match_anchors_box_without_overlap_gets_no_anchor():
    # b1 overlaps no anchor: its best IoU is 0, which must not make every anchor fg.
    anchors = jnp.array([strip(0, 10), strip(20, 30)])
    boxes = jnp.array([strip(0, 10), strip(100, 110)])
    index, state = match_anchors(
        anchors, boxes, jnp.array([True, True]), **MATCH, allow_low_quality_matches=True
    )
    np.testing.assert_array_equal(state, [1, 0])
    assert int(index[0]) == 0


def test_param_count_coco_setting():
    # num_classes=80, resnet50, FPN 256, 4 convs per tower, GN 32, A = 9 anchors.
    #   backbone: torchvision resnet50 25,557,032 - fc (2048*1000 + 1000)  = 23,508,032
    #     (flax BatchNorm scale/bias are params, as torchvision's BN weight/bias)
    #   fpn: lateral3 512*256+256 = 131,328; lateral4 1024*256+256 = 262,400;
    #        lateral5 2048*256+256 = 524,544; output3..5 3 * (9*256*256+256) = 1,770,240;
    #        p6 (from C5) 9*2048*256+256 = 4,718,848; p7 9*256*256+256 = 590,080 =  7,997,440
    #   towers: 2 x 4 x (conv 9*256*256+256 = 590,080 + GN 2*256 = 512)       =  4,724,736
    #   cls_logits: 9*256*(9*80) + 720 = 1,658,880 + 720                      =  1,659,600
    #   box_deltas: 9*256*(9*4) + 36 = 82,944 + 36                            =     82,980
    #   total                                                                 = 37,972,788
    model = RetinaNet(num_classes=80)
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), key(0), jnp.zeros((1, 64, 64, 3))
    )
    assert count_params(variables) == 37_972_788
    sizes = {k: count_params({"params": v}) for k, v in variables["params"].items()}
    assert sizes["backbone"] == 23_508_032 and sizes["fpn"] == 7_997_440


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_output_shapes_and_level_sizes(dtype):
    model = RetinaNet(num_classes=3, dtype=dtype, **TINY)
    outputs, variables = jax.eval_shape(
        functools.partial(model.init_with_output, train=False),
        key(0),
        jnp.zeros((2, *IMAGE_SIZE, 3)),
    )
    assert outputs["logits"].shape == (2, NUM_ROWS, 3)
    assert outputs["deltas"].shape == (2, NUM_ROWS, 4)
    assert outputs["logits"].dtype == outputs["deltas"].dtype == jnp.float32
    assert model.level_sizes(IMAGE_SIZE) == (576, 144, 36, 9, 9)
    assert model.anchor_boxes(IMAGE_SIZE).shape == (NUM_ROWS, 4)
    assert variables["params"]["cls_logits"]["kernel"].shape == (3, 3, 32, 9 * 3)


def test_rows_line_up_with_anchors():
    # Zero head kernels and a bias that numbers the channels: row r of a level
    # then holds its anchor a = r % A, channels a * K + k (logits) and a * 4 + c
    # (deltas), if the reshape splits A * K as (anchor, class), as the anchors.
    model = RetinaNet(num_classes=2, **TINY)
    images = jnp.zeros((1, *IMAGE_SIZE, 3))
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), key(0), images
    )
    variables = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), variables)
    params = variables["params"]
    params["cls_logits"] = {
        "kernel": params["cls_logits"]["kernel"],
        "bias": jnp.arange(9 * 2, dtype=jnp.float32),
    }
    params["box_deltas"] = {
        "kernel": params["box_deltas"]["kernel"],
        "bias": jnp.arange(9 * 4, dtype=jnp.float32),
    }
    apply = jax.jit(functools.partial(model.apply, train=False))
    outputs = apply(variables, images)
    a = np.arange(NUM_ROWS) % 9  # [N] anchor index within its cell
    np.testing.assert_array_equal(outputs["logits"][0], a[:, None] * 2 + np.arange(2))
    np.testing.assert_array_equal(outputs["deltas"][0], a[:, None] * 4 + np.arange(4))
    # Anchor a of a cell has (size, ratio) = divmod(a, 3): same ratio, same shape
    # up to size, e.g. rows 0 and 3 at the first P3 cell are 32 and 40.3 px.
    anchors = np.asarray(model.anchor_boxes(IMAGE_SIZE))  # [N, 4]
    wh = anchors[:, 2:] - anchors[:, :2]  # [N, 2]
    np.testing.assert_allclose(
        np.sqrt(wh.prod(-1))[[0, 3, 6]], 32 * 2 ** (np.arange(3) / 3), rtol=1e-5
    )
    np.testing.assert_allclose((wh[:, 1] / wh[:, 0])[:3], [0.5, 1.0, 2.0], rtol=1e-5)


def test_level_sizes_other_levels_and_anchors():
    model = RetinaNet(num_classes=3, levels=(3, 4, 5), aspect_ratios=(1.0,), **TINY)
    # 96x64: P3 12x8, P4 6x4, P5 3x2 cells; A = 3 scales x 1 ratio.
    assert model.level_sizes((96, 64)) == (3 * 96, 3 * 24, 3 * 6)
    assert model.anchor_boxes((96, 64)).shape == (3 * 126, 4)


def test_detect_decodes_against_anchors_and_clips():
    model = RetinaNet(num_classes=2, **TINY)
    anchors = model.anchor_boxes(IMAGE_SIZE)  # [N, 4]
    logits = jnp.zeros((1, NUM_ROWS, 2)).at[0, 5, 1].set(math.log(3.0))
    deltas = jnp.zeros((1, NUM_ROWS, 4))
    boxes, scores = model.detect({"logits": logits, "deltas": deltas}, IMAGE_SIZE)
    # Zero deltas: each anchor clipped to the image. The first P3 anchor is
    # 32 / sqrt(0.5) = 45.25 wide and 22.6 high around (4, 4).
    np.testing.assert_allclose(boxes[0], np.clip(anchors, 0, 64), atol=1e-5)
    half_w, half_h = 16 * math.sqrt(2), 8 * math.sqrt(2)
    np.testing.assert_allclose(boxes[0, 0], [0, 0, 4 + half_w, 4 + half_h], atol=1e-5)
    np.testing.assert_allclose(scores[0, 5], [0.5, 0.75], rtol=1e-6)
    # A shift of dx = 1 anchor width moves the box right by its width.
    deltas = deltas.at[0, 0].set(jnp.array([1.0, 0.0, 0.0, 0.0]))
    boxes, _ = model.detect({"logits": logits, "deltas": deltas}, IMAGE_SIZE)
    np.testing.assert_allclose(boxes[0, 0], [4 + half_w, 0, 64, 4 + half_h], atol=1e-5)


def _targets_plus(model, boxes, labels, box_mask, offset):
    """Deltas equal to each anchor's regression target (anchor itself off fg) + offset."""
    anchors = model.anchor_boxes(IMAGE_SIZE)  # [N, 4]
    match = functools.partial(match_anchors, **MATCH, allow_low_quality_matches=True)
    index, state = jax.vmap(match, in_axes=(None, 0, 0))(anchors, boxes, box_mask)
    matched = jnp.take_along_axis(boxes, index[..., None], axis=1)  # [B, N, 4]
    fg = state == MATCH_FOREGROUND  # [B, N]
    matched = jnp.where(fg[..., None], matched, anchors)  # [B, N, 4]
    return box_ops.encode(matched, anchors) + offset, state


# Two images: two boxes (one padding row), and one box (two padding rows).
BOXES = jnp.array(
    [
        [[8.0, 8.0, 40.0, 40.0], [30.0, 20.0, 62.0, 60.0], [0.0, 0.0, 0.0, 0.0]],
        [[4.0, 10.0, 60.0, 50.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    ]
)
LABELS = jnp.array([[0, 2, 0], [1, 0, 0]], jnp.int32)
MASK = jnp.array([[True, True, False], [True, False, False]])


def test_loss_hand_computed_normalization():
    model = RetinaNet(num_classes=3, **TINY)
    deltas, state = _targets_plus(model, BOXES, LABELS, MASK, offset=1.0)
    num_fg = int(jnp.sum(state == MATCH_FOREGROUND))
    num_counted = int(jnp.sum(state != MATCH_IGNORE))
    assert 0 < num_fg < num_counted < state.size  # some fg, some ignored
    outputs = {"logits": jnp.zeros((2, NUM_ROWS, 3)), "deltas": deltas}
    loss_fn = jax.jit(
        lambda outputs: model.loss(outputs, BOXES, LABELS, MASK, IMAGE_SIZE)
    )
    loss, metrics = loss_fn(outputs)
    # Box: every fg delta is off by 1 -> smooth L1 (beta 0.1) 1 - 0.05 per
    # coordinate, 4 * 0.95 = 3.8 per fg anchor, / num_fg = 3.8 (non-fg rows,
    # also off by 1, must not count).
    np.testing.assert_allclose(metrics["box_loss"], 3.8, rtol=1e-5)
    # Cls: logit 0 -> p = 0.5, (1 - p_t)**2 = 1/4. A target-0 element costs
    # 0.75 * 0.25 * ln 2, a target-1 element 0.25 * 0.25 * ln 2; one target-1
    # element per fg anchor; ignored anchors cost nothing; / num_fg over the batch.
    neg, pos = 0.75 * 0.25 * math.log(2), 0.25 * 0.25 * math.log(2)
    want = (num_counted * 3 * neg - num_fg * (neg - pos)) / num_fg
    np.testing.assert_allclose(metrics["cls_loss"], want, rtol=1e-5)
    np.testing.assert_allclose(loss, want + 3.8, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], loss)
    assert metrics["num_positives"] == num_fg

    deltas, _ = _targets_plus(model, BOXES, LABELS, MASK, offset=0.0)
    _, metrics = loss_fn({**outputs, "deltas": deltas})
    np.testing.assert_allclose(metrics["box_loss"], 0.0, atol=1e-6)


def test_padded_boxes_have_no_effect():
    model = RetinaNet(num_classes=3, **TINY)
    k1, k2 = jax.random.split(key(0))
    outputs = {
        "logits": jax.random.normal(k1, (2, NUM_ROWS, 3)),
        "deltas": 0.1 * jax.random.normal(k2, (2, NUM_ROWS, 4)),
    }
    # Garbage in 5 more masked rows: NaN, a box equal to an anchor, an inverted
    # box, huge values; labels out of range.
    anchor = model.anchor_boxes(IMAGE_SIZE)[100]
    garbage = jnp.array(
        [
            [jnp.nan] * 4,
            anchor,
            [50.0, 50.0, 10.0, 10.0],
            [-1e9, -1e9, 1e9, 1e9],
            [0.0] * 4,
        ]
    )
    boxes8 = jnp.concatenate([BOXES, jnp.broadcast_to(garbage, (2, 5, 4))], axis=1)
    labels8 = jnp.concatenate([LABELS, jnp.array([[7, -1, 99, 2, 1]] * 2)], axis=1)
    mask8 = jnp.concatenate([MASK, jnp.zeros((2, 5), bool)], axis=1)

    @jax.jit
    @functools.partial(jax.value_and_grad, has_aux=True)
    def loss(outputs, boxes, labels, mask):
        return model.loss(outputs, boxes, labels, mask, IMAGE_SIZE)

    (_, m3), g3 = loss(outputs, BOXES, LABELS, MASK)
    (loss8, m8), g8 = loss(outputs, boxes8, labels8, mask8)
    assert np.isfinite(loss8)
    for name in m3:
        np.testing.assert_allclose(m8[name], m3[name], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g3), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_images_without_boxes_give_finite_loss_and_zero_box_loss():
    model = RetinaNet(num_classes=3, **TINY)
    outputs = {
        "logits": jax.random.normal(key(0), (2, NUM_ROWS, 3)),
        "deltas": jnp.full((2, NUM_ROWS, 4), 5.0),
    }
    boxes = jnp.broadcast_to(jnp.array([jnp.nan, 0.0, 1e9, 3.0]), (2, 3, 4))
    mask = jnp.zeros((2, 3), bool)

    @jax.jit
    @functools.partial(jax.value_and_grad, has_aux=True)
    def loss(outputs):
        return model.loss(outputs, boxes, LABELS, mask, IMAGE_SIZE)

    (total, metrics), grads = loss(outputs)
    assert np.isfinite(total) and float(total) > 0
    assert float(metrics["box_loss"]) == 0.0 and float(metrics["num_positives"]) == 0.0
    np.testing.assert_allclose(metrics["cls_loss"], total)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    np.testing.assert_array_equal(grads["deltas"], 0.0)


@pytest.fixture(scope="module")
def tiny_train():
    """A tiny model, its initial variables, and a jitted Adam step on one image."""
    model = RetinaNet(num_classes=3, **TINY)
    images = jax.random.normal(key(1), (1, *IMAGE_SIZE, 3))
    # Paint the boxes so there is something to see.
    images = images.at[0, 8:40, 8:40, 0].add(3.0).at[0, 20:60, 30:62, 1].add(3.0)
    boxes = jnp.array([[[8.0, 8.0, 40.0, 40.0], [30.0, 20.0, 62.0, 60.0], [0.0] * 4]])
    labels = jnp.array([[0, 2, 0]], jnp.int32)
    mask = jnp.array([[True, True, False]])
    variables = jax.jit(functools.partial(model.init, train=False))(key(0), images)
    tx = optax.adam(1e-3)

    def loss_fn(params, batch_stats):
        outputs, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        loss, metrics = model.loss(outputs, boxes, labels, mask, IMAGE_SIZE)
        return loss, (metrics, updates["batch_stats"], outputs)

    @jax.jit
    def step(params, batch_stats, opt_state):
        grads, (metrics, batch_stats, outputs) = jax.grad(loss_fn, has_aux=True)(
            params, batch_stats
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            batch_stats,
            opt_state,
            metrics,
            grads,
            outputs,
        )

    return model, variables, tx, step, (boxes, labels)


def test_initial_gradient_is_finite_and_prior_is_applied(tiny_train):
    _, variables, tx, step, _ = tiny_train
    params, stats = variables["params"], variables["batch_stats"]
    *_, metrics, grads, outputs = step(params, stats, tx.init(params))
    assert np.isfinite(metrics["loss"]) and float(metrics["num_positives"]) > 0
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads["backbone"]))
    # prior_prob 0.01: the head weights are tiny at init, so scores start near 0.01.
    np.testing.assert_allclose(
        jnp.mean(jax.nn.sigmoid(outputs["logits"])), 0.01, rtol=0.2
    )


def test_overfits_one_image(tiny_train):
    model, variables, tx, step, (gt_boxes, gt_labels) = tiny_train
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    for _ in range(100):
        params, stats, opt_state, metrics, _, outputs = step(params, stats, opt_state)
        losses.append(float(metrics["loss"]))
    # Measured: 1.73 -> 7e-4 (box loss ~1e-6), 34 positive anchors.
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    # `outputs` came from the last step's (train-mode) forward pass. For each
    # box, the best-scoring anchor of its class decodes onto it.
    boxes, scores = model.detect(outputs, IMAGE_SIZE)  # [1, N, 4], [1, N, 3]
    for gt_box, gt_label in zip(gt_boxes[0, :2], gt_labels[0, :2], strict=True):
        row = int(jnp.argmax(scores[0, :, gt_label]))
        iou = box_ops.elementwise_iou(boxes[0, row], gt_box)
        assert float(iou) > 0.5, (gt_box, boxes[0, row])
    # And the top (anchor, class) over everything is a right box of the right class.
    row, cls = np.unravel_index(int(jnp.argmax(scores[0])), scores.shape[1:])
    ious = box_ops.pairwise_iou(boxes[0, row][None], gt_boxes[0, :2])[0]  # [2]
    best = int(jnp.argmax(ious))
    assert float(ious[best]) > 0.5 and cls == int(gt_labels[0, best]), (ious, cls)
