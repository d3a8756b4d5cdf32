"""The configs for the user's own files train end to end, resume exactly and fine-tune.

Data: `digits` written as an image folder and as IDX files, and a slice of
`digit_detection` written as COCO JSON with sparse category ids (conftest).
"""

import importlib.util
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from configs import coco_json_fcos, image_folder_cnn, image_folder_resnet18, mnist_cnn
from jaxvision import data, optim, train, weights
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError
from jaxvision.experiment import Experiment
from jaxvision.tasks import detection

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "make_resnet_golden", os.path.join(os.path.dirname(__file__), "golden", "make_resnet_golden.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _leaves_with_paths(tree):
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _image_folder_config(root):
    config = image_folder_cnn.get_config("smoke")
    config.data.path = root
    config.data.eval_split = "test"
    config.checkpoint_every_steps = 2
    return config


class _Interrupt(Exception):
    pass


def test_image_folder_cnn_trains_and_resumes_exactly(digits_image_folder, tmp_path, monkeypatch):
    config = _image_folder_config(digits_image_folder)
    straight = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "straight")))
    last = _metrics(str(tmp_path / "straight"))[-1]
    assert last["split"] == "test" and last["num_examples"] == 360  # Every test image, once.

    save = Checkpointer.save

    def save_then_die(self, step, *args, **kwargs):
        saved = save(self, step, *args, **kwargs)
        if step == 2:
            raise _Interrupt()
        return saved

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(_Interrupt):
        train.train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.undo()
    resumed = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "resumed")))
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)  # Bit for bit.


def test_mnist_config_trains_on_idx_files(digits_idx_dir, tmp_path):
    """`--config.data.name=idx --config.data.path=DIR`, as the README says."""
    config = mnist_cnn.get_config("smoke")
    config.data.update(name="idx", path=digits_idx_dir, resize_size=28)  # 8x8 digits -> MNIST's 28.
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == config.num_train_steps
    last = _metrics(str(tmp_path))[-1]
    assert last["split"] == "test" and last["num_examples"] == 360


def test_coco_json_fcos_reads_its_training_batches(digit_detection_coco_json):
    """The config's data path up to the train step (the step itself: test_detection.py)."""
    config = coco_json_fcos.get_config("smoke")
    config.data.update(digit_detection_coco_json)
    assert config.model.freeze_backbone_stages == 2 and config.model.frozen_bn  # detectron2's.
    trainer = train.Trainer(Experiment(config))
    assert trainer.experiment.info.category_ids == tuple(range(3, 23, 2))
    assert trainer.steps_per_epoch == 64 // config.batch_size
    iterator = trainer.train_iterator()
    try:
        batch = jax.device_get(next(iterator))
    finally:
        iterator.close()
    assert batch["image"].shape == (config.batch_size, 64, 64, 3)
    labels = batch["labels"][batch["box_mask"]]
    assert labels.size and labels.min() >= 0 and labels.max() < 10  # Contiguous, not the ids.


def test_coco_json_results_use_the_datasets_category_ids(digit_detection_coco_json, tmp_path):
    """Perfect detections, exported and scored by pycocotools against the user's own JSON."""
    config = coco_json_fcos.get_config("smoke")
    config.data.update(digit_detection_coco_json)
    info = data.dataset_info("coco_json", None, config.data.eval_split)
    evaluator = detection.Evaluator(config, info, config.data.eval_split)
    decode = detection.make_decode(config)
    source = data.load_source("coco_json", config.data.eval_split)
    for i in range(len(source)):
        gt = {k: v[None] for k, v in decode(source[i]).items()}  # A batch of one.
        gt["mask"] = np.ones(1, bool)
        dets = {"boxes": gt["boxes"], "labels": gt["labels"],
                "scores": np.ones_like(gt["labels"], np.float32), "valid": gt["box_mask"]}
        evaluator.add({"ground_truth": gt, "detections": dets})
    assert evaluator.result(str(tmp_path))["AP"] == pytest.approx(1.0)

    with open(tmp_path / "ground_truth.json") as f:
        assert [c["id"] for c in json.load(f)["categories"]] == list(range(3, 23, 2))
    original = COCO(digit_detection_coco_json["eval_annotations"])
    scored = COCOeval(original, original.loadRes(str(tmp_path / "detections.json")), "bbox")
    scored.evaluate()
    scored.accumulate()
    scored.summarize()
    assert scored.stats[0] == pytest.approx(1.0)  # AP against the original file and ids.


@pytest.fixture(scope="module")
def torchvision_npz(tmp_path_factory):
    """ResNet-18 weights in torchvision's names (7 classes), as a `.npz`."""
    path = str(tmp_path_factory.mktemp("weights") / "resnet18.npz")
    np.savez(path, **golden.random_state_dict("resnet18", num_classes=7, seed=3))
    return path


def test_resnet18_fine_tunes_from_torchvision_weights(
        digits_image_folder, torchvision_npz, tmp_path, caplog):
    """The README's fine-tuning command: pretrained backbone, new head, frozen stem + stage 1."""
    config = image_folder_resnet18.get_config("smoke")
    del config.model["width"]  # torchvision's ResNet-18.
    config.data.update(path=digits_image_folder, eval_split="test")
    config.eval_batch_size = 120
    config.model.update(init_from=f"torchvision:{torchvision_npz}",
                        freeze_backbone_stages=2, frozen_bn=True)
    with caplog.at_level(logging.INFO, logger="absl"), caplog.at_level(logging.INFO):
        state = jax.device_get(train.train_and_evaluate(config, str(tmp_path)))
    assert "head re-initialised: checkpoint has 7 classes, this model 10" in caplog.text

    pretrained = weights.from_torchvision(torchvision_npz, "resnet18")
    loaded, trained = _leaves_with_paths(pretrained["params"]), _leaves_with_paths(state.params)
    frozen = _leaves_with_paths(weights.frozen_mask(pretrained["params"], 2, True))
    for key, value in trained.items():
        if key.startswith("['backbone']"):
            assert np.array_equal(value, loaded[key]) == bool(frozen[key]), key
    assert state.params["head"]["kernel"].shape == (512, 10)
    jax.tree.map(np.testing.assert_array_equal,
                 pretrained["batch_stats"]["backbone"], state.batch_stats["backbone"])

    # A resumed run restores its checkpoint; it does not load the weights again.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="absl"):
        again = jax.device_get(train.train_and_evaluate(config, str(tmp_path)))
    assert "head re-initialised" not in caplog.text
    jax.tree.map(np.testing.assert_array_equal, again.params, state.params)


def test_init_from_a_workdir_continues_from_its_weights(digits_image_folder, tmp_path):
    config = _image_folder_config(digits_image_folder)
    first = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "first")))
    config.model.init_from = f"workdir:{tmp_path / 'first'}"
    trainer = train.Trainer(Experiment(config))
    start = jax.device_get(trainer.init_state())
    assert int(start.step) == 0  # A new run: step, optimizer and data order start afresh...
    jax.tree.map(np.testing.assert_array_equal, start.params, first.params)  # ...from its weights.


@pytest.mark.parametrize("stages,frozen_bn", [(0, True), (3, False)])
def test_frozen_parameters_get_no_update_and_no_weight_decay(stages, frozen_bn):
    params = {"backbone": {"stem_conv": {"kernel": np.ones((3, 3, 1, 2), np.float32)},
                           "stage1_block0": {"conv1": {"kernel": np.ones((3, 3, 2, 2), np.float32)},
                                             "bn1": {"scale": np.ones(2, np.float32)}},
                           "stage3_block0": {"bn2": {"scale": np.ones(2, np.float32)}}},
              "head": {"kernel": np.ones((2, 3), np.float32)}}
    frozen = weights.frozen_mask(params, stages, frozen_bn)
    expected = {  # stage k + 1 counts the stem as stage 1 (detectron2's FREEZE_AT).
        "['backbone']['stem_conv']['kernel']": stages >= 1,
        "['backbone']['stage1_block0']['conv1']['kernel']": stages >= 2,
        "['backbone']['stage1_block0']['bn1']['scale']": stages >= 2 or frozen_bn,
        "['backbone']['stage3_block0']['bn2']['scale']": stages >= 4 or frozen_bn,
        "['head']['kernel']": False,
    }
    assert _leaves_with_paths(frozen) == {k: np.asarray(v) for k, v in expected.items()}

    config = image_folder_resnet18.get_config()  # SGD with weight decay.
    tx, _ = optim.make_optimizer(config.optimizer, 10, 100, frozen=frozen)
    loss = weights.stop_frozen_gradients(
        lambda p: sum(jax.numpy.sum(x**2) for x in jax.tree.leaves(p)), frozen)
    opt_state = tx.init(params)
    new = params
    for _ in range(3):
        grads = jax.grad(loss)(new)
        updates, opt_state = tx.update(grads, opt_state, new)
        new = jax.tree.map(lambda p, u: p + u, new, updates)
    for key, is_frozen in _leaves_with_paths(frozen).items():
        changed = not np.array_equal(_leaves_with_paths(new)[key], _leaves_with_paths(params)[key])
        assert changed != bool(is_frozen), key


def test_a_split_folder_that_does_not_exist_is_one_error_line_at_the_start(digits_image_folder):
    """The config's default eval split is "val"; this folder has "test": said before training."""
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", "configs/image_folder_cnn.py:smoke",
         "--workdir", os.path.join(digits_image_folder, "..", "run_val"),
         f"--config.data.path={digits_image_folder}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "/val'" in errors[0] and "['test', 'train']" in errors[0], errors
    assert "train:" not in result.stderr  # No step was taken.


def test_coco_json_without_eval_files_is_refused_before_training(digit_detection_coco_json, tmp_path):
    config = coco_json_fcos.get_config("smoke")
    config.data.update(train_annotations=digit_detection_coco_json["train_annotations"],
                       train_images=digit_detection_coco_json["train_images"])
    with pytest.raises(UserError, match="eval_annotations / eval_images"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")
