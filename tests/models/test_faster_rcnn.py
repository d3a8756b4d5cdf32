"""Faster R-CNN and Mask R-CNN: parameter arithmetic, proposals, sampling, losses, hard batches."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import FasterRCNN
from jaxvision.models.faster_rcnn import (
    box_head_loss,
    propose,
    rpn_loss,
    sample_rois,
)
from jaxvision.models.mask_head import mask_loss, mask_targets
from tests.models.common import count_params, key

# A model that compiles in seconds: narrow ResNet-18, small RPN and RoI samples.
TINY = {
    "num_classes": 3, "backbone": "resnet18", "backbone_width": 8, "fpn_features": 16,
    "anchor_scale": 4.0, "rpn_batch_size": 32, "rpn_pre_nms_topk_train": 60,
    "rpn_post_nms_topk_train": 30, "rpn_pre_nms_topk_test": 60, "rpn_post_nms_topk_test": 30,
    "roi_batch_size": 16, "box_head_features": 32, "mask_head_convs": 1, "sampling_ratio": 1,
}
SIZE = 64  # Image side.
DETECT = {"score_threshold": 0.0, "pre_nms_topk": 50, "nms_iou": 0.5, "max_detections": 10}


def test_parameter_count_arithmetic():
    """The COCO model's parts, layer by layer (torchvision's layers; see test_models.PINNED)."""
    model = FasterRCNN(num_classes=80, with_masks=True)
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), key(0), jnp.zeros((1, 64, 64, 3))
    )
    params = variables["params"]
    parts = {name: count_params({"params": tree}) for name, tree in params.items()}
    conv3 = 3 * 3 * 256 * 256 + 256  # A 3x3 conv 256 -> 256 with bias.
    lateral = sum(c * 256 + 256 for c in (256, 512, 1024, 2048))  # 1x1 from C2-C5.
    assert parts["backbone"] == 25_557_032 - (2048 * 1000 + 1000)  # ResNet-50 without fc.
    assert parts["fpn"] == lateral + 4 * conv3  # P6 is a max pool: no parameters.
    assert parts["rpn"] == conv3 + (256 * 3 + 3) + (256 * 12 + 12)  # 3 anchors per cell.
    assert parts["box_head"] == (
        (7 * 7 * 256 * 1024 + 1024) + (1024 * 1024 + 1024)  # fc6, fc7
        + (1024 * 81 + 81) + (1024 * 320 + 320)  # K + 1 logits, 4K deltas
    )
    assert parts["mask_head"] == 4 * conv3 + (2 * 2 * 256 * 256 + 256) + (256 * 80 + 80)
    assert sum(parts.values()) == 44_396_336


@pytest.fixture(scope="module")
def tiny():
    """The tiny Mask R-CNN and its variables."""
    model = FasterRCNN(**TINY, with_masks=True)
    init = jax.jit(functools.partial(model.init, train=False))
    return model, init(key(0), jnp.zeros((1, SIZE, SIZE, 1)))


def test_pyramid_and_rpn_rows(tiny):
    model, variables = tiny
    outputs = model.apply(variables, jnp.zeros((2, SIZE, SIZE, 1)), train=False)
    for level in range(2, 7):  # P2-P6, strides 4-64, rounded up.
        side = -(-SIZE // 2**level)
        assert outputs[f"p{level}"].shape == (2, side, side, 16)
    rows = sum(a.shape[0] for a in model.anchor_boxes((SIZE, SIZE)))
    assert rows == 3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)
    assert outputs["objectness"].shape == (2, rows)
    assert outputs["deltas"].shape == (2, rows, 4)


def test_proposals_are_top_k_per_level_nms_per_level_and_carry_no_gradient():
    # Two levels of 3 anchors; deltas zero, so proposals are the anchors themselves.
    level0 = jnp.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]], jnp.float32)
    level1 = jnp.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], jnp.float32)
    objectness = jnp.array([[5.0, 4.0, 1.0, 3.0, 2.0, 0.0]])  # [1, 6]
    deltas = jnp.zeros((1, 6, 4))
    boxes, valid = propose(objectness, deltas, [level0, level1], (64, 64),
                           pre_nms_topk=2, post_nms_topk=5, nms_iou=0.7)
    # Level 0 keeps its 2 best (they overlap: IoU 0.68 < 0.7, both survive); level 1
    # keeps (0,0,10,10) although level 0 has the same box: NMS is per level.
    np.testing.assert_allclose(boxes[0, :4], [[0, 0, 10, 10], [1, 1, 11, 11],
                                              [0, 0, 10, 10], [50, 50, 60, 60]])
    np.testing.assert_array_equal(valid[0], [True, True, True, True, False])
    np.testing.assert_array_equal(boxes[0, 4], 0.0)
    grad = jax.grad(lambda d: propose(objectness, d, [level0, level1], (64, 64), 2, 5, 0.7)[0]
                    .sum())(deltas)
    np.testing.assert_array_equal(grad, 0.0)


def test_proposals_are_clipped_and_nms_suppresses_within_a_level():
    anchors = jnp.array([[-10, -10, 20, 20], [-9, -9, 20, 20], [40, 40, 80, 80]], jnp.float32)
    boxes, valid = propose(jnp.array([[3.0, 2.0, 1.0]]), jnp.zeros((1, 3, 4)), [anchors],
                           (64, 64), pre_nms_topk=3, post_nms_topk=3, nms_iou=0.7)
    np.testing.assert_allclose(boxes[0], [[0, 0, 20, 20], [40, 40, 64, 64], [0, 0, 0, 0]])
    np.testing.assert_array_equal(valid[0], [True, True, False])


def test_sample_rois_appends_ground_truth_and_labels_background():
    proposals = jnp.array([[0, 0, 10, 10], [0, 0, 9, 10], [30, 30, 40, 40], [0, 0, 0, 0]],
                          jnp.float32)
    valid = jnp.array([True, True, True, False])
    boxes = jnp.array([[0, 0, 10, 10], [0, 0, 0, 0]], jnp.float32)
    labels, box_mask = jnp.array([2, 0]), jnp.array([True, False])
    sample = sample_rois(key(0), proposals, valid, boxes, labels, box_mask, num_samples=8,
                         positive_fraction=0.5, foreground_iou=0.5, background_label=3)
    positive, used = np.asarray(sample["positive"]), np.asarray(sample["valid"])
    # Positives: the two proposals with IoU 1 and 0.9, and the appended ground truth.
    assert positive.sum() == 3 and used.sum() == 4  # + proposal 2; not the invalid one.
    np.testing.assert_array_equal(np.asarray(sample["labels"])[positive], 2)
    np.testing.assert_array_equal(np.asarray(sample["labels"])[used & ~positive], 3)
    np.testing.assert_array_equal(np.asarray(sample["matched"])[positive], 0)
    rois = np.asarray(sample["rois"])[used]
    assert not any(np.array_equal(r, [0, 0, 0, 0]) for r in rois)
    # No real box: every usable proposal is background.
    empty = sample_rois(key(0), proposals, valid, boxes, labels, jnp.array([False, False]),
                        num_samples=8, positive_fraction=0.5, foreground_iou=0.5,
                        background_label=3)
    assert not np.any(empty["positive"]) and np.asarray(empty["valid"]).sum() == 3


def test_box_head_loss_by_hand():
    num_classes = 2
    rois = jnp.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], jnp.float32)  # [1, 2, 4]
    boxes = jnp.array([[[1, 0, 11, 10]]], jnp.float32)  # Matched by RoI 0.
    sample = {"rois": rois, "labels": jnp.array([[1, 2]]), "matched": jnp.array([[0, 0]]),
              "positive": jnp.array([[True, False]]), "valid": jnp.array([[True, True]])}
    logits = jnp.zeros((1, 2, num_classes + 1))
    deltas = jnp.zeros((1, 2, num_classes, 4))
    cls_loss, box_loss = box_head_loss(logits, deltas, sample, boxes, (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(cls_loss, np.log(3.0), rtol=1e-6)  # Uniform over 3 logits.
    # Target dx = 10 * 1 / 10 = 1 (the others 0): smooth L1 (beta 1/9) = 1 - 1/18; / 2 sampled.
    np.testing.assert_allclose(box_loss, (1 - 1 / 18) / 2, rtol=1e-6)


def test_rpn_loss_without_objects_has_no_box_loss():
    anchors = jnp.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 20, 20]], jnp.float32)
    boxes, box_mask = jnp.zeros((1, 2, 4)), jnp.zeros((1, 2), bool)
    objectness = jnp.array([[0.0, 1.0, -1.0]])
    cls_loss, box_loss = rpn_loss(jax.random.split(key(0), 1), objectness,
                                  jnp.ones((1, 3, 4)), anchors, boxes, box_mask,
                                  0.7, 0.3, batch_size=8, positive_fraction=0.5)
    # Every anchor is a sampled negative: the mean of log(1 + e^x).
    np.testing.assert_allclose(cls_loss, np.mean(np.log1p(np.exp([0.0, 1.0, -1.0]))), rtol=1e-6)
    assert box_loss == 0.0


def test_mask_targets_crop_the_ground_truth_mask_to_the_roi():
    mask = np.zeros((28, 28), np.float32)
    mask[:, :14] = 1.0  # The left half of its box.
    gt_boxes = jnp.array([[10, 20, 38, 48]], jnp.float32)
    rois = jnp.array([[10, 20, 38, 48], [10, 20, 24, 48], [24, 20, 38, 48], [0, 0, 10, 10]],
                     jnp.float32)
    targets = np.asarray(mask_targets(jnp.asarray(mask)[None], gt_boxes, rois,
                                      jnp.zeros(4, jnp.int32), size=14))
    expected = np.zeros((14, 14))
    expected[:, :7] = 1.0
    np.testing.assert_array_equal(targets[0], expected)  # The RoI is the box.
    np.testing.assert_array_equal(targets[1], 1.0)  # The left half: all ink.
    np.testing.assert_array_equal(targets[2], 0.0)  # The right half: none.
    np.testing.assert_array_equal(targets[3], 0.0)  # Outside the box entirely.


def test_mask_loss_by_hand():
    logits = jnp.zeros((2, 4, 4, 3))
    targets = jnp.ones((2, 4, 4))
    loss = mask_loss(logits, jnp.array([0, 2]), targets, jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
    assert mask_loss(logits, jnp.array([0, 2]), targets, jnp.zeros(2)) == 0.0


def _hard_batch():
    """Four images: no objects; a box smaller than a P2 cell; an empty mask; a normal digit."""
    boxes = np.zeros((4, 3, 4), np.float32)
    box_mask = np.zeros((4, 3), bool)
    boxes[1, 0], box_mask[1, 0] = [30, 30, 31.5, 31.5], True  # 1.5 px (a P2 cell is 4 px).
    boxes[2, 0], box_mask[2, 0] = [5, 5, 25, 25], True
    boxes[3, :2], box_mask[3, :2] = [[10, 10, 40, 50], [35, 5, 60, 30]], True
    masks = np.ones((4, 3, 16, 16), np.float32)
    masks[2] = 0.0  # Empty after cropping.
    images = np.random.default_rng(0).normal(size=(4, SIZE, SIZE, 1)).astype(np.float32)
    targets = {"boxes": boxes, "labels": np.array([[0, 1, 2]] * 4, np.int32),
               "box_mask": box_mask, "masks": masks}
    return jnp.asarray(images), jax.tree.map(jnp.asarray, targets)


def test_hard_batches_train_and_predict_without_nan(tiny):
    model, variables = tiny
    images, targets = _hard_batch()

    @jax.jit
    def loss_and_grads(params):
        def loss(p):
            (value, metrics), _ = model.apply(
                {"params": p, "batch_stats": variables["batch_stats"]}, images, targets,
                method="training_loss", rngs={"sampling": key(1)}, mutable=["batch_stats"])
            return value, metrics
        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, metrics), grads = loss_and_grads(variables["params"])
    assert set(metrics) == {"loss", "rpn_cls_loss", "rpn_box_loss", "roi_cls_loss",
                            "roi_box_loss", "mask_loss", "num_positives"}
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert metrics["num_positives"] >= 4  # At least the appended ground-truth boxes.
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))

    predict = jax.jit(functools.partial(model.apply, method="predict", **DETECT))
    dets = jax.device_get(predict(variables, images))
    assert dets["boxes"].shape == (4, 10, 4) and dets["masks"].shape == (4, 10, 28, 28)
    for name in ("boxes", "scores", "masks"):
        assert np.all(np.isfinite(dets[name])), name
    assert np.all((dets["masks"] >= 0) & (dets["masks"] <= 1))
    valid = dets["valid"]
    assert np.all(valid[:, :-1] >= valid[:, 1:])  # A prefix of filled slots.
    assert np.all(dets["boxes"][valid] >= 0) and np.all(dets["boxes"][valid] <= SIZE)
    assert np.all(np.diff(dets["scores"], axis=1)[valid[:, 1:]] <= 0)  # Best first.
    assert np.all((dets["labels"] >= 0) & (dets["labels"] < 3))


def test_mask_rcnn_without_masks_is_one_clear_error(tiny):
    model, variables = tiny
    images, targets = _hard_batch()
    del targets["masks"]
    with pytest.raises(UserError, match="config.data.mask_size"):
        model.apply(variables, images, targets, method="training_loss",
                    rngs={"sampling": key(1)}, mutable=["batch_stats"])
