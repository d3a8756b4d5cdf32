"""The benchmark suite (`scripts/benchmark.py --suite`), its table, and the GPU suite command.

The torchvision peers themselves are tested in tests/test_peers.py (with
torch installed); here `peers=False`, or a machine without a GPU, so these
tests run everywhere. Speed is never asserted.
"""

import json
import os
import subprocess
import sys

import pytest

from jaxvision import benchmark_suite
from jaxvision.benchmark_suite import Entry
from jaxvision.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `text`, as {header: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    return [dict(zip(header, (c.strip() for c in line.split("|")[1:-1]), strict=False))
            for line in lines[2:]]


def _row(name, ours, eager=None, compiled=None):
    entry = Entry(name, "configs/x.py", "classification", "train", 32, 64, "float32", 5, 1)
    row = {"entry": entry.__dict__, "jaxvision": ours}
    row.update({k: v for k, v in (("eager", eager), ("compiled", compiled)) if v is not None})
    return row


def test_both_frameworks_get_the_same_model_flags():
    entry = benchmark_suite.SUITES["cpu"][3]  # FCOS on a ResNet-18.
    runs = benchmark_suite.commands(entry, "cpu", peers=True)
    assert set(runs) == {"jaxvision", "eager", "compiled"}
    shared = ["--batch_size=16", "--dtype=float32", "--steps=5", "--warmup=2",
              "--config.model.backbone=resnet18", "--image_size=128"]
    for argv in runs.values():
        assert all(flag in argv for flag in shared), argv
    assert runs["jaxvision"][0].endswith(os.path.join("scripts", "benchmark.py"))
    assert runs["eager"][0].endswith(os.path.join("benchmarks", "torchvision_detection.py"))
    assert "--compile" in runs["compiled"] and "--compile" not in runs["eager"]
    assert "--device=cpu" in runs["eager"] and "--device=cpu" in runs["jaxvision"]


def test_gpu_suite_runs_peers_on_cuda_and_skips_slow_compiles():
    gpu = benchmark_suite.SUITES["gpu"]
    resnet_train, fcos_train = gpu[0], gpu[2]
    assert (resnet_train.batch_size, resnet_train.image_size, resnet_train.dtype) == (
        256, 224, "bfloat16")
    assert (fcos_train.batch_size, fcos_train.image_size) == (16, 1024)
    runs = benchmark_suite.commands(resnet_train, "gpu", peers=True)
    assert "--device=cuda" in runs["eager"] and "--device=gpu" in runs["jaxvision"]
    assert "compiled" not in benchmark_suite.commands(fcos_train, "gpu", peers=True)
    assert set(benchmark_suite.commands(resnet_train, "gpu", peers=False)) == {"jaxvision"}


def test_table_ratio_is_ours_over_the_best_torchvision_figure():
    ours = {"images_per_s": 30.0, "image_size": 64, "mfu": 0.25, "compile_s": 12.4,
            "memory_per_device": {"peak": 2 * 2**30}}
    eager = {"images_per_s": 20.0, "peak_memory_bytes": 2**30}
    compiled = {"images_per_s": 40.0, "compile_s": 61.0}
    results = {"suite": "cpu", "date": "2026-12-02", "peers": True, "rows": [
        _row("a", ours, eager, compiled),
        _row("b", {"error": "no GPU"}),
        _row("c", {"images_per_s": 10.0}, {"images_per_s": 5.0}, {"error": "timeout after 9 s"}),
    ]}
    lines = benchmark_suite.format_table(results).splitlines()
    assert len(lines) == 5 and lines[0].count("|") == 13
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert cells == ["a", "train", "32", "64", "float32", "30.0", "20.0", "40.0", "0.75x",
                     "0.25", "12 / 61", "2.00 GiB / 1.00 GiB"]
    assert "failed: no GPU" in lines[3] and "not run" in lines[3]
    cells = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert cells[7] == "failed: timeout after 9 s" and cells[8] == "2.00x"  # 10 / 5 (eager).


def test_unknown_suite_and_missing_peers_are_one_clear_error(monkeypatch):
    with pytest.raises(UserError, match="Unknown suite 'tpu'"):
        benchmark_suite.run_suite("tpu")
    monkeypatch.setattr(benchmark_suite, "peers_installed", lambda: False)
    with pytest.raises(UserError, match=r'pip install -e "\.\[peers\]"'):
        benchmark_suite.run_suite("cpu", peers=True)


def test_run_suite_measures_each_row_in_its_own_process(data_dir, tmp_path):
    entry = Entry("digits smoke", "configs/digits_cnn.py:smoke", "classification", "train",
                  8, None, "float32", steps=2, warmup=1,
                  overrides=(f"--config.data.data_dir={data_dir}",))
    missing = Entry("no such config", "configs/no_such.py", "classification", "eval",
                    8, None, "float32", steps=1, warmup=0)
    path = tmp_path / "suite.json"
    results = benchmark_suite.run_suite(
        "cpu", peers=False, entries=(entry, missing), json_path=str(path))
    assert json.loads(path.read_text()) == json.loads(json.dumps(results))  # Written as rows end.
    first, second = results["rows"]
    assert first["jaxvision"]["images_per_s"] > 0 and first["jaxvision"]["batch_size"] == 8
    assert "no_such.py" in second["jaxvision"]["error"]  # The script's one-line error.
    table = benchmark_suite.format_table(results)
    assert "| digits smoke | train | 8 | 8 | float32 |" in table
    assert "suite `cpu`" in benchmark_suite.describe(results)


def test_script_needs_a_config_or_a_suite():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "benchmark.py")], cwd=REPO,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: Pass --config FILE (one config) or --suite cpu|gpu (the standard set).")


def test_gpu_suite_command_without_a_gpu_still_compares_training(data_dir, tmp_path):
    """Without a GPU the suite is skipped with a reason, and the CPU training still runs."""
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), JAX_PLATFORMS="",
               TRAIN_CONFIG="configs/digits_cnn.py:smoke", TFDS_DATA_DIR=data_dir)
    result = subprocess.run(
        ["bash", os.path.join(REPO, "benchmarks", "gpu_suite.sh")], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert sorted(os.listdir(out)) == ["log.txt", "suite.md", "train_cpu_vs_gpu.md"]
    assert "JAX sees no GPU here" in (out / "suite.md").read_text()
    cuda, cpu = _markdown_rows((out / "train_cpu_vs_gpu.md").read_text())
    assert cuda["platform"] == "cuda" and cuda["wall s"].startswith("failed:")
    assert cpu["platform"] == "cpu" and float(cpu["wall s"]) > 0 and cpu["step"] == "60"
    assert float(cpu["accuracy"]) > 0.5  # digits smoke's test accuracy after 60 steps.
