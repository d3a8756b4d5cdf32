"""Export: the StableHLO file gives the model's own outputs, for any batch size.

scripts/export.py exports a digits CNN checkpoint; a detector (FCOS, smoke
sizes, random variables) goes through `export_stablehlo`, `save` and
`load_stablehlo`. Both files are called on batches of 1 and 3 and compared
with the jaxvision functions they export.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import digit_detection_fcos, digits_cnn
from jaxvision import data, experiment, export, train
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError
from jaxvision.tasks import classification, detection

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = data.DatasetInfo(10, tuple("0123456789"), {}, (8, 8, 1))
CANVASES = data.DatasetInfo(10, tuple("0123456789"), {}, (128, 128, 1), is_detection=True)


def _random_model(config, info):
    """The experiment of `config` and random NumPy variables (nothing to compile)."""
    exp = experiment.Experiment(config, info=info)
    rng = np.random.default_rng(0)

    def random(path, x):  # BatchNorm variances must be positive.
        if jax.tree_util.keystr(path).endswith("['var']"):
            return rng.uniform(0.5, 1.5, x.shape).astype(x.dtype)
        return rng.normal(0.0, 0.1, x.shape).astype(x.dtype)

    return exp, jax.tree_util.tree_map_with_path(random, exp.variable_shapes)


def _images(batch, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, *shape), dtype=np.uint8)


def _assert_same(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        want = np.asarray(expected[key])
        assert got[key].shape == want.shape and got[key].dtype == want.dtype, key
        np.testing.assert_allclose(got[key], want, rtol=1e-6, atol=1e-6, err_msg=key)


def _round_trip(tmp_path, exp, variables):
    """`export_stablehlo` -> `save` -> `load_stablehlo`: (loaded, sidecar)."""
    path = str(tmp_path / "sub" / "model.stablehlo")
    exported = export.export_stablehlo(exp, variables)
    export.save(path, exported, export.metadata(exported, exp, 7, "a_config.py"))
    with open(path + ".json") as f:
        return export.load_stablehlo(path), json.load(f)


def test_exported_detector_gives_its_detections_for_two_batch_sizes(tmp_path):
    config = digit_detection_fcos.get_config("smoke")
    exp, variables = _random_model(config, CANVASES)
    loaded, sidecar = _round_trip(tmp_path, exp, variables)
    predict = jax.jit(functools.partial(detection.predict, model=exp.model, config=config))
    for batch in (1, 3):
        images = _images(batch, (64, 64, 1), seed=batch)
        expected = predict(variables, images)
        assert expected["valid"].any()  # Random weights still score above the threshold.
        _assert_same(jax.device_get(loaded.call(images)), expected)
    assert sidecar["input"]["shape"] == ["b", 64, 64, 1]
    assert sidecar["input"]["host_preprocessing"] == "jaxvision.data.letterbox(image, 64)"
    assert sidecar["outputs"] == {
        "boxes": {"shape": ["b", 100, 4], "dtype": "float32"},
        "labels": {"shape": ["b", 100], "dtype": "int32"},
        "scores": {"shape": ["b", 100], "dtype": "float32"},
        "valid": {"shape": ["b", 100], "dtype": "bool"},
    }


def test_other_tasks_suffixes_and_files_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"ONNX export is not available yet.*ending in \.stablehlo"):
        export.check_path("model.onnx")
    with pytest.raises(UserError, match=r"Cannot tell the export format from 'model\.pt'"):
        export.check_path("model.pt")
    config = digits_cnn.get_config("smoke")
    exp = experiment.Experiment(config, info=DIGITS)
    config.task = "recognition"
    with pytest.raises(UserError, match="not config.task 'recognition'"):
        export.image_shape(exp)
    garbage = tmp_path / "garbage.stablehlo"
    garbage.write_bytes(b"not a module")
    with pytest.raises(UserError, match="not a serialized jax.export module"):
        export.load_stablehlo(str(garbage))
    with pytest.raises(UserError, match="Cannot read"):
        export.load_stablehlo(str(tmp_path / "missing.stablehlo"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A digits_cnn smoke workdir holding a checkpoint of its random initial state: (config, workdir).

    Saved as the trainer saves, without training: the export only reads the
    variables. Seed 5, so that they differ from a fresh init of the smoke config.
    """
    config = digits_cnn.get_config("smoke")
    config.seed = 5
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    workdir = str(tmp_path_factory.mktemp("digits_run"))
    trainer = train.Trainer(experiment.Experiment(config))
    iterator = trainer.train_iterator()
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    checkpointer.save(3, trainer.init_state(), iterator, trainer.experiment.meta, force=True)
    checkpointer.close()
    iterator.close()
    return config, workdir


def test_export_script_writes_a_classifier_that_gives_its_logits_for_two_batch_sizes(
    digits_run, tmp_path
):
    config, workdir = digits_run
    out = tmp_path / "sub" / "digits.stablehlo"
    command = [
        sys.executable, os.path.join(REPO, "scripts", "export.py"),
        "--config", os.path.join(REPO, "configs", "digits_cnn.py:smoke"), "--workdir", workdir,
        "--out", str(out), f"--config.data.data_dir={config.data.data_dir}",
        "--compilation_cache_dir=",
    ]
    result = subprocess.run(command, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    exp, variables, _ = experiment.restore(config, workdir)
    predict = jax.jit(functools.partial(classification.predict, model=exp.model, config=config))
    loaded = export.load_stablehlo(str(out))
    for batch in (1, 3):
        images = _images(batch, (8, 8, 1), seed=batch)
        _assert_same(jax.device_get(loaded.call(images)), {"logits": predict(variables, images)})
    sidecar = json.loads((tmp_path / "sub" / "digits.stablehlo.json").read_text())
    assert sidecar["input"] == {"name": "images", "shape": ["b", 8, 8, 1], "dtype": "uint8",
                                "host_preprocessing": "none: the dataset's images as they are"}
    assert sidecar["outputs"] == {"logits": {"shape": ["b", 10], "dtype": "float32"}}
    assert sidecar["class_names"] == list("0123456789")
    assert sidecar["checkpoint_step"] == 3
    assert sidecar["config"].endswith("configs/digits_cnn.py:smoke")
    assert sidecar["platforms"] == ["cpu", "cuda"]
