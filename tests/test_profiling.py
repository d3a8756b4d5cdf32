"""FLOP counts against hand-computed values, MFU arithmetic, peak lookup, the benchmark."""

import json
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from configs import digit_detection_fcos, digits_cnn
from jaxvision import benchmark, experiment, models, profiling, train
from tests import flops_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compiled(module, x):
    variables = module.init(jax.random.PRNGKey(0), x)
    return jax.jit(module.apply).lower(variables, x).compile()


@pytest.mark.parametrize("padding,strides,use_bias,size", [
    ("SAME", (1, 1), False, 8),
    ("SAME", (1, 1), True, 8),
    ("SAME", (2, 2), False, 16),  # XLA pads only at the end: 23 of 24 taps per axis.
    ("VALID", (1, 1), False, 8),
])
def test_xla_conv_flops_equal_hand_formula(padding, strides, use_bias, size):
    x = jnp.ones((2, size, size, 16))  # [B, H, W, Cin]
    conv = nn.Conv(32, (3, 3), strides=strides, padding=padding, use_bias=use_bias)
    expected = flops_reference.conv_flops(
        2, (size, size), 16, 32, (3, 3), strides, padding, use_bias=use_bias)
    assert profiling.compiled_flops(_compiled(conv, x)) == expected


def test_conv_flops_reference_hand_values():
    # 3x3 SAME on 8x8: 22 of the 24 (position, tap) pairs per axis read the image.
    assert flops_reference.conv_flops(2, (8, 8), 16, 32, (3, 3)) == 2 * 2 * 22 * 22 * 16 * 32
    textbook = flops_reference.conv_flops(2, (8, 8), 16, 32, (3, 3), count_padding=True)
    assert textbook == 2 * 2 * 8 * 8 * 9 * 16 * 32


@pytest.mark.parametrize("use_bias", [False, True])
def test_xla_dense_flops_equal_hand_formula(use_bias):
    x = jnp.ones((4, 128))  # [B, in]
    flops = profiling.compiled_flops(_compiled(nn.Dense(64, use_bias=use_bias), x))
    assert flops == flops_reference.dense_flops(4, 128, 64, use_bias)
    assert flops_reference.dense_flops(4, 128, 64) == 2 * 4 * 128 * 64


def test_cost_and_memory_analysis_are_per_device():
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    assert mesh.size == 8
    x, w = jnp.ones((64, 128)), jnp.ones((128, 256))  # [B, in], [in, out]
    one = jax.jit(jnp.matmul).lower(x, w).compile()
    split = jax.jit(
        jnp.matmul, in_shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))
    ).lower(x, w).compile()
    assert profiling.compiled_flops(one) == 2 * 64 * 128 * 256
    assert profiling.compiled_flops(split) == 2 * 64 * 128 * 256 / 8
    memory = profiling.compiled_memory_bytes(split)
    assert memory["argument"] == (64 // 8 * 128 + 128 * 256) * 4  # This device's rows, all of w.
    assert memory["output"] == 64 // 8 * 256 * 4
    assert memory["peak"] == memory["argument"] + memory["output"] + memory["temp"] - memory["alias"]


def test_matmul_flops_of_cnn_forward_is_the_sum_of_its_layers():
    model = models.get_model("cnn", num_classes=10, features=(32, 64), hidden=128)
    x = jnp.zeros((3, 8, 8, 1))  # [B, H, W, C]
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    flops = profiling.matmul_flops(lambda v, x: model.apply(v, x, train=False), variables, x)
    conv, dense = flops_reference.conv_flops, flops_reference.dense_flops
    expected = (conv(3, (8, 8), 1, 32, (3, 3), count_padding=True)  # 8x8, pool to 4x4
                + conv(3, (4, 4), 32, 64, (3, 3), count_padding=True)  # 4x4, pool to 2x2
                + dense(3, 2 * 2 * 64, 128)
                + dense(3, 128, 10))
    assert flops == expected


def test_mfu_hand_case():
    # 1e12 FLOPs in 0.5 s is 2 TFLOP/s: all of two devices of 1 TFLOP/s each.
    assert profiling.mfu(1e12, 0.5, 1.0, 2) == pytest.approx(1.0)
    assert profiling.mfu(1e12, 1.0, 1.0, 4) == pytest.approx(0.25)


@pytest.mark.parametrize("kind,dtype,expected", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.0),
    ("NVIDIA H100 80GB HBM3", "float16", 989.0),
    ("NVIDIA H100 80GB HBM3", "float32", 495.0),  # TF32 tensor cores, JAX's default.
    ("NVIDIA H100 PCIe", "bfloat16", 756.0),
    ("NVIDIA H200", "bfloat16", 989.0),
    ("NVIDIA A100-SXM4-80GB", "bfloat16", 312.0),
    ("NVIDIA A100-SXM4-80GB", "float32", 156.0),
    ("NVIDIA A100 80GB PCIe", "float16", 312.0),
])
def test_peak_table_lookup_by_device_kind(kind, dtype, expected):
    peak, source = profiling.lookup_peak_tflops(kind, dtype)
    assert peak == expected
    assert "datasheet" in source


def test_full_fp32_precision_uses_the_fp32_peak():
    with jax.default_matmul_precision("highest"):
        assert profiling.lookup_peak_tflops("NVIDIA H100 80GB HBM3", "float32")[0] == 67.0


def test_unknown_device_gives_none_and_a_reason():
    gpu = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA B200")
    peak, reason = profiling.peak_tflops(gpu, "bfloat16")
    assert peak is None and "unknown device kind 'NVIDIA B200'" in reason
    assert profiling.lookup_peak_tflops("NVIDIA H100 80GB HBM3", "int8")[0] is None
    tpu = types.SimpleNamespace(platform="tpu", device_kind="TPU v5 lite")
    assert profiling.peak_tflops(tpu, "bfloat16")[0] is None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_run_benchmark_reports_sane_numbers(data_dir):
    config = digits_cnn.get_config("smoke")
    config.data.data_dir = data_dir
    result = benchmark.run_benchmark(config, mode="train", steps=2, warmup=1, reference=True)
    assert result["num_devices"] == 8 and result["batch_size"] == 32
    assert result["image_size"] == 8 and result["dtype"] == "float32"
    assert result["param_count"] == 53_002
    assert 0 < result["lower_s"] < result["compile_s"] and result["reference_compile_s"] > 0
    assert 0 < result["step_time_min_s"] <= result["step_time_median_s"] <= result["step_time_max_s"]
    assert result["images_per_s"] == pytest.approx(32 / result["step_time_median_s"])
    # XLA's count (no padding taps, no input gradient) is below 3x the textbook forward.
    assert 0.5 < result["flops_per_step"] / result["analytic_flops_per_step"] <= 1
    assert result["achieved_tflops"] > 0 and result["peak_tflops_per_device"] > 0
    assert 0 < result["mfu"] < 2
    assert result["memory_per_device"]["peak"] > 0
    assert result["overhead_ratio"] == pytest.approx(
        result["images_per_s"] / result["reference_images_per_s"])
    json.dumps(result)  # JSON-able.

    result = benchmark.run_benchmark(config, mode="eval", steps=1, warmup=0)
    assert result["batch_size"] == config.eval_batch_size and result["flops_per_step"] > 0


def test_run_benchmark_times_a_detector_against_its_bare_step(digit_detection_dir):
    config = digit_detection_fcos.get_config("smoke")
    config.data.data_dir = digit_detection_dir
    trainer = train.Trainer(experiment.Experiment(config))
    synthetic = benchmark.synthetic_batch(trainer.experiment, 8)
    iterator = trainer.train_iterator()
    real = next(iterator)
    iterator.close()
    # The same keys, shapes and dtypes as the real loader's batches (plus "mask").
    for key, value in real.items():
        assert synthetic[key].shape == value.shape and synthetic[key].dtype == value.dtype, key
    assert synthetic["box_mask"].sum(axis=1).tolist() == [4] * 8  # max_boxes // 2 each.

    result = benchmark.run_benchmark(config, mode="train", steps=1, warmup=0, reference=True)
    assert result["task"] == "detection" and result["image_size"] == 64
    assert result["flops_per_step"] > 0 and result["reference_images_per_s"] > 0
    assert result["overhead_ratio"] == pytest.approx(
        result["images_per_s"] / result["reference_images_per_s"])


def _script(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), *args],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
        text=True, timeout=300, check=False,
    )


def test_script_writes_json(data_dir, tmp_path):
    path = tmp_path / "bench.json"
    result = _script("--config", "configs/digits_cnn.py:smoke", "--steps", "3", "--warmup", "1",
                     f"--config.data.data_dir={data_dir}", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert "images_per_s" in result.stdout  # The table.
    report = json.loads(path.read_text())
    assert report["mode"] == "train" and report["steps"] == 3 and report["images_per_s"] > 0


def test_script_without_gpu_gives_one_clear_line():
    result = _script("--config", "configs/digits_cnn.py:smoke", "--device", "gpu")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: --device=gpu but JAX finds no GPU")
    assert "Traceback" not in result.stderr
