"""Every config in configs/ loads, documents itself, and its smoke variant trains.

Catalog datasets (mnist, cifar10, imagenet2012) are replaced by tfds mock data,
and coco/2017 by a tiny prepared copy of random images (`coco_dir` in
conftest), so the real code paths run offline.
"""

import dataclasses
import glob
import importlib
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_flags

from jaxvision import data, optim, train
from jaxvision.errors import UserError
from jaxvision.tasks import detection
from jaxvision.tracking import TrackerConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if os.path.basename(p) not in ("__init__.py", "common.py")
)
VARIANTS = [None, "smoke"]

# The fields the trainer reads, by what they depend on (model.* is each model's own).
EVERY_CONFIG_KEYS = {
    "seed", "task", "dtype", "mesh.data", "mesh.fsdp",
    "data.name", "data.data_dir", "data.path", "data.train_split", "data.eval_split",
    "data.worker_count", "data.cache", "augment.flip", "augment.mean", "augment.std",
    "batch_size", "eval_batch_size", "num_epochs", "num_train_steps",
    # The fields of every optimizer and schedule, so any config runs with any of them.
    "optimizer.name", "optimizer.learning_rate", "optimizer.weight_decay",
    "optimizer.grad_clip_norm", "optimizer.schedule", "optimizer.warmup_epochs",
    "optimizer.momentum", "optimizer.nesterov", "optimizer.b1", "optimizer.b2",
    "optimizer.decay_epochs", "optimizer.decay_factor",
    "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "profile.start_step", "profile.num_steps", "profile.dump_hlo",
}
TASK_KEYS = {
    "classification": {"data.resize_size", "augment.crop_size", "augment.pad",
                       "augment.random_resized_crop", "label_smoothing"},
    "detection": {"data.image_size", "data.max_boxes", "data.mask_size", "augment.scale_range",
                  "augment.min_box_size", "detect.score_threshold", "detect.pre_nms_topk",
                  "detect.nms_iou", "detect.max_detections"},
    "recognition": {"data.image_size", "augment.pad", "eval_flip", "eval_far"},
    # A tracker's: its detector's (no masks), every tracker setting and the eval's ignore rule.
    "tracking": {"data.image_size", "data.max_boxes", "augment.scale_range",
                 "augment.min_box_size", "detect.score_threshold", "detect.pre_nms_topk",
                 "detect.nms_iou", "detect.max_detections", "eval_min_visibility"}
    | {f"track.{field.name}" for field in dataclasses.fields(TrackerConfig)},
}

# Fields only some datasets have: tfds coco/2017 has no masks, its instances JSON files
# do; a coco_json split is an instances JSON and an image folder; an image folder's
# images are converted to one channel count.
DATASET_KEYS = {
    "coco/2017": {"data.train_annotations", "data.eval_annotations"},
    "coco_json": {"data.train_annotations", "data.eval_annotations", "data.train_images",
                  "data.eval_images"},
    "image_folder": {"data.channels"},
}


def _load(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def _load_with_flags(spec: str, *overrides: str):
    """The config as the scripts get it: a file path through config_flags, with overrides."""
    argv = ["prog", f"--config={spec}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


def _run_train(cwd, *args):
    """scripts/train.py as a user runs it from `cwd` (it fails, or is failed, at start-up)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)  # Only the scripts' own path set-up may find configs/.
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "train.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def _the_error_line(result) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_all_configs_are_listed():
    assert CONFIGS == [
        "cifar10_resnet18", "coco_faster_rcnn_r50_fpn", "coco_fcos_r50_fpn", "coco_json_fcos",
        "coco_mask_rcnn_r50_fpn", "coco_retinanet_r50_fpn", "digit_detection_faster_rcnn",
        "digit_detection_fcos", "digit_detection_mask_rcnn", "digit_detection_retinanet",
        "digit_instances_arcface", "digits_cnn", "faces_arcface_r50", "image_folder_cnn",
        "image_folder_resnet18", "imagenet_resnet50", "mnist_cnn", "mot17_tracking",
        "moving_digits_tracking",
    ]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_docstring_has_command_and_expected_result(name):
    doc = importlib.import_module(f"configs.{name}").__doc__
    assert f"python scripts/train.py --config configs/{name}.py" in doc
    assert "Expected" in doc and "smoke" in doc
    # Dated measurements live in README.md; a docstring states the target.
    assert not re.search(r"\d{4}-\d{2}-\d{2}", doc), doc


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CONFIGS)
def test_config_has_exactly_the_fields_of_its_task(name, variant):
    config = _load(name, variant)
    keys = {k for k in _flat_keys(json.loads(config.to_json())) if not k.startswith("model.")}
    assert keys == EVERY_CONFIG_KEYS | TASK_KEYS[config.task] | DATASET_KEYS.get(
        config.data.name, set())
    assert config.model.name
    # smoke shrinks the run; it never turns a key on or off (beyond model sizes).
    default = json.loads(_load(name).to_json())
    assert _flat_keys(default) - {"model.levels", "model.width"} <= _flat_keys(
        json.loads(config.to_json()))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_file_loads_through_config_flags_with_overrides(name):
    """What `--config configs/X.py:smoke --config.a.b=v` does in every script."""
    path = os.path.join(REPO, "configs", f"{name}.py")
    config = _load_with_flags(
        f"{path}:smoke", "--config.batch_size=16", "--config.optimizer.learning_rate=0.5",
        "--config.data.data_dir=/data/tfds", "--config.mesh.fsdp=2",
    )
    expected = _load(name, "smoke")
    expected.batch_size, expected.optimizer.learning_rate = 16, 0.5
    expected.data.data_dir, expected.mesh.fsdp = "/data/tfds", 2
    assert json.loads(config.to_json()) == json.loads(expected.to_json())
    with pytest.raises(AttributeError, match="learning_rat"):
        _load_with_flags(path, "--config.optimizer.learning_rat=0.1")
    with pytest.raises(UserError, match=f"Unknown variant 'nope' of {name}.py"):
        _load_with_flags(f"{path}:nope")


@pytest.mark.parametrize("optimizer", optim.OPTIMIZERS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CONFIGS)
def test_every_optimizer_runs_from_every_config(name, variant, optimizer):
    path = os.path.join(REPO, "configs", f"{name}.py")
    spec = path if variant is None else f"{path}:{variant}"
    config = _load_with_flags(spec, f"--config.optimizer.name={optimizer}")
    tx, schedule = optim.make_optimizer(config.optimizer, steps_per_epoch=10, total_steps=1000)
    params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
    grads = {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.ones(2)}
    state = tx.init(params)
    for _ in range(2):  # The first step's rate is 0 in a warmup.
        updates, state = tx.update(grads, state, params)
    assert schedule(1) > 0
    for update in jax.tree.leaves(updates):
        assert jnp.all(jnp.isfinite(update)) and jnp.all(update < 0)  # Against the gradient.


@pytest.mark.parametrize("name", [n for n in CONFIGS if _load(n).task == "classification"])
def test_resize_size_placeholder_takes_an_int_override(name):
    path = os.path.join(REPO, "configs", f"{name}.py")
    assert _load_with_flags(path).data.resize_size == _load(name).data.resize_size
    assert _load_with_flags(path, "--config.data.resize_size=48").data.resize_size == 48


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fcos,retinanet", [
    ("digit_detection_fcos", "digit_detection_retinanet"),
    ("coco_fcos_r50_fpn", "coco_retinanet_r50_fpn"),
])
def test_retinanet_config_is_the_fcos_config_with_the_detector_swapped(fcos, retinanet, variant):
    a, b = _load(fcos, variant).to_dict(), _load(retinanet, variant).to_dict()
    assert (a["model"].pop("name"), b["model"].pop("name")) == ("fcos", "retinanet")
    assert a["model"].pop("center_sampling_radius") == 1.5
    b["model"].pop("anchor_scale", None)  # Only the digit config scales the anchors.
    assert (a["detect"].pop("nms_iou"), b["detect"].pop("nms_iou")) == (0.6, 0.5)
    assert a == b


def test_scripts_load_configs_from_any_working_directory(tmp_path):
    """A config imports `configs.common`: the scripts find it from any directory."""
    config = os.path.join(REPO, "configs", "digit_detection_retinanet.py")
    result = _run_train(tmp_path, "--config", f"{config}:nope", "--workdir", "run")
    assert "Unknown variant 'nope' of digit_detection_retinanet.py" in _the_error_line(result)
    config = os.path.relpath(os.path.join(REPO, "configs", "digits_cnn.py"), tmp_path)
    result = _run_train(tmp_path, "--config", f"{config}:smoke", "--workdir", "run",
                        f"--config.data.data_dir={tmp_path}", "--config.model.name=resnet9")
    assert "Unknown model 'resnet9'" in _the_error_line(result)  # The override arrived.


def test_config_outside_the_configs_folder_imports_the_checkouts_common(tmp_path):
    shutil.copy(os.path.join(REPO, "configs", "digits_cnn.py"), tmp_path / "mine.py")
    result = _run_train(tmp_path, "--config", "mine.py:nope", "--workdir", "run")
    # `common.parse_variant` ran: `from configs import common` worked.
    assert "Unknown variant 'nope' of mine.py" in _the_error_line(result)


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_variant_is_refused(name):
    with pytest.raises(UserError, match="Unknown variant"):
        _load(name, "nope")


def test_imagenet_resnet50_is_the_standard_recipe():
    config = _load("imagenet_resnet50")
    assert config.model.name == "resnet50" and config.dtype == "bfloat16"
    assert config.batch_size == 1024 and config.num_epochs == 90
    assert config.optimizer.name == "sgd" and config.optimizer.momentum == 0.9
    assert config.optimizer.learning_rate == pytest.approx(0.1 * 1024 / 256)


@pytest.mark.parametrize("name", ["mnist_cnn", "cifar10_resnet18", "imagenet_resnet50"])
def test_catalog_smoke_config_trains_on_mock_data(name, tmp_path):
    config = _load(name, "smoke")
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == config.num_train_steps
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == config.data.eval_split]
    assert evals and evals[-1]["num_examples"] == 16


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.endswith("_r50_fpn")])
def test_coco_configs_are_the_1x_recipe(name):
    config = _load(name)
    assert config.data.name == "coco/2017" and config.model.backbone == "resnet50"
    assert config.batch_size == 16 and config.num_train_steps == 90_000
    two_stage = config.model.name in ("faster_rcnn", "mask_rcnn")
    assert config.optimizer.learning_rate == (0.02 if two_stage else 0.01)  # Detectron2's.
    assert config.optimizer.schedule == "step"
    steps_per_epoch = 118_287 // 16
    assert round(config.optimizer.warmup_epochs * steps_per_epoch) == 1_000
    assert [round(e * steps_per_epoch) for e in config.optimizer.decay_epochs] == [60_000, 80_000]


# One COCO config trains (they share common.coco_1x's data path); Mask R-CNN, as it
# also reads the instances files. The detectors themselves train in test_detection.py.
@pytest.mark.parametrize("name", ["coco_mask_rcnn_r50_fpn"])
def test_coco_smoke_config_trains_on_mock_data(name, coco_dir, coco_annotations, tmp_path):
    config = _load(name, "smoke")
    config.data.data_dir = coco_dir
    config.data.train_annotations = coco_annotations["train"]
    config.data.eval_annotations = coco_annotations["validation"]
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == config.num_train_steps
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "validation"]
    assert evals and evals[-1]["num_images"] == 8 and "AP50" in evals[-1]
    if config.model.name == "mask_rcnn":  # Masks from the COCO files' polygons and RLEs.
        assert "mask_AP50" in evals[-1] and config.data.mask_size == 16


def test_coco_segmentation_that_does_not_parse_is_one_error(coco_dir, coco_annotations, tmp_path):
    """What the COCO Mask R-CNN config's decode says about a broken segmentation."""
    with open(coco_annotations["validation"]) as f:
        annotations = json.load(f)
    for bad in annotations["annotations"]:
        bad["segmentation"] = {"counts": "not an rle", "size": [1, 1]}
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(annotations))
    config = _load("coco_mask_rcnn_r50_fpn", "smoke")
    config.data.eval_annotations = str(path)
    decode = detection.make_decode(config)
    source = data.load_source("coco/2017", "validation", coco_dir)
    record = next(source[i] for i in range(len(source)) if len(source[i]["objects"]["id"]))
    with pytest.raises(UserError, match=r"annotation \d+ .*instances_val2017.json"):
        decode(record)
