"""The torchvision peers in benchmarks/: they run, report the documented JSON, and
build the same models as jaxvision (equal parameter counts, or the documented
difference). Skipped where torch or torchvision is not installed (CI): torch is
an optional extra, never a test dependency.

Timing is never asserted. torch runs on one thread here: two OpenMP threads on
a shared 2-core machine can stall for seconds per step.
"""

import importlib
import json
import os
import re
import subprocess
import sys
from typing import Any

import jax
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
sys.path.insert(0, BENCHMARKS)  # As when a peer script runs: `import torch_peer`.

import torch_peer
import torchvision_classification
import torchvision_detection

from jaxvision import models
from jaxvision.errors import UserError
from jaxvision.experiment import Experiment

RESULT_KEYS = {
    "framework", "torch_version", "torchvision_version", "device", "platform", "task",
    "mode", "compiled", "channels_last", "model", "batch_size", "image_size", "dtype",
    "amp", "num_threads", "steps", "warmup", "param_count", "first_step_s", "compile_s",
    "step_time_median_s", "step_time_min_s", "step_time_max_s", "images_per_s",
    "peak_memory_bytes", "peak_memory_source",
}
CASES = [  # (config, variant, mode)
    ("digits_cnn", None, "train"),
    ("imagenet_resnet50", "smoke", "train"),
    ("coco_fcos_r50_fpn", "smoke", "train"),
    ("coco_fcos_r50_fpn", "smoke", "eval"),
    ("coco_retinanet_r50_fpn", "smoke", "train"),
    ("coco_retinanet_r50_fpn", "smoke", "eval"),
    ("coco_faster_rcnn_r50_fpn", "smoke", "train"),
    ("coco_mask_rcnn_r50_fpn", "smoke", "train"),  # Target masks from the boxes.
    ("coco_mask_rcnn_r50_fpn", "smoke", "eval"),  # The box head's eval path too.
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory, coco_dir):
    """Dataset -> tfds data dir: digits prepared on first use, the mock COCO, imagenet's info."""
    return {"digits": str(tmp_path_factory.mktemp("tfds")), "coco/2017": coco_dir,
            "imagenet2012": None}


def _config(name, variant, data_dirs):
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    config.data.data_dir = data_dirs[config.data.name]
    return config


def _workload(config):
    return {"classification": torchvision_classification.workload,
            "detection": torchvision_detection.workload}[config.task]


def _jaxvision_param_count(config) -> tuple[int, Any]:
    """jaxvision's parameter count for `config`, and its model (the Flax module's fields)."""
    experiment = Experiment(config)
    params = experiment.abstract_variables()["params"]
    return sum(x.size for x in jax.tree.leaves(params)), experiment.model


def _torchvision_extra_params(name: str, model) -> int:
    """Parameters torchvision's peer has beyond jaxvision's `model` (the scripts' docstrings)."""
    if name == "fcos":  # jaxvision's learnable Scale, one scalar per pyramid level P3-P7.
        return -5
    if name in ("faster_rcnn", "mask_rcnn"):
        # torchvision's background class: a 4-delta row of the box regressor (4 x D
        # weights + 4 biases) and, with masks, a mask channel (a 1x1 conv from F + bias).
        extra = 4 * (model.box_head_features + 1)
        return extra + (model.fpn_features + 1 if model.with_masks else 0)
    return 0


@pytest.mark.parametrize("name,variant,mode", CASES)
def test_peer_times_the_model_with_jaxvision_parameter_count(name, variant, mode, data_dirs):
    config = _config(name, variant, data_dirs)
    result = torch_peer.run_benchmark(
        config, _workload(config), config.task, mode=mode, device="cpu", steps=1, warmup=1,
    )
    assert RESULT_KEYS <= set(result), RESULT_KEYS - set(result)
    assert "error" not in result
    json.dumps(result)  # JSON-able as it is.
    assert (result["framework"], result["platform"]) == ("torchvision", "cpu")
    assert (result["mode"], result["compiled"]) == (mode, False)
    batch_size = config.batch_size if mode == "train" else config.eval_batch_size
    assert result["batch_size"] == batch_size
    size = config.data.image_size if config.task == "detection" else config.augment.crop_size
    assert result["image_size"] == size
    assert result["amp"] == (config.dtype != "float32")
    assert result["model"] == config.model.name
    assert result["step_time_min_s"] <= result["step_time_median_s"] <= result["step_time_max_s"]
    assert result["images_per_s"] == pytest.approx(
        result["batch_size"] / result["step_time_median_s"]
    )
    assert result["peak_memory_bytes"] > 0
    count, model = _jaxvision_param_count(config)
    assert result["param_count"] == count + _torchvision_extra_params(config.model.name, model)


def test_mask_rcnn_target_masks_are_the_filled_boxes():
    images, targets = torchvision_detection.synthetic_batch(
        2, 1, 32, max_boxes=6, num_classes=3, generator=torch.Generator().manual_seed(0),
        masks=True,
    )
    assert len(images) == len(targets) == 2
    for target in targets:
        assert target["masks"].shape == (3, 32, 32) and target["masks"].dtype == torch.uint8
        for box, mask in zip(target["boxes"].tolist(), target["masks"], strict=True):
            x0, y0, x1, y1 = (round(v) for v in box)  # As jaxvision's "instances" map.
            expected = torch.zeros(32, 32, dtype=torch.uint8)
            expected[y0:y1, x0:x1] = 1
            assert torch.equal(mask, expected)


def test_weight_decay_goes_to_kernels_only(data_dirs):
    config = _config("digits_cnn", None, data_dirs)
    spec = models.get_model("cnn", num_classes=10, features=(32, 64), hidden=128)
    model = torchvision_classification.cnn(spec, in_channels=1, image_size=8)
    decayed, plain = torch_peer.make_optimizer(model, config.optimizer).param_groups
    assert decayed["weight_decay"] == config.optimizer.weight_decay
    assert plain["weight_decay"] == 0
    # Two convs and two dense layers: 4 kernels decayed, their 4 biases not.
    assert [p.ndim for p in decayed["params"]] == [4, 4, 2, 2]
    assert [p.ndim for p in plain["params"]] == [1, 1, 1, 1]


@pytest.mark.parametrize("name,field,value,message", [
    ("digits_cnn", "name", "resnet9", "Unknown model 'resnet9'"),
    ("coco_fcos_r50_fpn", "levels", (3, 4, 5), "config.model.levels=(3, 4, 5) has no torchvision"),
    ("coco_retinanet_r50_fpn", "name", "detr", "Unknown model 'detr'"),
])
def test_unsupported_model_is_one_clear_error(name, field, value, message, data_dirs):
    config = _config(name, "smoke", data_dirs)
    config.model[field] = value
    with pytest.raises(UserError, match=re.escape(message)):
        torch_peer.run_benchmark(config, _workload(config), config.task, device="cpu", steps=1)


@pytest.mark.parametrize("task,dtype,steps,message", [
    ("detection", "float32", 1, "time it with benchmarks/torchvision_classification.py"),
    ("classification", "int8", 1, "config.dtype='int8' has no torch counterpart"),
    ("classification", "float32", 0, "--steps=0 must be >= 1"),
])
def test_settings_the_peer_cannot_time_are_one_clear_error(task, dtype, steps, message, data_dirs):
    config = _config("digits_cnn", None, data_dirs)
    config.dtype = dtype
    with pytest.raises(UserError, match=re.escape(message)):
        torch_peer.run_benchmark(config, torchvision_classification.workload, task, steps=steps)


def _run(script, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *args, "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_classification_script_writes_json_file(data_dirs, tmp_path):
    out = tmp_path / "result.json"
    result = _run(
        "torchvision_classification.py", "--config", "configs/digits_cnn.py",
        f"--config.data.data_dir={data_dirs['digits']}", "--steps", "1", "--warmup", "1",
        "--batch_size", "16", "--json", str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "torchvision cnn train on cpu" in result.stdout
    reported = json.loads(out.read_text())
    assert RESULT_KEYS <= set(reported)
    assert (reported["batch_size"], reported["param_count"]) == (16, 53_002)


def test_detection_script_prints_json_last(data_dirs):
    result = _run(
        "torchvision_detection.py", "--config", "configs/coco_retinanet_r50_fpn.py:smoke",
        f"--config.data.data_dir={data_dirs['coco/2017']}", "--mode", "eval",
        "--steps", "1", "--warmup", "0", "--image_size", "64", "--dtype", "float32",
    )
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout.splitlines()[-1])
    assert RESULT_KEYS | {"backbone"} <= set(reported)
    assert (reported["model"], reported["backbone"], reported["mode"]) == (
        "retinanet", "resnet18", "eval"
    )
    assert (reported["dtype"], reported["amp"]) == ("float32", False)


def test_wrong_config_key_is_one_line_and_nonzero_exit():
    result = _run("torchvision_classification.py", "--config", "configs/digits_cnn.py",
                  "--config.model.widht=8")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Config key 'widht' does not exist" in errors[0], result.stderr
