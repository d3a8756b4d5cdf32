"""Detection end to end: sharded training, COCO eval, eval script, predict script.

Runs the `smoke` variants of the digit_detection configs (tiny models on 64 px
canvases) on the real `digit_detection` data: FCOS and RetinaNet here, Mask
R-CNN in tests/test_two_stage.py (with this file's helpers; its own file, so
the two run on different pytest-xdist workers).
"""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import (
    digit_detection_fcos,
    digit_detection_mask_rcnn,
    digit_detection_retinanet,
)
from jaxvision import coco, experiment, parallel, train, visualize

CONFIGS = {"fcos": digit_detection_fcos, "retinanet": digit_detection_retinanet,
           "mask_rcnn": digit_detection_mask_rcnn}


def smoke_config(name, data_dir):
    """The config's smoke variant with SGD and every detection kept.

    SGD: its update is linear in the gradient, so the all-reduce's float-level
    differences stay float-level on 1 vs 8 devices (see tests/test_train.py).
    """
    config = CONFIGS[name].get_config("smoke")
    config.data.data_dir = data_dir
    config.optimizer = ml_collections.ConfigDict({
        "name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": False,
        "weight_decay": 1e-4, "grad_clip_norm": 0.0, "schedule": "constant",
        "warmup_epochs": 0,
    })
    config.detect.score_threshold = 0.0  # Untrained: keep every detection.
    return config


def two_steps(config, num_devices):
    """Losses and params after 2 train steps on the first `num_devices` devices."""
    mesh = parallel.make_mesh(devices=jax.devices()[:num_devices])
    trainer = train.Trainer(experiment.Experiment(config, mesh=mesh))
    state = trainer.init_state()
    iterator = trainer.train_iterator()
    losses = []
    for _ in range(2):
        state, metrics = trainer.train_step(state, next(iterator))
        losses.append(float(metrics["loss"]))
    iterator.close()
    assert trainer.train_step._cache_size() == 1  # No recompilation after step 1.
    return losses, jax.device_get(state.params)


def finished_run(name, data_dir, tmp_path_factory):
    """A finished 2-step smoke run of `CONFIGS[name]` on all 8 devices: (config, workdir)."""
    config = smoke_config(name, data_dir)
    workdir = str(tmp_path_factory.mktemp(f"{name}_run"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


@pytest.fixture(scope="module")
def fcos_run(digit_detection_dir, tmp_path_factory):
    return finished_run("fcos", digit_detection_dir, tmp_path_factory)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_retinanet_two_steps_give_the_same_loss_on_1_and_8_devices(digit_detection_dir):
    config = smoke_config("retinanet", digit_detection_dir)
    (losses1, params1), (losses8, params8) = two_steps(config, 1), two_steps(config, 8)
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    assert losses1[1] != losses1[0]  # The first step changed the model.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), params8, params1
    )


def losses_equal_on_1_device(run):
    """The losses a run logged on 8 devices, against `two_steps` of its config on 1."""
    config, workdir = run  # Trained on 8 devices, every step logged.
    losses8 = [r["loss"] for r in _records(workdir) if r["split"] == "train"]
    losses1, _ = two_steps(config, 1)
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    assert losses1[1] != losses1[0]


def test_fcos_two_steps_give_the_same_loss_on_1_and_8_devices(fcos_run):
    losses_equal_on_1_device(fcos_run)


def test_training_logs_coco_metrics_and_eval_reproduces_them(fcos_run):
    config, workdir = fcos_run
    last_eval = [r for r in _records(workdir) if r["split"] == config.data.eval_split][-1]
    for key in coco.METRIC_NAMES:
        assert -1.0 <= last_eval[key] <= 1.0
    assert last_eval["num_images"] == 64  # The smoke variant's "test[:64]".
    metrics = experiment.evaluate(config, workdir)
    for key in coco.METRIC_NAMES:
        assert metrics[key] == pytest.approx(last_eval[key], abs=1e-9), key
    # The export: COCO ground truth of every test image, detections on them.
    gt = coco.load_json(os.path.join(workdir, "eval", "ground_truth.json"), "ground truth")
    dets = coco.load_json(os.path.join(workdir, "eval", "detections.json"), "detections")
    assert len(gt["images"]) == 64 and len(gt["categories"]) == 10
    assert 64 <= len(gt["annotations"]) <= 6 * 64
    assert dets and {d["image_id"] for d in dets} <= {i["id"] for i in gt["images"]}
    assert coco.evaluate(gt, dets)["AP"] == pytest.approx(metrics["AP"], abs=1e-9)


def _predict(config, workdir, image, out, *extra,
             config_file="configs/digit_detection_fcos.py:smoke"):
    """Runs scripts/predict.py on a smoke run (FCOS's by default): the finished process."""
    command = [
        sys.executable, "scripts/predict.py", "--config", config_file,
        "--workdir", workdir, "--image", str(image), "--out", str(out), *extra,
        f"--config.data.data_dir={config.data.data_dir}", "--config.detect.score_threshold=0",
        "--config.detect.max_detections=1", "--compilation_cache_dir=",
        "--config.data.train_split=no_such_split",  # Prediction never reads it.
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


SIZES = {"a.png": (90, 60), "c.png": (40, 120)}  # (height, width) of the readable inputs.


@pytest.fixture(scope="module")
def predicted_folder(fcos_run, tmp_path_factory):
    """predict.py on a folder of SIZES and an unreadable b.png: (inputs, out_dir, dets, result)."""
    config, workdir = fcos_run  # Trained with SGD; predict's smoke config says AdamW:
    # only the model variables are restored, so the optimizer does not matter.
    tmp_path = tmp_path_factory.mktemp("predict")
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for file_name, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 40, (h, w), dtype=np.uint8)).save(inputs / file_name)
    (inputs / "b.png").write_bytes(b"not an image")
    out_dir, json_path = tmp_path / "out", tmp_path / "dets.json"
    result = _predict(
        config, workdir, inputs, out_dir, "--json", str(json_path), "--draw_threshold", "0"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return inputs, out_dir, json.loads(json_path.read_text()), result


def test_predict_draws_boxes_where_the_detections_are(predicted_folder):
    inputs, out_dir, dets, _ = predicted_folder
    assert sorted(d["file_name"] for d in dets) == sorted(SIZES)  # One per image.
    for det in dets:
        original = visualize.load_image(str(inputs / det["file_name"]), 3)
        drawn = visualize.load_image(str(out_dir / det["file_name"]), 3)
        assert drawn.shape == original.shape  # The original size, in RGB.
        x, y, w, h = det["bbox"]  # Original pixels; an untrained model's box may be flat.
        height, width = original.shape[:2]
        x0, x1 = np.clip(np.round([x, x + w]), 0, width - 1).astype(int)  # Pixel columns...
        y0, y1 = np.clip(np.round([y, y + h]), 0, height - 1).astype(int)  # ...and rows drawn.
        changed = np.any(drawn != original, axis=-1)  # [H, W]
        # The box outline is drawn: its bottom edge and its left edge changed.
        assert changed[y1, x0 : x1 + 1].mean() > 0.5
        assert changed[y0 : y1 + 1, x0].mean() > 0.5
        # Nothing changed far from the box: the tag (< 24 px tall) sits on its
        # top edge, above it, or inside it from the top when there is no room.
        rows = np.flatnonzero(changed.any(axis=1))
        assert rows.min() >= y0 - 24 and rows.max() <= max(y1, y0 + 24)


def test_predict_skips_an_unreadable_image_in_a_folder(predicted_folder):
    inputs, out_dir, dets, result = predicted_folder
    bad = str(inputs / "b.png")
    assert f"Skipping an image. Cannot read image {bad!r}" in result.stderr
    assert "Skipped 1 of 3 images that could not be read: b.png" in result.stderr
    # The image ids number the inputs as listed: the skipped b.png leaves a gap.
    assert {(d["image_id"], d["file_name"]) for d in dets} == {(0, "a.png"), (2, "c.png")}
    assert sorted(os.listdir(out_dir)) == sorted(SIZES)


def test_predict_fails_when_no_image_can_be_read(fcos_run, tmp_path):
    config, workdir = fcos_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.png").write_bytes(b"not an image")
    json_path = tmp_path / "dets.json"
    # A folder (a single unreadable file is load_image's UserError: test_visualize.py).
    result = _predict(config, workdir, inputs, tmp_path / "out.png", "--json", str(json_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert str(inputs) in result.stderr.strip().splitlines()[-1]
    assert not json_path.exists()
