"""COCO JSON conversion and pycocotools metrics against hand-computed values."""

import copy
import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_util

from jaxvision import coco
from jaxvision.errors import UserError

CLASSES = ("cat", "dog", "bird")


def _image(image_id, boxes, labels, crowd=None, size=(480, 640)):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)  # [N, 4]
    crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool)
    return coco.ImageAnnotations(image_id, size[0], size[1], boxes, np.asarray(labels, np.int32), crowd)


def _dets(image_id, boxes, scores, labels):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)  # [K, 4]
    return coco.ImageDetections(
        image_id, boxes, np.asarray(scores, np.float32), np.asarray(labels, np.int32)
    )


def _perfect(images):
    return [_dets(a.image_id, a.boxes, np.ones(len(a.boxes)), a.labels) for a in images]


# Small (< 32**2) and large (> 96**2) objects only, one per class per image.
SCENE = [
    _image(1, [[10.5, 20.25, 30.5, 40.25], [100, 100, 300, 250]], [0, 1]),  # 20x20 small, 200x150 large
    _image(2, [[50, 60, 60, 90], [0, 0, 400, 400]], [2, 1]),  # 10x30 small, 400x400 large
    _image(3, [], []),  # No objects.
]


def _ap(images, dets, classes=CLASSES):
    return coco.evaluate(coco.ground_truth(images, classes), coco.detections(dets))


def test_perfect_detections():
    got = _ap(SCENE, _perfect(SCENE))
    assert list(got) == list(coco.METRIC_NAMES)
    assert all(type(v) is float for v in got.values())
    for name in ("AP", "AP50", "AP75", "APs", "APl", "AR1", "AR10", "AR100", "ARs", "ARl"):
        assert got[name] == pytest.approx(1.0), name
    assert got["APm"] == -1.0 and got["ARm"] == -1.0  # No medium objects.


def test_hand_computed_one_miss_one_false_positive():
    # 2 gt boxes; dets by score: exact match (0.9), false positive (0.8).
    # Recall reaches 0.5 at precision 1, then stays 0.5 (precision 0.5).
    # 101-point interpolated precision: 1 at recall 0.00..0.50 (51 points),
    # 0 beyond (recall never exceeds 0.5) -> AP = 51/101 at every IoU.
    images = [_image(1, [[0, 0, 50, 50], [100, 100, 150, 150]], [0, 0])]
    dets = [_dets(1, [[0, 0, 50, 50], [300, 300, 350, 350]], [0.9, 0.8], [0, 0])]
    got = _ap(images, dets, ("cat",))
    for name in ("AP", "AP50", "AP75", "APm"):
        assert got[name] == pytest.approx(51 / 101, abs=1e-6), name
    assert got["AR100"] == pytest.approx(0.5)
    assert got["APs"] == -1.0 and got["APl"] == -1.0


def test_hand_computed_iou_0_62():
    # gt 100x100, det 100x62 inside it: IoU = 0.62. It matches at the IoU
    # thresholds 0.50, 0.55, 0.60 (3 of 10, AP 1 each) and misses at
    # 0.65..0.95 (AP 0) -> AP = 3/10, AP50 = 1, AP75 = 0.
    images = [_image(1, [[0, 0, 100, 100]], [0])]
    dets = [_dets(1, [[0, 0, 100, 62]], [0.9], [0])]
    got = _ap(images, dets, ("cat",))
    assert got["AP50"] == pytest.approx(1.0)
    assert got["AP75"] == pytest.approx(0.0)
    assert got["AP"] == pytest.approx(0.3, abs=1e-6)
    assert got["AR100"] == pytest.approx(0.3, abs=1e-6)


def test_crowd_box_is_ignored():
    person = [0, 0, 50, 50]
    crowd = [200, 200, 300, 300]
    hit_person = _dets(1, [person], [0.9], [0])
    hit_both = _dets(1, [crowd, person], [0.95, 0.9], [0, 0])
    with_crowd = [_image(1, [person, crowd], [0, 0], crowd=[False, True])]
    without_crowd = [_image(1, [person], [0])]
    assert coco.ground_truth(with_crowd, ("cat",))["annotations"][1]["iscrowd"] == 1
    # A detection matching only the crowd box is neither TP nor FP ...
    assert _ap(with_crowd, [hit_both], ("cat",))["AP"] == pytest.approx(1.0)
    # ... whereas without the crowd box it is a top-scoring FP.
    assert _ap(without_crowd, [hit_both], ("cat",))["AP"] < 0.9
    # An undetected crowd box is not a miss (as a normal box it would be).
    assert _ap(with_crowd, [hit_person], ("cat",))["AR100"] == pytest.approx(1.0)
    not_crowd = [_image(1, [person, crowd], [0, 0])]
    assert _ap(not_crowd, [hit_person], ("cat",))["AR100"] == pytest.approx(0.5)


def test_detection_on_image_without_objects_is_false_positive():
    images = [_image(1, [[0, 0, 50, 50]], [0]), _image(2, [], [])]
    gt = coco.ground_truth(images, ("cat",))
    assert [im["id"] for im in gt["images"]] == [1, 2]
    hit = _dets(1, [[0, 0, 50, 50]], [0.9], [0])
    assert _ap(images, [hit, _dets(2, [], [], [])], ("cat",))["AP"] == pytest.approx(1.0)
    # By score: FP (0.95) then TP: precision [0, 1/2] at recall [0, 1];
    # interpolated precision is 1/2 at every recall point -> AP = 0.5.
    fp = _dets(2, [[10, 10, 60, 60]], [0.95], [0])
    assert _ap(images, [hit, fp], ("cat",))["AP"] == pytest.approx(0.5, abs=1e-6)


def test_no_detections():
    gt = coco.ground_truth(SCENE, CLASSES)
    got = coco.evaluate(gt, coco.detections([_dets(1, [], [], [])]))
    for name, value in got.items():
        assert value == (-1.0 if name in ("APm", "ARm") else 0.0), name
    assert coco.evaluate(gt, []) == got


def test_evaluate_does_not_modify_its_inputs():
    gt = coco.ground_truth(SCENE, CLASSES)
    dets = coco.detections(_perfect(SCENE))
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    coco.evaluate(gt, dets)
    assert gt == gt_before and dets == dets_before


def test_json_layout_and_round_trip(tmp_path):
    images = [_image(7, [[10, 20, 40, 60], [1.004, 2, 3.5, 4]], [2, 0], crowd=[False, True], size=(100, 200))]
    gt = coco.ground_truth(images, CLASSES)
    assert gt["images"] == [{"id": 7, "height": 100, "width": 200}]
    assert gt["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
    assert gt["annotations"] == [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 40.0], "area": 1200.0, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [1.0, 2.0, 2.5, 2.0], "area": 5.0, "iscrowd": 1},
    ]
    dets = coco.detections([_dets(7, [[10, 20, 40, 60]], [0.123456789], [1])])
    assert dets == [{"image_id": 7, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.123457}]
    for name, obj in (("gt.json", gt), ("sub/dets.json", dets)):
        coco.write_json(str(tmp_path / name), obj)
        assert coco.load_json(str(tmp_path / name), "test") == obj


def test_load_json_errors(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(UserError, match="nope.json does not exist"):
        coco.load_json(missing, "ground-truth")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(UserError, match="bad.json is not readable JSON"):
        coco.load_json(str(bad), "detections")


def test_detections_on_unknown_image_or_category():
    gt = coco.ground_truth(SCENE, CLASSES)
    dets = coco.detections(_perfect(SCENE)) + coco.detections([_dets(99, [[0, 0, 5, 5]] * 2, [0.5, 0.4], [0, 0])])
    with pytest.raises(UserError, match=r"^2 detection\(s\) reference image id\(s\).*first is 99"):
        coco.evaluate(gt, dets)
    bad_cat = coco.detections([_dets(1, [[0, 0, 5, 5]], [0.5], [3])])  # Category id 4.
    with pytest.raises(UserError, match="category id.*first is 4"):
        coco.check_detections(gt, bad_cat)
    coco.check_detections(gt, coco.detections(_perfect(SCENE)))  # No error.


def test_bad_arrays():
    with pytest.raises(UserError, match="label"):
        coco.ground_truth([_image(1, [[0, 0, 5, 5]], [3])], CLASSES)
    with pytest.raises(UserError, match="appears twice"):
        coco.ground_truth([_image(1, [], []), _image(1, [], [])], CLASSES)
    with pytest.raises(UserError, match="shape"):
        coco.detections([coco.ImageDetections(1, np.zeros((2, 5)), np.zeros(2), np.zeros(2, int))])


def test_json_is_plain_python():
    # json.dumps would fail on NumPy scalars.
    json.dumps(coco.ground_truth(SCENE, CLASSES))
    json.dumps(coco.detections(_perfect(SCENE)))


def _run_coco_eval(gt_path, dets_path, *extra):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "scripts/coco_eval.py", "--ground_truth", str(gt_path),
         "--detections", str(dets_path), *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_coco_eval_script_scores_files_and_refuses_bad_ones(tmp_path):
    images = [_image(1, [[10, 10, 50, 50]], [0]), _image(2, [[0, 0, 20, 30]], [1])]
    gt = coco.ground_truth(images, ["a", "b"])
    coco.write_json(str(tmp_path / "gt.json"), gt)
    coco.write_json(str(tmp_path / "dets.json"), coco.detections(_perfect(images)))
    result = _run_coco_eval(tmp_path / "gt.json", tmp_path / "dets.json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["AP"] == pytest.approx(1.0)

    (tmp_path / "broken.json").write_text('{"images": [')
    wrong_image = [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]
    coco.write_json(str(tmp_path / "wrong.json"), wrong_image)
    for gt_file, dets_file, fragment in [
        ("broken.json", "dets.json", "broken.json"),  # Does not parse.
        ("dets.json", "dets.json", "not a COCO ground-truth file"),  # A results list.
        ("gt.json", "wrong.json", "the first is 99"),  # A missing image.
    ]:
        result = _run_coco_eval(tmp_path / gt_file, tmp_path / dets_file)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and fragment in lines[-1], result.stderr
        assert "Traceback" not in result.stderr


def _malformed(gt, dets):
    """Each case: (file, entries to break, index, field, new value or None to delete, fragment)."""
    return [
        ("gt.json", gt["annotations"], 1, "area", None, "annotation 1 has no 'area'"),
        ("gt.json", gt["annotations"], 0, "bbox", None, "annotation 0 has no 'bbox'"),
        ("gt.json", gt["annotations"], 1, "bbox", [0, 0, 20], "annotation 1 has 'bbox' [0, 0, 20]"),
        ("gt.json", gt["images"], 1, "id", "2", "image 1 has 'id' '2'"),
        ("dets.json", dets, 1, "score", "high", "detection 1 has 'score' 'high'"),
        ("dets.json", dets, 0, "score", float("nan"), "detection 0 has 'score' nan"),
        ("dets.json", dets, 1, "bbox", None, "detection 1 has no 'bbox'"),
        ("gt.json", gt["annotations"], 0, "segmentation", {"counts": "abc"},
         "annotation 0 has 'segmentation' {'counts': 'abc'}"),
        ("dets.json", dets, 1, "segmentation", [[1, 2, 3, 4]], "detection 1 has 'segmentation' [[1, 2, 3, 4]]"),
    ]


def _write_malformed(tmp_path, case):
    """Writes gt.json and dets.json of a two-image scene, one entry broken as `case` says."""
    images = [_image(1, [[10, 10, 50, 50]], [0]), _image(2, [[0, 0, 20, 30]], [1])]
    gt = coco.ground_truth(images, ["a", "b"])
    dets = coco.detections(_perfect(images))
    name, entries, index, field, value, fragment = _malformed(gt, dets)[case]
    if value is None:
        del entries[index][field]
    else:
        entries[index][field] = value
    coco.write_json(str(tmp_path / "gt.json"), gt)
    coco.write_json(str(tmp_path / "dets.json"), dets)
    return tmp_path / name, fragment


@pytest.mark.parametrize("case", range(9))
def test_malformed_entries_give_one_user_error(tmp_path, case):
    path, fragment = _write_malformed(tmp_path, case)
    load = coco.load_ground_truth if path.name == "gt.json" else coco.load_detections
    with pytest.raises(UserError) as error:
        load(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: {fragment}"), message
    assert message.endswith("; fix or drop that " + fragment.split()[0] + ".")
    # The untouched file of the pair loads.
    other = tmp_path / ("dets.json" if path.name == "gt.json" else "gt.json")
    (coco.load_detections if path.name == "gt.json" else coco.load_ground_truth)(str(other))


def test_non_object_entry_gives_one_user_error(tmp_path):
    coco.write_json(str(tmp_path / "dets.json"), [{"image_id": 1}, 7])
    with pytest.raises(UserError, match=r"dets.json: detection 0 has no 'category_id'"):
        coco.load_detections(str(tmp_path / "dets.json"))
    coco.write_json(str(tmp_path / "dets.json"), [7])
    with pytest.raises(UserError, match=r"dets.json: detection 0 is 7, not a JSON object"):
        coco.load_detections(str(tmp_path / "dets.json"))


@pytest.mark.parametrize("case", [0, 2, 4, 5])  # area, 3-number bbox, string and NaN score.
def test_coco_eval_script_refuses_malformed_entries(tmp_path, case):
    path, fragment = _write_malformed(tmp_path, case)
    result = _run_coco_eval(tmp_path / "gt.json", tmp_path / "dets.json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {path}: {fragment}"), result.stderr


# --- Masks (instance segmentation) ---


def _paste_reference(mask, box, height, width, threshold):
    """Per-pixel `grid_sample(align_corners=False)` bilinear sampling, zero outside the mask."""
    rows, cols = mask.shape
    x0, y0, x1, y1 = box

    def cell(i, j):
        return mask[i, j] if 0 <= i < rows and 0 <= j < cols else 0.0

    out = np.zeros((height, width), bool)
    for y in range(height):
        for x in range(width):
            u = (x + 0.5 - x0) / (x1 - x0) * cols - 0.5
            v = (y + 0.5 - y0) / (y1 - y0) * rows - 0.5
            j, i = math.floor(u), math.floor(v)
            fu, fv = u - j, v - i
            value = ((1 - fv) * ((1 - fu) * cell(i, j) + fu * cell(i, j + 1))
                     + fv * ((1 - fu) * cell(i + 1, j) + fu * cell(i + 1, j + 1)))
            out[y, x] = value >= threshold
    return out


def test_paste_mask_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    for case in range(24):
        size = (4, 7, 28)[case % 3]
        height, width = rng.integers(8, 40, 2).tolist()
        x0, y0 = rng.uniform(-15, 35, 2)  # Partly outside the image, often.
        box = [x0, y0, x0 + rng.uniform(0.3, 45), y0 + rng.uniform(0.3, 45)]
        mask = rng.random((size, size)).astype(np.float32)  # [M, M]
        # 0.1: pixels up to half a mask cell outside the box are foreground too.
        for threshold in (0.5, 0.1):
            got = coco.paste_mask(mask, box, height, width, threshold)
            assert got.shape == (height, width) and got.dtype == bool
            want = _paste_reference(mask.astype(np.float64), box, height, width, threshold)
            np.testing.assert_array_equal(got, want, err_msg=f"case {case}, threshold {threshold}")


def test_paste_mask_fills_the_pixels_whose_centres_are_in_the_box():
    # Box (2, 3, 6, 8): pixel centres x + 0.5 in [2, 6] -> x = 2..5, y = 3..7.
    # E.g. x = 2: u = 0.5 / 4 * 28 - 0.5 = 3 (inside the mask, value 1);
    # x = 1: u = -4 (zero padding); x = 6: u = 31 > 28 (zero padding).
    want = np.zeros((10, 12), bool)
    want[3:8, 2:6] = True
    ones = np.ones((28, 28), np.float32)
    np.testing.assert_array_equal(coco.paste_mask(ones, [2, 3, 6, 8], 10, 12), want)
    # x0 = 2.6 > 2.5, the centre of column 2: u = -1.32, column 2 drops out.
    want[:, 2] = False
    np.testing.assert_array_equal(coco.paste_mask(ones, [2.6, 3, 6, 8], 10, 12), want)
    # Box (0, 0, 56, 56), M = 28, ones in mask rows 0..16: row y samples
    # v = y / 2 - 0.25; value = 1 - frac >= 0.5 up to v = 16.5, i.e. y <= 33.
    half = np.zeros((28, 28), np.float32)
    half[:17] = 1
    got = coco.paste_mask(half, [0, 0, 56, 56], 60, 60)
    assert got[:34, :56].all() and not got[34:].any() and not got[:, 56:].any()


def test_paste_mask_degenerate_boxes_paste_nothing():
    ones = np.ones((28, 28), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for box in ([5, 5, 5, 9], [5, 5, 9, 4], [np.nan, 0, 9, 9], [0, 0, np.inf, 9], [50, 50, 60, 60]):
            assert not coco.paste_mask(ones, box, 20, 30).any(), box
    with pytest.raises(ValueError, match="threshold"):
        coco.paste_mask(ones, [0, 0, 5, 5], 20, 30, threshold=0.0)


# pycocotools' decode, under NumPy 2.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_mask_rles_encode_pasted_masks():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 28, 28)).astype(np.float32)  # [D, M, M]
    boxes = np.array([[1.5, 2, 20, 15], [-5, 3, 10, 30], [4, 4, 4, 9]], np.float32)  # [D, 4]
    rles = coco.mask_rles(masks, boxes, 25, 30)
    json.dumps(rles)
    for rle, mask, box in zip(rles, masks, boxes):
        assert rle["size"] == [25, 30] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), coco.paste_mask(mask, box, 25, 30))
    assert coco.mask_rles(np.zeros((0, 28, 28)), np.zeros((0, 4)), 25, 30) == []
    with pytest.raises(UserError, match="masks of shape"):
        coco.mask_rles(masks, boxes[:2], 25, 30)


def _with_masks(image, masks):
    """`image` (annotations or detections) with `masks` [N, M, M] over its boxes, on a 480x640 image."""
    return dataclasses.replace(image, masks=coco.mask_rles(masks, image.boxes, 480, 640))


def _blobs(n, seed=0):
    """`[n, 28, 28]` uint8 0/1 box-relative masks, mostly ones."""
    return (np.random.default_rng(seed).random((n, 28, 28)) < 0.8).astype(np.uint8)


def test_segm_perfect_masks():
    images = [_with_masks(image, _blobs(len(image.boxes), i)) for i, image in enumerate(SCENE)]
    dets = [_with_masks(det, _blobs(len(det.boxes), i).astype(np.float32))
            for i, det in enumerate(_perfect(SCENE))]
    got = coco.evaluate(coco.ground_truth(images, CLASSES), coco.detections(dets), iou_type="segm")
    assert list(got) == list(coco.METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert got[name] == pytest.approx(1.0), name


def _segm_scene():
    """Two 56x56 objects of one class; the 0.8 detection's mask covers 34 of 56 rows of its object.

    Mask IoU 34 * 56 / 56**2 = 0.607; box IoU 1 (its box is exact).
    """
    boxes = np.array([[0, 0, 56, 56], [100, 100, 156, 156]], np.float32)  # [2, 4]
    ones = np.ones((2, 28, 28), np.float32)
    gt = coco.ImageAnnotations(1, 200, 200, boxes, np.zeros(2, np.int32), np.zeros(2, bool),
                               masks=coco.mask_rles(ones, boxes, 200, 200))
    partial = ones.copy()
    partial[0, 17:] = 0  # Rows 0..16 of 28 -> image rows 0..33 (see the paste test).
    det = coco.ImageDetections(1, boxes, np.array([0.8, 0.9], np.float32), np.zeros(2, np.int32),
                               masks=coco.mask_rles(partial, boxes, 200, 200))
    return coco.ground_truth([gt], ("cat",)), coco.detections([det])


def test_segm_hand_computed_iou_0_607():
    gt, dets = _segm_scene()
    assert mask_util.area(dets[0]["segmentation"]) == 34 * 56
    assert [a["area"] for a in gt["annotations"]] == [56.0 * 56, 56.0 * 56]  # Medium objects.
    # IoU thresholds 0.50, 0.55, 0.60: both detections match -> AP 1. At
    # 0.65..0.95 (7 of 10): TP (0.9) then FP (0.8), the 0.607 object missed:
    # precision 1 up to recall 0.5, then nothing -> AP 51/101, recall 0.5.
    got = coco.evaluate(gt, dets, iou_type="segm")
    assert got["AP50"] == pytest.approx(1.0)
    assert got["AP75"] == pytest.approx(51 / 101, abs=1e-6)
    assert got["AP"] == pytest.approx((3 + 7 * 51 / 101) / 10, abs=1e-6)
    assert got["APm"] == pytest.approx(got["AP"])
    assert got["AR100"] == pytest.approx((3 + 7 * 0.5) / 10, abs=1e-6)
    assert coco.evaluate(gt, dets)["AP"] == pytest.approx(1.0)  # Box IoU 1.


def test_box_metrics_bin_objects_by_mask_area():
    # A 40x40 box (1600: medium) whose mask is mask cells 0..6 of 28 on each
    # axis: u = (x + 0.5 - 10) * 0.7 - 0.5 <= 6.5 for x = 10..19, so 10x10 = 100
    # pixels (small).
    image = _image(1, [[10, 10, 50, 50]], [0])
    corner = np.zeros((1, 28, 28), np.float32)
    corner[0, :7, :7] = 1
    hit = _perfect([image])
    plain = _ap([image], hit, ("cat",))
    assert plain["APm"] == pytest.approx(1.0) and plain["APs"] == -1.0
    gt = coco.ground_truth([_with_masks(image, corner)], ("cat",))
    assert gt["annotations"][0]["area"] == 100.0
    with_masks = coco.evaluate(gt, coco.detections(hit))
    assert with_masks["APs"] == pytest.approx(1.0) and with_masks["APm"] == -1.0


def test_segm_no_detections_and_inputs_unchanged():
    gt, dets = _segm_scene()
    got = coco.evaluate(gt, [], iou_type="segm")
    for name, value in got.items():
        assert value == (-1.0 if name in ("APs", "APl", "ARs", "ARl") else 0.0), name
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    coco.evaluate(gt, dets, iou_type="segm")
    assert gt == gt_before and dets == dets_before


def test_segm_needs_rle_masks_of_the_image_size():
    gt, dets = _segm_scene()
    bare_gt = {**gt, "annotations": [{k: v for k, v in a.items() if k != "segmentation"} for a in gt["annotations"]]}
    with pytest.raises(UserError, match=r"^Ground-truth annotation 0 has no 'segmentation'"):
        coco.evaluate(bare_gt, dets, iou_type="segm")
    assert coco.evaluate(bare_gt, dets)["AP"] == pytest.approx(1.0)  # bbox needs no masks.
    bare = [dict(d) for d in dets]
    del bare[1]["segmentation"]
    with pytest.raises(UserError, match=r"^Detection 1 has no 'segmentation'"):
        coco.evaluate(gt, bare, iou_type="segm")
    small = [{**dets[0], "segmentation": coco.mask_rles(np.ones((1, 28, 28)), [[0, 0, 5, 5]], 10, 20)[0]}]
    with pytest.raises(UserError, match=r"mask of size \[10, 20\] on image 1 of size \[200, 200\]"):
        coco.evaluate(gt, small, iou_type="segm")
    polygon = [{**dets[0], "segmentation": [[0, 0, 10, 0, 10, 10]]}]
    with pytest.raises(UserError, match="polygon"):
        coco.evaluate(gt, polygon, iou_type="segm")
    with pytest.raises(UserError, match="iou_type is 'mask'"):
        coco.evaluate(gt, dets, iou_type="mask")


def test_mask_count_and_size_mismatch():
    image = _image(1, [[0, 0, 10, 10], [5, 5, 20, 20]], [0, 0])
    one_mask = coco.mask_rles(np.ones((1, 28, 28)), image.boxes[:1], 480, 640)
    with pytest.raises(UserError, match="2 boxes but 1 masks"):
        coco.ground_truth([dataclasses.replace(image, masks=one_mask)], CLASSES)
    with pytest.raises(UserError, match="2 boxes but 1 masks"):
        coco.detections([dataclasses.replace(_perfect([image])[0], masks=one_mask)])
    wrong_size = coco.mask_rles(np.ones((2, 28, 28)), image.boxes, 48, 64)
    with pytest.raises(UserError, match=r"image's size \[480, 640\]"):
        coco.ground_truth([dataclasses.replace(image, masks=wrong_size)], CLASSES)


def test_segmentation_json_round_trip(tmp_path):
    gt, dets = _segm_scene()
    assert gt["annotations"][0]["segmentation"]["size"] == [200, 200]
    assert set(dets[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    coco.write_json(str(tmp_path / "gt.json"), gt)
    coco.write_json(str(tmp_path / "dets.json"), dets)
    loaded_gt = coco.load_ground_truth(str(tmp_path / "gt.json"))
    loaded_dets = coco.load_detections(str(tmp_path / "dets.json"))
    assert loaded_gt == gt and loaded_dets == dets
    assert coco.evaluate(loaded_gt, loaded_dets, "segm") == coco.evaluate(gt, dets, "segm")
    # Polygons and uncompressed RLEs (COCO's crowd regions) load too.
    loaded_gt["annotations"][0]["segmentation"] = [[0, 0, 56, 0, 56, 56, 0, 56]]
    loaded_gt["annotations"][1]["segmentation"] = {"size": [200, 200], "counts": [100, 50, 39850]}
    coco.write_json(str(tmp_path / "gt2.json"), loaded_gt)
    assert coco.load_ground_truth(str(tmp_path / "gt2.json")) == loaded_gt


def test_coco_eval_script_scores_masks(tmp_path):
    gt, dets = _segm_scene()
    coco.write_json(str(tmp_path / "gt.json"), gt)
    coco.write_json(str(tmp_path / "dets.json"), dets)
    result = _run_coco_eval(tmp_path / "gt.json", tmp_path / "dets.json", "--iou_type", "segm")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got == pytest.approx(coco.evaluate(gt, dets, iou_type="segm"))
    assert got["AP75"] == pytest.approx(51 / 101, abs=1e-6)
