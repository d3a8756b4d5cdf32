"""The scripts as a user runs them: clean one-line errors, eval, and what happens when
things go wrong (kill -9, SIGTERM, Ctrl-C, a second run, a full or read-only disk)."""

import json
import os
import re
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
    # "\n" only: a progress bar redraws its line with "\r", and the error must
    # not be printed at the end of it.
    error_lines = [l for l in result.stderr.split("\n") if l.startswith("error: ")]
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


def test_help_exits_0():
    result = _run("train.py", "--help")
    assert result.returncode == 0 and "--workdir" in result.stdout, result.stderr


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


# Long enough (300 steps) that a run is still going when its first checkpoint
# lands. Workdirs are relative, as a user would type them.
LONG_OVERRIDES = {"num_train_steps": 300, "checkpoint_every_steps": 20, "eval_every_steps": 100}
LONG = tuple(f"--config.{key}={value}" for key, value in LONG_OVERRIDES.items())


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run of `LONG`, trained in this process (the same 8 CPU devices
    and code as the scripts, so the same numbers): its workdir."""
    from configs import digits_cnn
    from jaxvision import train

    config = digits_cnn.get_config("smoke")
    config.data.data_dir = data_dir
    config.update_from_flattened_dict(LONG_OVERRIDES)
    workdir = tmp_path_factory.mktemp("reference") / "run"
    train.train_and_evaluate(config, str(workdir))
    return workdir


def _assert_same_run(workdir, reference):
    """Final parameters bit for bit, and metrics.jsonl with one row per (step, split)."""
    step_a, params_a = _final_params(reference)
    step_b, params_b = _final_params(workdir)
    assert step_a == step_b == 300
    for a, b in zip(_leaves(params_a), _leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(r["step"], r["split"]) for r in expected]
    assert [r for r in rows if r["split"] == "test"] == [r for r in expected if r["split"] == "test"]


def _start(data_dir, cwd, log):
    """Starts a LONG run in `cwd/run`, its stderr to `log`."""
    command = [sys.executable, os.path.join(REPO, "scripts", "train.py"),
               *_smoke(data_dir, "run", *LONG)]
    with open(log, "w") as f:
        return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=f,
                                env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _wait_for(proc, condition, timeout=240):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the test could interrupt it"
    assert condition(), f"still waiting after {timeout} s"


def _steps(checkpoints):
    return sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit()) if checkpoints.exists() else []


def _stop(proc, signum, log):
    """Sends `signum`; returns the step the run says it saved."""
    os.kill(proc.pid, signum)
    assert proc.wait(timeout=60) == 128 + signum
    stderr = log.read_text()
    assert "Traceback" not in stderr, stderr
    name = signal.Signals(signum).name
    match = re.search(rf"Stopped by {name}: checkpoint step (\d+) is saved", stderr)
    assert match, stderr
    return int(match.group(1))


def test_preempted_interrupted_and_killed_run_resumes_to_identical_parameters(
        data_dir, reference, tmp_path):
    """SIGTERM, Ctrl-C and kill -9 in turn, each followed by the same command."""
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    proc = _start(data_dir, tmp_path, tmp_path / "1.log")
    _wait_for(proc, lambda: (workdir / "run.lock").exists())
    # A second run in the same workdir refuses within seconds, naming the first
    # (which is held still meanwhile, so it cannot finish first).
    os.kill(proc.pid, signal.SIGSTOP)
    second = _run("train.py", *_smoke(data_dir, "run", *LONG), cwd=tmp_path, timeout=60)
    os.kill(proc.pid, signal.SIGCONT)
    _assert_clean_error(second, f"Another run is training in this workdir: pid {proc.pid}")

    # Preemption: the step reached is saved, the lock released, exit 143.
    _wait_for(proc, lambda: 20 in _steps(checkpoints))
    stopped_at = _stop(proc, signal.SIGTERM, tmp_path / "1.log")
    assert 20 < stopped_at < 300 and stopped_at in _steps(checkpoints)
    assert not (workdir / "run.lock").exists()

    # Ctrl-C: the same, exit 130.
    proc = _start(data_dir, tmp_path, tmp_path / "2.log")
    _wait_for(proc, lambda: max(_steps(checkpoints)) > stopped_at)
    stopped_at = _stop(proc, signal.SIGINT, tmp_path / "2.log")
    assert stopped_at in _steps(checkpoints)
    assert "Resumed from checkpoint step" in (tmp_path / "2.log").read_text()

    # kill -9: nothing is saved and the lock stays behind.
    proc = _start(data_dir, tmp_path, tmp_path / "3.log")
    _wait_for(proc, lambda: max(_steps(checkpoints)) > stopped_at)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 300 not in _steps(checkpoints) and (workdir / "run.lock").exists()

    resumed = _run("train.py", *_smoke(data_dir, "run", *LONG), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Took over the lock of an earlier run" in resumed.stderr
    assert "Resumed from checkpoint step" in resumed.stderr
    _assert_same_run(workdir, reference)


def _can_mount_in_a_namespace():
    try:
        return subprocess.run(["unshare", "-Urm", "true"], check=False, capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_mount_in_a_namespace(),
                    reason="needs unshare -Urm (user and mount namespaces) to mount a small tmpfs; "
                           "tests/test_train.py injects the same failure at the Orbax boundary")
@pytest.mark.parametrize("mount,cause,kept", [
    # Room for one checkpoint (about 660 kB) only.
    ("mount -t tmpfs -o size=1m tmpfs {dir}", "No space left on device",
     "checkpoint step 20 and earlier are intact"),
    ("mount --bind {dir} {dir} && mount -o remount,bind,ro {dir}", "Read-only file system",
     "no earlier checkpoint exists"),
])
def test_a_full_or_read_only_checkpoint_folder_fails_at_once(data_dir, tmp_path, mount, cause, kept):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    train = [sys.executable, os.path.join(REPO, "scripts", "train.py"),
             *_smoke(data_dir, str(tmp_path / "run"), "--config.num_train_steps=200")]
    start = time.time()
    result = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", mount.format(dir=checkpoints) + ' && exec "$@"', "sh", *train],
        check=False, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    _assert_clean_error(result, "Saving checkpoint step", f"{checkpoints} failed ({cause})", kept)
    assert time.time() - start < 60
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["split"] == "test"]  # No result without its checkpoint.


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [np.asarray(tree)]
