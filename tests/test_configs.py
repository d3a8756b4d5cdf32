"""Every config in configs/ loads, documents itself, and its smoke variant trains.

Catalog datasets (mnist, cifar10, imagenet2012) are replaced by tfds mock data,
and coco/2017 by a tiny prepared copy of random images (`coco_dir` in
conftest), so the real code paths run offline.
"""

import glob
import importlib
import json
import os

import pytest
import tensorflow_datasets as tfds

from jaxvision import train
from jaxvision.errors import UserError

CONFIGS = sorted(
    os.path.splitext(os.path.basename(p))[0] for p in glob.glob("configs/*.py")
    if not p.endswith("__init__.py")
)


def _load(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def test_all_configs_are_listed():
    assert CONFIGS == [
        "cifar10_resnet18", "coco_fcos_r50_fpn", "coco_retinanet_r50_fpn",
        "digit_detection_fcos", "digit_detection_retinanet", "digits_cnn",
        "imagenet_resnet50", "mnist_cnn",
    ]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_docstring_has_command_and_expected_result(name):
    doc = importlib.import_module(f"configs.{name}").__doc__
    assert f"python scripts/train.py --config configs/{name}.py" in doc
    assert "Expected" in doc and "smoke" in doc


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


@pytest.mark.parametrize("name", ["coco_fcos_r50_fpn", "coco_retinanet_r50_fpn"])
def test_coco_configs_are_the_1x_recipe(name):
    config = _load(name)
    assert config.data.name == "coco/2017" and config.model.backbone == "resnet50"
    assert config.batch_size == 16 and config.num_train_steps == 90_000
    assert config.optimizer.learning_rate == 0.01 and config.optimizer.schedule == "step"
    steps_per_epoch = 118_287 // 16
    assert round(config.optimizer.warmup_epochs * steps_per_epoch) == 1_000
    assert [round(e * steps_per_epoch) for e in config.optimizer.decay_epochs] == [60_000, 80_000]


def test_coco_smoke_config_trains_on_mock_data(coco_dir, tmp_path):
    config = _load("coco_fcos_r50_fpn", "smoke")
    config.data.data_dir = coco_dir
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == config.num_train_steps
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "validation"]
    assert evals and evals[-1]["num_images"] == 8 and "AP50" in evals[-1]
