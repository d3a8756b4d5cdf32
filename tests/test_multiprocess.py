"""Two real processes (gloo collectives on localhost) train like one process, and
stop together when only one of them gets SIGTERM.

The test starts the processes itself and fails, rather than hangs, if one of
them dies or the pair runs past a deadline.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from configs import digits_cnn
from jaxvision import experiment, parallel, train
from jaxvision.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, data_dir, devices, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    command = [
        sys.executable, os.path.join(REPO, "scripts", "train.py"),
        "--config", os.path.join(REPO, "configs", "digits_cnn.py") + ":smoke",
        "--workdir", str(workdir), f"--config.data.data_dir={data_dir}",
        "--config.num_train_steps=20", "--config.checkpoint_every_steps=10",
        # Logging every step keeps a process from running ahead of its steps.
        "--config.eval_every_steps=20", "--config.log_every_steps=1", *extra,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_all(procs, exit_code=0):
    """Waits for every process to exit with `exit_code`; returns their output.

    Kills them all as soon as one fails or time runs out.
    """
    deadline = time.monotonic() + DEADLINE_S
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, exit_code)]
            assert not failed, "a process died:\n" + failed[0].stdout.read()[-3000:]
            assert time.monotonic() < deadline, f"still running after {DEADLINE_S} s"
            time.sleep(0.05)
        outputs = [p.stdout.read() for p in procs]
        for p, output in zip(procs, outputs, strict=True):
            assert p.returncode == exit_code, output[-3000:]
        return outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _restore_final(workdir, data_dir):
    """Restores the last checkpoint into this (8-device, 1-process) test process."""
    config = digits_cnn.get_config("smoke")
    config.data.data_dir = data_dir
    trainer = train.Trainer(experiment.Experiment(config, mesh=parallel.make_mesh()))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        return ckpt.restore(ckpt.latest_step(), trainer.abstract_state())
    finally:
        ckpt.close()


def _rows_logged(workdir) -> int:
    path = workdir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _start_pair(workdir, data_dir, *extra):
    port = _free_port()
    return [
        _start(workdir, data_dir, 2, f"--coordinator_address=127.0.0.1:{port}",
               "--num_processes=2", f"--process_id={i}", *extra)
        for i in range(2)
    ]


def test_two_processes_match_one_process_and_resume_in_one(tmp_path):
    data_dir = str(tmp_path / "tfds")  # Built on first use: process 0 first, then 1.
    pair = _start_pair(tmp_path / "two", data_dir)
    # SIGTERM to process 1 only, at step 10 of 20 (process 0 held still
    # meanwhile, so the pair cannot run on): both stop after the same step,
    # save it and exit 143.
    deadline = time.monotonic() + DEADLINE_S
    while _rows_logged(tmp_path / "two") < 10:
        assert all(p.poll() is None for p in pair) and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(pair[0].pid, signal.SIGSTOP)
    os.kill(pair[1].pid, signal.SIGTERM)
    os.kill(pair[0].pid, signal.SIGCONT)
    outputs = _wait_all(pair, exit_code=128 + signal.SIGTERM)
    stopped = [re.search(r"Stopped by SIGTERM: checkpoint step (\d+)", out) for out in outputs]
    assert all(stopped), outputs[0][-3000:]
    assert stopped[0].group(1) == stopped[1].group(1)
    assert 10 < int(stopped[0].group(1)) < 20
    _wait_all(_start_pair(tmp_path / "two", data_dir))  # Resumes to the end.
    _wait_all([_start(tmp_path / "one", data_dir, 4)])

    two = jax.device_get(_restore_final(tmp_path / "two", data_dir))  # 2 processes -> 1.
    one = jax.device_get(_restore_final(tmp_path / "one", data_dir))
    assert int(two.step) == int(one.step) == 20
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 two.params, one.params)

    # Only process 0 logged, one row per (step, split).
    logged = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in logged] == [(r["step"], r["split"]) for r in expected]
    assert logged[-1]["accuracy"] == expected[-1]["accuracy"]

    # The two-process run resumes in one process (4 devices), data position
    # included, exactly like the one-process run resumes.
    _wait_all([_start(tmp_path / name, data_dir, 4, "--config.num_train_steps=30")
               for name in ("two", "one")])
    two = jax.device_get(_restore_final(tmp_path / "two", data_dir))
    one = jax.device_get(_restore_final(tmp_path / "one", data_dir))
    assert int(two.step) == int(one.step) == 30
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 two.params, one.params)
