"""NMS against a plain NumPy greedy NMS, plus edge cases and class awareness."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import nms as nms_lib

NUM_BOXES = 200

nms = jax.jit(nms_lib.nms, static_argnames="max_outputs")
batched_nms = jax.jit(nms_lib.batched_nms, static_argnames="max_outputs")


def _np_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _np_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box `[4]` with `[M, 4]` boxes, in float64."""
    box, others = box.astype(np.float64), others.astype(np.float64)
    w = np.clip(
        np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None
    )
    h = np.clip(
        np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None
    )
    inter = w * h
    area, areas = _np_area(box), _np_area(others)
    return inter / (area + areas - inter)


def np_nms(
    boxes, scores, iou_threshold, max_outputs, score_threshold=-np.inf, classes=None
):
    """Textbook greedy NMS: a list of kept indices in keep order."""
    classes = np.zeros(len(scores), int) if classes is None else classes
    keep, suppressed = [], np.zeros(len(scores), bool)
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if scores[i] < score_threshold or suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_outputs:
            break
        suppressed |= (_np_iou(boxes[i], boxes) > iou_threshold) & (
            classes == classes[i]
        )
    return keep


def random_boxes(seed: int, n: int = NUM_BOXES):
    """Clustered boxes, like raw detector output, and scores with many ties.

    `n // 8` objects in a ~100x100 image, each detected about 8 times with
    jittered corners, so IoUs spread over the whole [0, 1] range.
    """
    rng = np.random.default_rng(seed)
    top_left = rng.uniform(0, 80, size=(n // 8, 2))  # [O, 2]
    objects = np.concatenate([top_left, top_left + rng.uniform(8, 40, (n // 8, 2))], 1)
    boxes = objects[rng.integers(0, n // 8, size=n)]  # [N, 4]
    wh = np.tile(boxes[:, 2:] - boxes[:, :2], 2)  # [N, 4]
    boxes = (boxes + rng.normal(0, 0.08, size=(n, 4)) * wh).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)  # Positive sizes.
    scores = (rng.integers(0, 30, size=n) / 30).astype(np.float32)  # [N], ties
    return boxes, scores


def assert_kept(indices, valid, want):
    indices, valid = np.asarray(indices), np.asarray(valid)
    k = len(want)
    np.testing.assert_array_equal(valid, np.arange(len(valid)) < k)
    np.testing.assert_array_equal(indices[:k], want)
    np.testing.assert_array_equal(indices[k:], 0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_matches_numpy_reference(seed, iou_threshold):
    boxes, scores = random_boxes(seed)
    ious = np.stack([_np_iou(b, boxes) for b in boxes])  # [N, N]
    # float32 vs float64 IoU must not decide a comparison.
    assert np.abs(ious - iou_threshold).min() > 1e-5
    want = np_nms(boxes, scores, iou_threshold, NUM_BOXES)
    assert 10 < len(want) < NUM_BOXES - 10  # Many overlaps, not trivial.
    indices, valid = nms(boxes, scores, iou_threshold, max_outputs=NUM_BOXES)
    assert indices.dtype == jnp.int32 and indices.shape == (NUM_BOXES,)
    assert_kept(indices, valid, want)


def test_max_outputs_truncates_in_score_order():
    boxes, scores = random_boxes(0)
    want = np_nms(boxes, scores, 0.5, NUM_BOXES)[:5]
    indices, valid = nms(boxes, scores, 0.5, max_outputs=5)
    assert indices.shape == (5,)
    assert_kept(indices, valid, want)


def test_score_threshold():
    boxes, scores = random_boxes(1)
    want = np_nms(boxes, scores, 0.5, NUM_BOXES, score_threshold=0.5)
    assert want and all(scores[i] >= 0.5 for i in want)
    indices, valid = nms(boxes, scores, 0.5, max_outputs=NUM_BOXES, score_threshold=0.5)
    assert_kept(indices, valid, want)


def test_identical_boxes_keep_one_lowest_index_on_ties():
    boxes = np.tile([[10.0, 10.0, 20.0, 30.0]], (6, 1))
    scores = np.array([0.1, 0.9, 0.3, 0.9, 0.2, 0.5], np.float32)
    indices, valid = nms(boxes, scores, 0.5, max_outputs=4)
    assert_kept(indices, valid, [1])


def test_threshold_boundaries():
    # IoU([0, 0, 2, 1], [0, 0, 1, 1]) = 1/2 exactly: suppression needs IoU > t.
    boxes = np.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = np.array([0.5, 0.4], np.float32)
    assert_kept(*nms(boxes, scores, 0.5, max_outputs=2), [0, 1])
    assert_kept(*nms(boxes, scores, 0.49, max_outputs=2), [0])
    # A score equal to score_threshold is kept.
    assert_kept(*nms(boxes, scores, 0.5, max_outputs=2, score_threshold=0.5), [0])


def test_each_box_kept_at_most_once():
    # Nothing suppresses at threshold 1, nor does a zero-area box (IoU 0).
    boxes, scores = random_boxes(3, n=10)
    want = np_nms(boxes, scores, 1.0, 12)
    assert len(want) == 10
    assert_kept(*nms(boxes, scores, 1.0, max_outputs=12), want)
    points = np.full((3, 4), 5.0)
    assert_kept(*nms(points, np.ones(3), 0.5, max_outputs=4), [0, 1, 2])


def test_all_below_threshold_keeps_nothing():
    boxes, scores = random_boxes(2, n=10)
    indices, valid = nms(boxes, scores, 0.5, max_outputs=4, score_threshold=2.0)
    assert_kept(indices, valid, [])


def test_thresholds_are_traced_no_recompile():
    traces = []

    @functools.partial(jax.jit, static_argnames="max_outputs")
    def f(boxes, scores, iou_threshold, max_outputs, score_threshold):
        traces.append(None)
        return nms_lib.nms(boxes, scores, iou_threshold, max_outputs, score_threshold)

    for seed, iou_t, score_t in [(0, 0.3, 0.0), (1, 0.5, 0.2), (2, 0.7, 0.5)]:
        boxes, scores = random_boxes(seed)
        indices, valid = f(boxes, scores, iou_t, 50, score_t)
        assert_kept(indices, valid, np_nms(boxes, scores, iou_t, 50, score_t))
    assert len(traces) == 1


def test_vmap_over_batch_equals_per_image():
    data = [random_boxes(seed) for seed in range(3)]
    boxes = np.stack([b for b, _ in data])  # [3, N, 4]
    scores = np.stack([s for _, s in data])  # [3, N]
    indices, valid = jax.jit(jax.vmap(lambda b, s: nms_lib.nms(b, s, 0.5, 40)))(
        boxes, scores
    )
    for i, (b, s) in enumerate(data):
        assert_kept(indices[i], valid[i], np_nms(b, s, 0.5, 40))


def test_class_aware_identical_boxes():
    box = [-10.0, -10.0, 0.0, 0.0]  # Negative coordinates break a naive offset.
    boxes = jnp.array([[box, box]])  # [1, 2, 4]
    scores = jnp.array([[0.9, 0.8]])
    out = batched_nms(boxes, scores, jnp.array([[0, 1]]), 0.5, max_outputs=3)
    np.testing.assert_array_equal(out["valid"], [[True, True, False]])
    np.testing.assert_array_equal(out["classes"], [[0, 1, 0]])
    np.testing.assert_array_equal(out["boxes"], [[box, box, [0.0] * 4]])
    out = batched_nms(boxes, scores, jnp.array([[1, 1]]), 0.5, max_outputs=3)
    np.testing.assert_array_equal(out["valid"], [[True, False, False]])
    np.testing.assert_allclose(out["scores"], [[0.9, 0.0, 0.0]])
    np.testing.assert_array_equal(out["classes"], [[1, 0, 0]])


def test_batched_nms_matches_reference_and_single_images():
    data = [random_boxes(seed) for seed in (4, 5, 6)]
    boxes = np.stack([b for b, _ in data])  # [3, N, 4]
    scores = np.stack([s for _, s in data])  # [3, N]
    classes = np.random.default_rng(0).integers(0, 3, size=scores.shape)  # [3, N]
    k = 60
    out = batched_nms(boxes, scores, classes, 0.5, max_outputs=k, score_threshold=0.1)
    assert out["boxes"].shape == (3, k, 4) and out["valid"].shape == (3, k)
    for i in range(3):
        want = np_nms(boxes[i], scores[i], 0.5, k, 0.1, classes=classes[i])
        assert_kept(out["indices"][i], out["valid"][i], want)
        n = len(want)
        np.testing.assert_array_equal(out["boxes"][i, :n], boxes[i][want])
        np.testing.assert_array_equal(out["scores"][i, :n], scores[i][want])
        np.testing.assert_array_equal(out["classes"][i, :n], classes[i][want])
        np.testing.assert_array_equal(out["scores"][i, n:], 0)
        single = batched_nms(
            boxes[i : i + 1], scores[i : i + 1], classes[i : i + 1], 0.5, k, 0.1
        )
        for key, value in single.items():
            np.testing.assert_array_equal(value[0], out[key][i])


def test_no_boxes_keeps_nothing():
    indices, valid = nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5, max_outputs=3)
    assert indices.shape == (3,) and indices.dtype == jnp.int32
    assert_kept(indices, valid, [])
    out = batched_nms(
        np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.float32),
        np.zeros((2, 0), np.int32), 0.5, max_outputs=3,
    )
    assert out["boxes"].shape == (2, 3, 4) and out["boxes"].dtype == jnp.float32
    assert out["classes"].dtype == jnp.int32
    for name in ("boxes", "scores", "classes", "indices", "valid"):
        np.testing.assert_array_equal(out[name], 0, err_msg=name)


# Two boxes of one class with IoU 0.4798 (float64 of these float32 values): a
# class offset of 999 * 1001 px (a box at 1000 px in the image) rounds float32
# coordinates to 1/16 px, which made their IoU 0.5029 and suppressed one.
CLOSE_PAIR = np.array(
    [[894.56, 894.63, 900.02, 896.63], [894.89, 895.28, 899.22, 896.49]], np.float32
)


def test_class_aware_is_exact_for_many_classes_and_large_coordinates():
    assert 0.479 < _np_iou(CLOSE_PAIR[0], CLOSE_PAIR[1:])[0] < 0.48
    rng = np.random.default_rng(7)
    # Clustered boxes scaled to ~1000 px, spread over all 1000 classes (few
    # overlaps) and over classes 0-3 (many), the image-wide box, the pair.
    boxes, scores = random_boxes(7)  # [N, 4], [N]
    n = len(boxes)
    boxes = np.concatenate([9 * boxes, [[0, 0, 1000, 1000]], CLOSE_PAIR]).astype(np.float32)
    scores = np.concatenate([scores, [0.5, 0.9, 0.8]]).astype(np.float32)
    classes = np.concatenate([rng.integers(0, 1000, n), [0, 999, 999]])
    classes[: n // 2] = rng.integers(0, 4, n // 2)
    same = classes[:, None] == classes[None, :]
    ious = np.stack([_np_iou(b, boxes) for b in boxes])  # [N + 3, N + 3]
    assert np.abs(ious[same] - 0.5).min() > 1e-5  # float32 vs float64 must not decide.
    want = np_nms(boxes, scores, 0.5, n + 3, classes=classes)
    assert n + 1 in want and n + 2 in want
    assert len(want) < n - 10  # Many same-class suppressions.
    out = batched_nms(boxes[None], scores[None], classes[None], 0.5, max_outputs=n + 3)
    assert_kept(out["indices"][0], out["valid"][0], want)
    assert_kept(*nms(boxes, scores, 0.5, max_outputs=n + 3, classes=classes), want)
