"""What a run writes into its workdir besides checkpoints.

- `config.json`: the resolved config.
- `run.json`: package versions, devices, git commit and command line.
- `metrics.jsonl`: one JSON object per logged event (`step`, `split`, metrics).
- TensorBoard event files (tensorboardX: no TensorFlow needed).

Only process 0 writes; the other processes get a writer that does nothing.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from absl import logging

_PACKAGES = (
    "jaxvision", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex",
    "grain", "tensorflow-datasets", "ml-collections", "numpy",
)


class MetricWriter:
    """Appends metrics to `metrics.jsonl` and TensorBoard, and logs them."""

    def __init__(self, workdir: str):
        self._enabled = jax.process_index() == 0
        if not self._enabled:
            return
        from tensorboardX import (
            SummaryWriter,  # Imported lazily: only process 0 writes.
        )

        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115 - open for the run.
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: Mapping[str, float]):
        """Records one event: `{"step": step, "split": split, **metrics}`."""
        if not self._enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tb.add_scalar(f"{split}/{name}", value, step)
        self._tb.flush()
        text = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        logging.info("step %d %s: %s", step, split, text)

    def close(self):
        if self._enabled:
            self._jsonl.close()
            self._tb.close()


def _git_commit() -> str | None:
    """The commit of the jaxvision source tree, with '-dirty' if it has local changes."""
    src = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_run_files(workdir: str, config: ml_collections.ConfigDict):
    """Writes `config.json` and `run.json` (process 0 only)."""
    if jax.process_index() != 0:
        return
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    devices = jax.devices()
    run = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
        "command": [sys.executable, *sys.argv],
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "host": platform.node(),
    }
    with open(os.path.join(workdir, "run.json"), "w") as f:
        json.dump(run, f, indent=2)
        f.write("\n")
