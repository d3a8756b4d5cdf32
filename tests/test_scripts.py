"""The scripts as a user runs them: clean one-line errors, eval, and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args, cwd=REPO, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _smoke(data_dir, workdir, *extra):
    config = os.path.join(REPO, "configs", "digits_cnn.py")
    return ["--config", f"{config}:smoke", "--workdir", str(workdir),
            f"--config.data.data_dir={data_dir}", *extra]


def _assert_clean_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0]


@pytest.mark.parametrize("extra,fragments", [
    (["--config.nope=1"], ["Config key 'nope' does not exist"]),
    (["--config.optimizer.learning_rat=0.1"], ["Config key 'learning_rat' does not exist"]),
    (["--config.batch_size=abc"], ["config.batch_size"]),
    (["--config.model.name=resnet9"], ["Unknown model 'resnet9'", "resnet18"]),
    (["--config.data.name=no_such_dataset"], ["Unknown dataset 'no_such_dataset'", "digits"]),
    (["--config.batch_size=12"], ["config.batch_size=12", "multiple of"]),
    (["stray"], ["Unexpected arguments"]),
])
def test_train_bad_input_gives_one_clear_line(data_dir, tmp_path, extra, fragments):
    _assert_clean_error(_run("train.py", *_smoke(data_dir, tmp_path / "run", *extra)), *fragments)


def test_missing_config_file_gives_one_clear_line(tmp_path):
    result = _run("train.py", "--config", "configs/nope.py", "--workdir", str(tmp_path))
    _assert_clean_error(result, "Config file 'configs/nope.py' does not exist")


def test_unprepared_catalog_dataset_says_how_to_prepare(tmp_path):
    result = _run("train.py", "--config", "configs/mnist_cnn.py", "--workdir",
                  str(tmp_path / "run"), f"--config.data.data_dir={tmp_path}")
    _assert_clean_error(result, "'mnist' is not prepared", "tfds build mnist")


def test_eval_without_checkpoint_gives_one_clear_line(data_dir, tmp_path):
    _assert_clean_error(_run("eval.py", *_smoke(data_dir, tmp_path)), "train first")


def _final_params(workdir):
    checkpoints = os.path.join(workdir, "checkpoints")
    with ocp.CheckpointManager(checkpoints) as manager:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored.state["params"]


def test_kill_9_then_same_command_resumes_to_identical_parameters(data_dir, tmp_path):
    # Long enough (300 steps) that the run is still going when the first
    # checkpoint lands. Workdirs are relative, as a user would type them.
    args = ("--config.num_train_steps=300", "--config.checkpoint_every_steps=20",
            "--config.eval_every_steps=300")
    reference = _run("train.py", *_smoke(data_dir, "reference", *args), cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    command = [sys.executable, os.path.join(REPO, "scripts", "train.py"),
               *_smoke(data_dir, "killed", *args)]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while not (checkpoints / "20").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (checkpoints / "300").exists()

    resumed = _run("train.py", *_smoke(data_dir, "killed", *args), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from checkpoint step" in resumed.stderr
    step_a, params_a = _final_params(tmp_path / "reference")
    step_b, params_b = _final_params(tmp_path / "killed")
    assert step_a == step_b == 300
    for a, b in zip(_leaves(params_a), _leaves(params_b)):
        np.testing.assert_array_equal(a, b)  # Bit for bit.

    result = _run("eval.py", *_smoke(data_dir, "killed", *args), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["split"] == "test" and metrics["step"] == 300
    assert metrics["accuracy"] > 0.8


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [np.asarray(tree)]
