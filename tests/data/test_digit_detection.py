"""The "digit_detection" builder: canvases of real digits with tight, bounded boxes."""

import hashlib
import os
from unittest import mock

import numpy as np
import pytest

from jaxvision import data
from jaxvision.data import datasets, digits
from jaxvision.data import digit_detection as dd

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
        image, boxes, out_labels, instances = dd.make_canvas(rng, images[[i]], labels[[i]])
        assert image.dtype == np.uint8 and image.shape == (_SIZE, _SIZE, 1)
        assert boxes.dtype == np.float32 and boxes.shape == (1, 4)
        assert out_labels.dtype == np.int64
        np.testing.assert_array_equal(out_labels, [labels[i]])
        np.testing.assert_array_equal(boxes[0], _ink_box(image))
        assert (boxes[0, 2:] - boxes[0, :2] <= dd.MAX_GLYPH_SIZE).all()
        assert instances.dtype == np.uint8 and instances.shape == (_SIZE, _SIZE, 1)
        np.testing.assert_array_equal(instances, image >= dd.INK_THRESHOLD)


def test_glyphs_without_ink_are_skipped():
    images, labels = digits.load_digits_uint8()
    blank = np.full_like(images[:1], dd.INK_THRESHOLD - 1)  # Faint, never ink.
    glyphs = np.concatenate([blank, images[5:6]])  # [2, 8, 8, 1]
    image, boxes, out_labels, _ = dd.make_canvas(
        np.random.default_rng(0), glyphs, np.array([3, labels[5]])
    )
    np.testing.assert_array_equal(out_labels, [labels[5]])
    np.testing.assert_array_equal(boxes[0], _ink_box(image))
    with pytest.raises(ValueError, match="pixel >="):
        dd.make_canvas(np.random.default_rng(0), blank, np.array([3]))


def test_crowded_canvas_drops_digits_but_bounds_overlap():
    images, labels = digits.load_digits_uint8()
    image, boxes, out_labels, instances = dd.make_canvas(
        np.random.default_rng(0), images[:60], labels[:60]
    )
    assert 1 < len(boxes) < 60  # 60 digits of 12..48 px cannot all fit.
    assert _is_subsequence(out_labels.tolist(), labels[:60].tolist())
    _assert_overlap_bounded(boxes)
    assert image.max() == 255
    _assert_instances_match(image, boxes, instances)


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
        for record, (image, boxes, labels, instances) in zip(
            records, dd.generate_canvases(split, 5), strict=True
        ):
            np.testing.assert_array_equal(record["image"], image)
            np.testing.assert_array_equal(_pixel_boxes(record), boxes)
            np.testing.assert_array_equal(record["objects"]["label"], labels)
            assert record["instances"].dtype == np.uint8
            np.testing.assert_array_equal(record["instances"], instances)


def _assert_instances_match(image: np.ndarray, boxes: np.ndarray, instances: np.ndarray):
    """The id map labels exactly the canvas's ink, each id inside its own box."""
    ids = instances[..., 0]  # [H, W]
    np.testing.assert_array_equal(ids > 0, image[..., 0] >= dd.INK_THRESHOLD)
    assert ids.max() <= len(boxes)
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        rows, cols = np.nonzero(ids == i + 1)
        assert rows.size > 0  # No digit is hidden entirely by others.
        assert y0 <= rows.min() and rows.max() < y1
        assert x0 <= cols.min() and cols.max() < x1


def test_instances_label_exactly_the_ink_of_each_object(digit_detection_dir):
    records = _records("test", digit_detection_dir) + _records("train", digit_detection_dir, 500)
    for record in records:
        assert record["instances"].shape == (_SIZE, _SIZE, 1)
        _assert_instances_match(record["image"], _pixel_boxes(record), record["instances"])
    info = data.dataset_info("digit_detection", digit_detection_dir)
    assert info.has_instance_masks


class _ScriptedRng:
    """Stands in for `make_canvas`'s generator: given glyph sides, then one corner each."""

    def __init__(self, sides, corners):
        self._draws = iter([np.array(sides), *(np.array([c] * 20) for c in corners)])

    def integers(self, *args, **kwargs):
        del args, kwargs
        return next(self._draws)


def test_overlapping_ink_goes_to_the_brighter_digit_then_the_later_one():
    # Four flat 12x12 glyphs: A (200) at the top-left, B (100) overlapping its
    # right 3 columns, C (200) overlapping B's right 3 columns, D (200) below A
    # overlapping its bottom 3 rows (and B's corner).
    glyphs = np.array([200, 100, 200, 200], np.uint8)[:, None, None, None] * np.ones(
        (1, 8, 8, 1), np.uint8
    )
    corners = [(0, 0), (9, 0), (18, 0), (0, 9)]  # (x, y) of A, B, C, D.
    image, boxes, _, instances = dd.make_canvas(
        _ScriptedRng([12] * 4, corners), glyphs, np.arange(4)
    )
    np.testing.assert_array_equal(boxes, [[0, 0, 12, 12], [9, 0, 21, 12],
                                          [18, 0, 30, 12], [0, 9, 12, 21]])
    expected = np.zeros((_SIZE, _SIZE), np.uint8)
    expected[0:12, 0:12] = 1  # A ...
    expected[0:12, 12:18] = 2  # ... beats B (200 > 100) on columns 9-11.
    expected[0:12, 18:30] = 3  # C beats B (200 > 100) on columns 18-20.
    expected[9:21, 0:12] = 4  # D ties A (200 = 200) and is later; beats B.
    np.testing.assert_array_equal(instances[..., 0], expected)
    _assert_instances_match(image, boxes, instances)


# sha256 of (image, float32 boxes, int64 labels) of the first 500 canvases of
# each split, recorded from version 1.0.0: 1.1.0 only adds "instances".
_V1_CANVAS_SHA256 = {
    "train": "d7cd92b081605221f714530de0e7cbb7593aa5b23fd1f1e34c040cda2c65a7d7",
    "test": "8dd9881000c0c6ecf06ceb81f9970b12bf3ec53e5d71441f010dfaf2d5c109e9",
}
# The same for the prepared 1.0.0 records (image, "bbox", "label").
_V1_RECORD_SHA256 = {
    "train": "5c44ca18d77c5b3eb201e99098d77428f56d6d3a8e68399412e89f757451c615",
    "test": "f30c4dd493a48fa6aea018cbabe578e2d85b63bbe3c3fb6557146f444a57e8d3",
}


def _sha256(arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def test_version_1_1_0_keeps_the_canvases_boxes_and_labels_of_1_0_0(digit_detection_dir):
    assert str(dd.DigitDetection.VERSION) == "1.1.0"
    assert "instance mask" in dd.DigitDetection.RELEASE_NOTES["1.1.0"]
    for split in dd.SPLITS:
        canvases = [
            a for image, boxes, labels, _ in dd.generate_canvases(split, 500)
            for a in (image, boxes.astype(np.float32), labels.astype(np.int64))
        ]
        assert _sha256(canvases) == _V1_CANVAS_SHA256[split]
        records = [
            a for r in _records(split, digit_detection_dir, 500)
            for a in (r["image"], np.asarray(r["objects"]["bbox"], np.float32),
                      np.asarray(r["objects"]["label"], np.int64))
        ]
        assert _sha256(records) == _V1_RECORD_SHA256[split]


def test_a_data_dir_with_only_1_0_0_gets_1_1_0_built_with_a_reason(tmp_path):
    old = tmp_path / "digit_detection" / "1.0.0"
    old.mkdir(parents=True)
    (old / "dataset_info.json").write_text("{}")
    with (
        mock.patch.object(dd.DigitDetection, "download_and_prepare") as prepare,
        mock.patch.object(datasets.logging, "info") as info,
    ):
        builder = datasets._builder("digit_detection", str(tmp_path))
    prepare.assert_called_once()
    assert str(builder.version) == "1.1.0"
    message = info.call_args.args[0] % info.call_args.args[1:]
    assert message == (
        f"Preparing digit_detection 1.1.0 in {tmp_path} (first use; version 1.1.0 adds "
        'an instance mask per digit ("instances"), with the canvases, boxes and labels '
        "of 1.0.0; the older 1.0.0 copy is left in place)."
    )
    assert os.path.isfile(old / "dataset_info.json")
