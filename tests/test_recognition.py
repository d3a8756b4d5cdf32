"""Recognition end to end: margin-loss training, verification metrics, eval and predict scripts.

Runs the `smoke` variants of configs/digit_instances_arcface.py (the real
`digit_instances` data) and configs/faces_arcface_r50.py (an identity folder
and insightface `.bin` verification files this file writes).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import digit_instances_arcface, faces_arcface_r50
from jaxvision import data, experiment, train
from jaxvision.data import identity_files
from jaxvision.errors import UserError
from jaxvision.tasks import recognition

METRICS = {"verification_accuracy", "verification_accuracy_std", "verification_threshold",
           "roc_auc", "tar@far=1e-2", "tar@far=1e-3", "num_pairs"}


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _finished_run(config_module, data_dir, tmp_path_factory):
    """A finished 2-step smoke run of the config on 8 devices: (config, workdir)."""
    config = config_module.get_config("smoke")
    config.data.data_dir = data_dir
    workdir = str(tmp_path_factory.mktemp("run"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


@pytest.fixture(scope="module")
def arcface_run(digit_instances_dir, tmp_path_factory):
    """The digit_instances smoke run."""
    return _finished_run(digit_instances_arcface, digit_instances_dir, tmp_path_factory)


def test_training_logs_verification_metrics_and_eval_reproduces_them(arcface_run):
    config, workdir = arcface_run
    last = [r for r in _records(workdir) if r["split"] == "test"][-1]
    assert METRICS | {"rank1", "rank5"} <= set(last)
    assert last["num_pairs"] == 3000  # The test split's whole pairs list.
    assert all(np.isfinite(last[k]) for k in METRICS | {"rank1", "rank5"})
    assert 0.0 <= last["tar@far=1e-3"] <= last["tar@far=1e-2"] <= 1.0
    assert 0.0 <= last["rank1"] <= last["rank5"] <= 1.0
    metrics = experiment.evaluate(config, workdir)
    for key in METRICS | {"rank1", "rank5"}:
        assert metrics[key] == pytest.approx(last[key], abs=1e-6), key
    # The ROC export: a PNG and the curve it draws.
    with Image.open(os.path.join(workdir, "eval", "roc.png")) as png:
        assert png.format == "PNG" and png.width > 300
    with open(os.path.join(workdir, "eval", "roc.json")) as f:
        roc = json.load(f)
    far, tar = np.array(roc["far"]), np.array(roc["tar"])
    assert far[0] == tar[0] == 0.0 and far[-1] == tar[-1] == 1.0
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)


def _predict(config, workdir, *args):
    command = [
        sys.executable, "scripts/predict.py", "--config",
        "configs/digit_instances_arcface.py:smoke", "--workdir", workdir, *args,
        f"--config.data.data_dir={config.data.data_dir}", "--compilation_cache_dir=",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_predict_identifies_queries_in_a_gallery_and_scores_pairs(arcface_run, tmp_path):
    config, workdir = arcface_run
    source = data.load_source("digit_instances", "test", config.data.data_dir)
    records = sorted((source[i] for i in range(30)), key=lambda r: int(r["id"]))
    gallery, queries = tmp_path / "gallery", tmp_path / "queries"
    for r in records[:30:10]:  # The first view of 3 identities, one image each.
        (gallery / f"person{r['label']}").mkdir(parents=True)
        Image.fromarray(r["image"][..., 0]).save(gallery / f"person{r['label']}" / "a.png")
    queries.mkdir()
    for r in records[:30:10]:  # The same images as queries: each matches itself exactly.
        Image.fromarray(r["image"][..., 0]).save(queries / f"q{r['label']}.png")
    Image.fromarray(records[1]["image"][..., 0]).save(tmp_path / "other_view.png")
    (tmp_path / "pairs.txt").write_text(
        "# a comment\nqueries/q0.png gallery/person0/a.png 1\n"
        "queries/q0.png other_view.png 1\nqueries/q0.png queries/q1.png 0\n")
    result = _predict(config, workdir, "--gallery", str(gallery), "--image", str(queries),
                      "--pairs", str(tmp_path / "pairs.txt"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    matches, pairs = lines[:3], lines[3:]
    for (query, identity, similarity), label in zip(matches, (0, 1, 2), strict=True):
        assert query.endswith(f"q{label}.png") and identity == f"person{label}"
        assert float(similarity) == pytest.approx(1.0, abs=1e-3)
    assert len(pairs) == 3 and all(len(p) == 4 for p in pairs)  # a, b, score, decision
    assert float(pairs[0][2]) == pytest.approx(1.0, abs=1e-3) and pairs[0][3] == "same"
    assert all(-1.0 <= float(p[2]) <= 1.0 for p in pairs)
    threshold = recognition.logged_threshold(workdir)
    assert [p[3] for p in pairs] == [
        "same" if float(p[2]) >= threshold else "different" for p in pairs]
    assert "Accuracy at threshold" in result.stderr


def test_pairs_file_errors_name_the_line(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "pairs.txt").write_text("a.png a.png\n\na.png missing.png 1\n")
    with pytest.raises(UserError, match=r"Line 3 of .*pairs.txt.* names .*missing.png.*does not exist"):
        recognition.read_pairs_file(str(tmp_path / "pairs.txt"))
    (tmp_path / "bad.txt").write_text("a.png a.png yes\n")
    with pytest.raises(UserError, match=r"Line 1 of .*bad.txt.*SAME 1 or 0"):
        recognition.read_pairs_file(str(tmp_path / "bad.txt"))
    with pytest.raises(UserError, match="Cannot read the pairs file"):
        recognition.read_pairs_file(str(tmp_path / "none.txt"))


def _evaluator(monkeypatch, pairs):
    monkeypatch.setattr(data, "verification_pairs", lambda *args: np.asarray(pairs, np.int32))
    config = digit_instances_arcface.get_config("smoke")
    return recognition.Evaluator(config, None, "test")


def _outputs(embeddings, labels, mask=None):
    n = len(embeddings)
    return {"embedding": np.asarray(embeddings, np.float32), "id": np.arange(n, dtype=np.int32),
            "label": np.asarray(labels, np.int32),
            "mask": np.ones(n, bool) if mask is None else np.asarray(mask)}


# Identities 0, 0, 1, 1, 2, 2 on three axes; pairs (id_a, id_b, same, fold), two folds.
EMBEDDINGS = [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0, 1], [0, 0.2, 0.9]]
PAIRS = [[0, 1, 1, 0], [2, 3, 1, 0], [0, 2, 0, 0], [1, 4, 0, 0],
         [4, 5, 1, 1], [2, 3, 1, 1], [3, 5, 0, 1], [0, 5, 0, 1]]


def test_evaluator_metrics_on_hand_made_embeddings(monkeypatch, tmp_path):
    evaluator = _evaluator(monkeypatch, PAIRS)
    evaluator.add(_outputs(EMBEDDINGS[:4], [0, 0, 1, 1]))
    # The second batch's last row is padding: it counts for nothing.
    evaluator.add(_outputs(EMBEDDINGS[4:] + [[5, 5, 5]], [2, 2, 0], mask=[1, 1, 0]))
    evaluator._rows["id"][-1] = np.array([4, 5])  # Ids of the second batch.
    metrics = evaluator.result(str(tmp_path))
    # Same pairs score >= 0.97, different ones <= 0.22: perfectly separable.
    assert metrics["verification_accuracy"] == 1.0 and metrics["roc_auc"] == 1.0
    assert metrics["num_pairs"] == 8 and metrics["tar@far=1e-3"] == 1.0
    # Gallery: the first image of each identity; probes 1, 3, 5 are nearest their own.
    assert metrics["rank1"] == 1.0
    assert (tmp_path / "roc.png").is_file()


def test_zero_embeddings_and_unknown_identities_give_finite_metrics(monkeypatch, caplog):
    evaluator = _evaluator(monkeypatch, PAIRS)
    embeddings = [list(e) for e in EMBEDDINGS]
    embeddings[1] = [0.0, 0.0, 0.0]  # A dead embedding: its pairs score 0.
    evaluator.add(_outputs(embeddings, [-1] * 6))  # A .bin set: identities unknown.
    metrics = evaluator.result()
    assert all(np.isfinite(v) for v in metrics.values())
    assert "rank1" not in metrics  # No identification without identities.
    assert "1 of the 6 embeddings of test are all zeros" in caplog.text


def test_pairs_outside_the_evaluated_images_are_left_out_or_refused(monkeypatch, caplog):
    evaluator = _evaluator(monkeypatch, PAIRS + [[0, 99, 1, 1]])
    evaluator.add(_outputs(EMBEDDINGS, [0, 0, 1, 1, 2, 2]))
    assert evaluator.result()["num_pairs"] == 8
    assert "1 of the 9 verification pairs of test are left out" in caplog.text
    evaluator = _evaluator(monkeypatch, [[50, 51, 1, 0], [52, 53, 0, 1]])
    evaluator.add(_outputs(EMBEDDINGS, [0, 0, 1, 1, 2, 2]))
    with pytest.raises(UserError, match="None of the 2 verification pairs of 'test'"):
        evaluator.result()


# The faces config on files in the formats insightface distributes.
FACE_SETS = ("lfw", "cfp_fp", "agedb_30")


def _face(rng, identity, size=40):
    """An RGB 'face' whose colour and stripe position depend on its identity."""
    image = rng.integers(0, 60, (size, size + 6, 3), dtype=np.uint8)
    image[:, :, identity % 3] += 120
    image[4 * (identity % 8) : 4 * (identity % 8) + 4] = 255
    return image


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    """train/<identity>/*.jpg (8 identities), val/ (20 identities), and the three .bin sets."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for split, identities, per_identity in (("train", 8, 3), ("val", 20, 2)):
        for identity in range(identities):
            folder = root / split / f"id{identity:04d}"
            folder.mkdir(parents=True)
            for k in range(per_identity):
                Image.fromarray(_face(rng, identity)).save(folder / f"{k}.jpg")
    for name in FACE_SETS:
        images, issame = [], []
        for k in range(20):  # 20 pairs: 2 per fold.
            a, b = k % 8, (k % 8 if k % 2 == 0 else (k + 3) % 8)
            images += [_face(rng, a), _face(rng, b)]
            issame.append(a == b)
        identity_files.write_verification_bin(str(root / f"{name}.bin"), images, issame)
    return str(root)


@pytest.fixture(scope="module")
def faces_run(faces_dir, tmp_path_factory):
    """The faces smoke run on `faces_dir`."""
    return _finished_run(faces_arcface_r50, faces_dir, tmp_path_factory)


def test_faces_config_trains_on_an_identity_folder_and_verifies_on_bin_files(faces_run):
    config, workdir = faces_run
    last = _records(workdir)[-1]
    assert last["split"] == "lfw.bin,cfp_fp.bin,agedb_30.bin"
    for name in FACE_SETS:
        assert {f"{name}/{k}" for k in METRICS} <= set(last)
        assert last[f"{name}/num_pairs"] == 20
        assert f"{name}/rank1" not in last  # .bin sets have no identities.
        assert all(np.isfinite(last[f"{name}/{k}"]) for k in METRICS)
    experiment.evaluate(config, workdir)
    for name in FACE_SETS:
        assert os.path.isfile(os.path.join(workdir, "eval", name, "roc.png"))


def test_an_identity_folder_eval_split_gets_lfw_style_pairs(faces_run):
    config, workdir = faces_run
    config = config.copy_and_resolve_references()
    config.data.eval_split = "val"  # 20 identities of 2 images: 2 per fold.
    metrics = experiment.evaluate(config, workdir)
    expected = identity_files.folder_pairs(
        identity_files.IdentityFolderSource(os.path.join(config.data.data_dir, "val")).labels)
    assert metrics["num_pairs"] == len(expected) == 40  # 2 same and 2 different per fold.
    assert 0.0 <= metrics["rank1"] <= 1.0 and np.isfinite(metrics["verification_accuracy"])


def test_a_bin_file_that_is_not_insightfaces_is_one_clear_error(faces_run, tmp_path):
    config, workdir = faces_run
    config = config.copy_and_resolve_references()
    (tmp_path / "lfw.bin").write_bytes(b"not a pickle")
    config.data.eval_split = str(tmp_path / "lfw.bin")
    with pytest.raises(UserError, match="not an insightface verification .bin"):
        experiment.evaluate(config, workdir)


def test_logged_threshold_is_the_newest_and_survives_a_line_cut_short(tmp_path):
    assert recognition.logged_threshold(str(tmp_path)) is None  # No metrics.jsonl.
    rows = [{"step": 2, "split": "test", "verification_threshold": 0.5},
            {"step": 4, "split": "train", "loss": 1.0},
            {"step": 4, "split": "lfw.bin,cfp_fp.bin",
             "lfw/verification_threshold": 0.7, "cfp_fp/verification_threshold": 0.6}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "spl'  # Killed mid-write.
    (tmp_path / "metrics.jsonl").write_text(text)
    assert recognition.logged_threshold(str(tmp_path)) == 0.7  # lfw: the first eval set.
