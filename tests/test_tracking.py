"""Tracking end to end: JDE training, tracking at evaluation, MOT metrics, track.py, MOT17 config.

Runs the `smoke` variants of configs/moving_digits_tracking.py (the real
`moving_digits` data) and configs/mot17_tracking.py (a MOTChallenge folder
this file writes from moving_digits frames), and checks the evaluation's
glue (frame order, pixels, ignore rules) by tracking ground-truth boxes.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import mot17_tracking, moving_digits_tracking
from jaxvision import data, experiment, train
from jaxvision.data import mot_files
from jaxvision.errors import UserError
from jaxvision.tasks import tracking

METRICS = {"mota", "motp", "idf1", "idp", "idr", "hota", "deta", "assa", "id_switches",
           "fragmentations", "false_positives", "false_negatives", "num_gt"}


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tracking_run(moving_digits_dir, tmp_path_factory):
    """A finished 2-step smoke run on 8 devices: (config, workdir)."""
    config = moving_digits_tracking.get_config("smoke")
    config.data.data_dir = moving_digits_dir
    workdir = str(tmp_path_factory.mktemp("run"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


def test_training_logs_mot_metrics_and_eval_reproduces_them(tracking_run):
    config, workdir = tracking_run
    train_row = [r for r in _records(workdir) if r["split"] == "train"][-1]
    assert {"embedding_loss", "identity_accuracy", "cls_loss"} <= set(train_row)
    last = [r for r in _records(workdir) if r["split"] == config.data.eval_split][-1]
    assert METRICS <= set(last)
    assert all(np.isfinite(last[k]) for k in METRICS)
    assert last["num_sequences"] == 2 and last["num_gt"] > 0
    metrics = experiment.evaluate(config, workdir)
    for key in METRICS:
        assert metrics[key] == pytest.approx(last[key], abs=1e-6), key
    tracks = os.path.join(workdir, "eval", "tracks")
    assert sorted(os.listdir(tracks)) == ["test-000.txt", "test-001.txt"]
    mot_files.read_mot_results(os.path.join(tracks, "test-000.txt"))  # Well-formed.


def _ground_truth_outputs(config, moving_digits_dir, split):
    """`eval_outputs`-shaped batches whose detections are the visible ground truth.

    Each card is detected where at least 10% of it shows, with an embedding
    that is one-hot in its identity: a perfect detector and re-identifier.
    """
    decode = data.TrackingDecode(config.data.image_size, config.data.max_boxes, 2000)
    source = data.load_source("moving_digits", split, moving_digits_dir)
    examples = [decode(source[i]) for i in range(len(source))]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["mask"] = np.ones(len(examples), bool)
    seen = batch["box_mask"] & (batch["visibility"] >= 0.1)  # [N, M]
    dim = config.model.embedding_dim
    embeddings = np.zeros((*seen.shape, dim), np.float32)
    embeddings[..., 0] = 1.0
    np.put_along_axis(embeddings, (batch["identities"] % dim)[..., None], 1.0, axis=-1)
    detections = {
        "boxes": batch["boxes"], "scores": np.where(seen, 0.9, 0.0).astype(np.float32),
        "embeddings": embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True),
        "valid": seen,
    }
    keys = ["boxes", "box_mask", "crowd", "track_ids", "visibility", "sequence", "frame",
            "scale", "mask"]
    return {"detections": detections, "ground_truth": {k: batch[k] for k in keys}}


def test_a_split_without_any_detection_scores_zero_not_nan(moving_digits_dir):
    config = moving_digits_tracking.get_config()
    config.data.data_dir = moving_digits_dir
    outputs = _ground_truth_outputs(config, moving_digits_dir, "test[:80]")
    outputs["detections"]["valid"][:] = False
    evaluator = tracking.Evaluator(config, None, "test[:80]")
    evaluator.add(outputs)
    metrics = evaluator.result()
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["mota"] == 0 and metrics["idf1"] == 0 and metrics["hota"] == 0
    assert metrics["false_negatives"] == metrics["num_gt"] > 0


def _take(outputs, rows):
    return {part: {k: v[rows] for k, v in outputs[part].items()} for part in outputs}


@pytest.mark.parametrize("association", ["iou", "appearance"])
def test_tracking_ground_truth_detections_scores_near_perfect(moving_digits_dir, association):
    config = moving_digits_tracking.get_config()
    config.data.data_dir = moving_digits_dir
    config.track.association = association
    split = "test[:200]"  # Sequences 0-4, frames shuffled across batches.
    outputs = _ground_truth_outputs(config, moving_digits_dir, split)
    evaluator = tracking.Evaluator(config, None, split)
    order = np.random.default_rng(0).permutation(200)
    for rows in np.array_split(order, 4):
        evaluator.add(_take(outputs, rows))
    metrics = evaluator.result()
    assert metrics["num_sequences"] == 5
    assert metrics["false_positives"] == 0  # Boxes are exact: every track lies on its card.
    # Misses: a card's first frame (min_hits=2) and cards hidden too long to coast through.
    assert metrics["mota"] > 0.9 and metrics["idf1"] > 0.8 and metrics["hota"] > 0.8
    if association == "appearance":
        assert metrics["idf1"] > 0.95 and metrics["id_switches"] <= 2


def _write_mot_sequence(folder, source, sequence):
    """Sequence `sequence` of a moving_digits source as a MOTChallenge folder (RGB JPEGs).

    det.txt holds the ground-truth boxes of the visible cards, score 0.9.
    """
    frames = [source[i] for i in range(len(source)) if int(source[i]["sequence"]) == sequence]
    os.makedirs(os.path.join(folder, "img1"))
    os.makedirs(os.path.join(folder, "gt"))
    os.makedirs(os.path.join(folder, "det"))
    gt, det = [], []
    for record in frames:
        frame = int(record["frame"])
        rgb = np.repeat(record["image"], 3, axis=2)
        Image.fromarray(rgb).save(os.path.join(folder, "img1", f"{frame:06d}.jpg"), quality=95)
        objects = record["objects"]
        for bbox, track_id, visibility in zip(
            np.asarray(objects["bbox"]) * 128, objects["track_id"], objects["visibility"],
            strict=True,
        ):
            y0, x0, y1, x1 = bbox
            row = f"{x0 + 1:.2f},{y0 + 1:.2f},{x1 - x0:.2f},{y1 - y0:.2f}"
            gt.append(f"{frame},{track_id},{row},1,1,{visibility:.3f}\n")
            if visibility >= 0.1:
                det.append(f"{frame},-1,{row},0.9,-1,-1,-1\n")
    with open(os.path.join(folder, "seqinfo.ini"), "w") as f:
        f.write(f"[Sequence]\nname={os.path.basename(folder)}\nimDir=img1\nframeRate=10\n"
                f"seqLength={len(frames)}\nimWidth=128\nimHeight=128\nimExt=.jpg\n")
    with open(os.path.join(folder, "gt", "gt.txt"), "w") as f:
        f.writelines(gt)
    with open(os.path.join(folder, "det", "det.txt"), "w") as f:
        f.writelines(det)


@pytest.fixture(scope="module")
def mot_dir(moving_digits_dir, tmp_path_factory):
    """A data dir with MOT17-style train/ of two sequences made of moving_digits test frames."""
    root = str(tmp_path_factory.mktemp("mot"))
    source = data.load_source("moving_digits", "test[:80]", moving_digits_dir)
    for sequence in (0, 1):
        _write_mot_sequence(os.path.join(root, "train", f"MOT17-0{sequence}-FRCNN"), source,
                            sequence)
    return root


def _track(*args):
    command = [sys.executable, "scripts/track.py", *args, "--compilation_cache_dir="]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_track_script_with_the_model_on_a_frame_folder_with_gaps(tracking_run, mot_dir, tmp_path):
    config, workdir = tracking_run
    frames = tmp_path / "frames"
    frames.mkdir()
    img1 = os.path.join(mot_dir, "train", "MOT17-00-FRCNN", "img1")
    for name in sorted(os.listdir(img1))[:12]:
        Image.open(os.path.join(img1, name)).convert("L").save(frames / name.replace("jpg", "png"))
    os.remove(frames / "000005.png")  # A gap in the numbering ...
    (frames / "000007.png").write_bytes(b"not a png")  # ... and a frame that cannot be read.
    result = _track("--config", "configs/moving_digits_tracking.py:smoke", "--workdir", workdir,
                    f"--config.data.data_dir={config.data.data_dir}", "--input", str(frames),
                    "--out", str(tmp_path / "tracks.txt"), "--video", str(tmp_path / "tracks.gif"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no image for frame 5 " in result.stderr  # One warning each.
    assert "Frame 7: " in result.stderr and "000007.png" in result.stderr
    mot_files.read_mot_results(str(tmp_path / "tracks.txt"))
    with Image.open(tmp_path / "tracks.gif") as gif:
        assert gif.n_frames == 10  # 12 frames, two unreadable.
        assert gif.width == 384  # 128 px frames drawn 3x larger.


def test_track_script_with_public_detections_scores_against_gt(mot_dir, tmp_path):
    sequence = os.path.join(mot_dir, "train", "MOT17-01-FRCNN")
    common = ["--config", "configs/mot17_tracking.py:smoke", "--input", sequence,
              "--detections", os.path.join(sequence, "det", "det.txt"),
              "--out", str(tmp_path / "tracks.txt")]
    result = _track(*common, "--config.track.association=byte", "--video",
                    str(tmp_path / "tracks.mp4"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = dict(line.split("\t") for line in result.stdout.splitlines() if "\t" in line)
    assert float(metrics["mota"]) > 0.85 and float(metrics["idf1"]) > 0.7
    assert float(metrics["false_positives"]) == 0
    assert os.path.getsize(tmp_path / "tracks.mp4") > 1000
    result = _track(*common)  # The config's "appearance": public boxes carry no embeddings.
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: Public detections carry no")


def test_mot17_config_trains_and_tracks_on_a_mot_folder(mot_dir, tmp_path):
    config = mot17_tracking.get_config("smoke")
    config.data.data_dir = mot_dir
    config.model.num_identities = 12  # The first halves hold at most 2 x 6 identities.
    train.train_and_evaluate(config, str(tmp_path))
    last = _records(str(tmp_path))[-1]
    assert last["split"] == "train[50%:]" and last["num_sequences"] == 2
    assert all(np.isfinite(last[k]) for k in METRICS)
    config.model.num_identities = 1
    with pytest.raises(UserError, match="num_identities to at least"):
        train.train_and_evaluate(config, str(tmp_path / "too_few"))


def test_unknown_tracker_setting_is_one_clear_error():
    config = moving_digits_tracking.get_config("smoke")
    config.track.max_age = 3
    with pytest.raises(UserError, match="config.track"):
        tracking.tracker_config(config)
    assert dataclasses.asdict(tracking.tracker_config(moving_digits_tracking.get_config()))
