"""Two-stage detection end to end: Mask R-CNN's smoke run, its box and mask metrics, predict.

Faster R-CNN is the same model without the mask head. The helpers are
tests/test_detection.py's.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from jaxvision import coco, experiment, visualize
from tests.test_detection import (
    _predict,
    _records,
    finished_run,
    losses_equal_on_1_device,
)


@pytest.fixture(scope="module")
def mask_run(digit_detection_dir, tmp_path_factory):
    return finished_run("mask_rcnn", digit_detection_dir, tmp_path_factory)


def test_mask_rcnn_two_steps_give_the_same_loss_on_1_and_8_devices(mask_run):
    losses_equal_on_1_device(mask_run)


def test_mask_rcnn_logs_box_and_mask_metrics_and_eval_reproduces_them(mask_run):
    config, workdir = mask_run
    last_eval = [r for r in _records(workdir) if r["split"] == config.data.eval_split][-1]
    names = [*coco.METRIC_NAMES, *(f"mask_{name}" for name in coco.METRIC_NAMES)]
    for key in names:
        assert -1.0 <= last_eval[key] <= 1.0, key
    metrics = experiment.evaluate(config, workdir)
    for key in names:
        assert metrics[key] == pytest.approx(last_eval[key], abs=1e-9), key
    # The export holds the RLE masks, and pycocotools' segm evaluation of it agrees.
    gt = coco.load_ground_truth(os.path.join(workdir, "eval", "ground_truth.json"))
    dets = coco.load_detections(os.path.join(workdir, "eval", "detections.json"))
    assert all("segmentation" in a for a in gt["annotations"])
    assert dets and all("segmentation" in d for d in dets)
    segm = coco.evaluate(gt, dets, iou_type="segm")
    assert segm["AP"] == pytest.approx(metrics["mask_AP"], abs=1e-9)


def test_predict_draws_masks_and_writes_their_rles(mask_run, tmp_path):
    config, workdir = mask_run
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 40, (50, 70), dtype=np.uint8)).save(tmp_path / "a.png")
    json_path = tmp_path / "dets.json"
    result = _predict(config, workdir, tmp_path / "a.png", tmp_path / "out.png", "--json",
                      str(json_path), "--draw_threshold", "0",
                      config_file="configs/digit_detection_mask_rcnn.py:smoke")
    assert result.returncode == 0, result.stderr[-2000:]
    (det,) = json.loads(json_path.read_text())  # max_detections=1.
    assert det["segmentation"]["size"] == [50, 70]
    mask = mask_utils.decode(det["segmentation"]).astype(bool)  # [50, 70]
    original = visualize.load_image(str(tmp_path / "a.png"), 3)
    drawn = visualize.load_image(str(tmp_path / "out.png"), 3)
    changed = np.any(drawn != original, axis=-1)  # [50, 70]
    # Every mask pixel is tinted; the mask lies within its box (+ 1 px of rounding).
    assert np.all(changed[mask])
    x, y, w, h = det["bbox"]
    rows, cols = np.nonzero(mask)
    if rows.size:
        assert rows.min() >= y - 1 and rows.max() <= y + h + 1
        assert cols.min() >= x - 1 and cols.max() <= x + w + 1
