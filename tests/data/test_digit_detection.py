"""The "digit_detection" builder: canvases of real digits with tight, bounded boxes."""

import numpy as np
import pytest

from jaxvision import data
from jaxvision.data import digit_detection as dd
from jaxvision.data import digits

_SIZE = dd.CANVAS_SIZE


def _records(split: str, data_dir: str, num: int | None = None) -> list[dict]:
    source = data.load_source("digit_detection", split, data_dir)
    return source.__getitems__(list(range(num or len(source))))


def _pixel_boxes(record: dict) -> np.ndarray:
    """The record's boxes as xyxy canvas pixels: [N, 4]."""
    bbox = np.asarray(record["objects"]["bbox"]) * _SIZE  # [N, 4] (y0, x0, y1, x1)
    return bbox[:, [1, 0, 3, 2]]


def _ink_box(image: np.ndarray) -> list[int]:
    """Reference tight xyxy box (maxima exclusive) of pixels >= INK_THRESHOLD."""
    rows, cols = np.nonzero(image[..., 0] >= dd.INK_THRESHOLD)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def _pairwise_overlap(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, intersection / smaller area), [N, N] each, diagonal zeroed."""
    lo = np.maximum(boxes[:, None, :2], boxes[None, :, :2])  # [N, N, 2]
    hi = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])  # [N, N, 2]
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)  # [N, N]
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)  # [N]
    iou = inter / (area[:, None] + area[None, :] - inter)
    cover = inter / np.minimum(area[:, None], area[None, :])
    np.fill_diagonal(iou, 0.0)
    np.fill_diagonal(cover, 0.0)
    return iou, cover


def _assert_overlap_bounded(boxes: np.ndarray):
    iou, cover = _pairwise_overlap(boxes)
    assert iou.max() <= dd.MAX_IOU
    assert cover.max() <= dd.MAX_COVER


def _is_subsequence(short: list, long: list) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def test_builds_with_expected_split_sizes(digit_detection_dir):
    for split, size in (("train", 6000), ("test", 500)):
        assert len(data.load_source("digit_detection", split, digit_detection_dir)) == size


def test_records_follow_the_coco_like_format(digit_detection_dir):
    records = _records("test", digit_detection_dir) + _records("train", digit_detection_dir, 500)
    assert [r["image/id"] for r in records] == list(range(500)) * 2
    num_objects = []
    for record in records:
        assert record["image"].dtype == np.uint8
        assert record["image"].shape == (_SIZE, _SIZE, 1)
        objects = {k: np.asarray(v) for k, v in record["objects"].items()}
        n = len(objects["label"])
        num_objects.append(n)
        assert objects["bbox"].dtype == np.float32 and objects["bbox"].shape == (n, 4)
        assert objects["label"].dtype == np.int64
        assert set(objects["label"]) <= set(range(10))
        assert not objects["is_crowd"].any() and objects["is_crowd"].shape == (n,)
    assert min(num_objects) == 1 and max(num_objects) == dd.MAX_OBJECTS


def test_boxes_lie_inside_the_canvas_on_whole_pixels(digit_detection_dir):
    for record in _records("test", digit_detection_dir):
        boxes = _pixel_boxes(record)  # [N, 4]
        np.testing.assert_array_equal(boxes, np.round(boxes))
        assert (boxes >= 0).all() and (boxes <= _SIZE).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()  # Positive width and height.
        # Every box holds ink, and the canvas has no ink outside the boxes.
        ink = record["image"][..., 0] >= dd.INK_THRESHOLD  # [H, W]
        covered = np.zeros_like(ink)
        for x0, y0, x1, y1 in boxes.astype(int):
            assert ink[y0:y1, x0:x1].any()
            covered[y0:y1, x0:x1] = True
        assert not (ink & ~covered).any()


def test_overlap_is_bounded(digit_detection_dir):
    records = _records("test", digit_detection_dir) + _records("train", digit_detection_dir, 500)
    for record in records:
        _assert_overlap_bounded(_pixel_boxes(record))


def test_single_digit_box_is_tight():
    images, labels = digits.load_digits_uint8()
    for seed, i in enumerate(range(0, 1797, 60)):
        rng = np.random.default_rng(seed)
        image, boxes, out_labels = dd.make_canvas(rng, images[[i]], labels[[i]])
        assert image.dtype == np.uint8 and image.shape == (_SIZE, _SIZE, 1)
        assert boxes.dtype == np.float32 and boxes.shape == (1, 4)
        assert out_labels.dtype == np.int64
        np.testing.assert_array_equal(out_labels, [labels[i]])
        np.testing.assert_array_equal(boxes[0], _ink_box(image))
        assert (boxes[0, 2:] - boxes[0, :2] <= dd.MAX_GLYPH_SIZE).all()


def test_glyphs_without_ink_are_skipped():
    images, labels = digits.load_digits_uint8()
    blank = np.full_like(images[:1], dd.INK_THRESHOLD - 1)  # Faint, never ink.
    glyphs = np.concatenate([blank, images[5:6]])  # [2, 8, 8, 1]
    image, boxes, out_labels = dd.make_canvas(
        np.random.default_rng(0), glyphs, np.array([3, labels[5]])
    )
    np.testing.assert_array_equal(out_labels, [labels[5]])
    np.testing.assert_array_equal(boxes[0], _ink_box(image))
    with pytest.raises(ValueError, match="pixel >="):
        dd.make_canvas(np.random.default_rng(0), blank, np.array([3]))


def test_crowded_canvas_drops_digits_but_bounds_overlap():
    images, labels = digits.load_digits_uint8()
    image, boxes, out_labels = dd.make_canvas(
        np.random.default_rng(0), images[:60], labels[:60]
    )
    assert 1 < len(boxes) < 60  # 60 digits of 12..48 px cannot all fit.
    assert _is_subsequence(out_labels.tolist(), labels[:60].tolist())
    _assert_overlap_bounded(boxes)
    assert image.max() == 255


def test_generation_is_deterministic():
    images, labels = digits.load_digits_uint8()
    first, second = (
        dd.make_canvas(np.random.default_rng(7), images[:6], labels[:6])
        for _ in range(2)
    )
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        dd.generate_canvases("test", 20), dd.generate_canvases("test", 20), strict=True
    ):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    train_image = next(dd.generate_canvases("train", 1))[0]
    test_image = next(dd.generate_canvases("test", 1))[0]
    assert not np.array_equal(train_image, test_image)


def test_test_canvases_use_only_unseen_digits(digit_detection_dir):
    train_pool, test_pool = digits.split_ids()
    used = {split: dd.draw_digit_ids(split) for split in dd.SPLITS}
    train_used = set(np.concatenate(used["train"]).tolist())
    test_used = set(np.concatenate(used["test"]).tolist())
    assert train_used <= set(train_pool.tolist())
    assert test_used <= set(test_pool.tolist())
    assert train_used.isdisjoint(test_used)
    assert len(test_used) > 300  # 500 canvases use most of the 360 test digits.
    # The ids are the ones the records were made from: labels match, in order.
    _, labels = digits.load_digits_uint8()
    for split, num in (("test", 500), ("train", 200)):
        for record, ids in zip(_records(split, digit_detection_dir, num), used[split]):
            placed = np.asarray(record["objects"]["label"]).tolist()
            assert _is_subsequence(placed, labels[ids].tolist())


def test_records_round_trip_make_canvas(digit_detection_dir):
    for split in dd.SPLITS:
        records = _records(split, digit_detection_dir, 5)
        for record, (image, boxes, labels) in zip(
            records, dd.generate_canvases(split, 5), strict=True
        ):
            np.testing.assert_array_equal(record["image"], image)
            np.testing.assert_array_equal(_pixel_boxes(record), boxes)
            np.testing.assert_array_equal(record["objects"]["label"], labels)
