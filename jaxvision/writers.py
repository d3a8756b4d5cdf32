"""What a run writes into its workdir besides checkpoints.

- `run.lock`: held while a training run is going (`WorkdirLock`): one run per workdir.
- `config.json`: the resolved config.
- `run.json`: package versions, devices, git commit and command line.
- `metrics.jsonl`: one JSON object per logged event (`step`, `split`, metrics),
  one per (step, split): rows written after the checkpoint a run resumes
  from are dropped, as the resumed run writes them again.
- TensorBoard event files (tensorboardX: no TensorFlow needed), purged alike.

Only process 0 writes; the other processes get a writer that does nothing.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Self

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxvision import parallel
from jaxvision.errors import UserError


def prepare_workdir(workdir: str):
    """Creates the workdir, or raises UserError if it cannot be written."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{os.getpid()}")  # One per process.
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"Cannot write to workdir {workdir!r} ({e.strerror or e}); choose a "
            "writable --workdir."
        ) from e


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from Linux's /proc; else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # Field 22: start time.
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _is_running(pid: int, since: float) -> bool:
    """Whether `pid` is a live process on this host that started no later than `since`."""
    if pid == os.getpid():
        return False  # A restarted container can reuse its predecessor's pid.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # Alive, owned by someone else.
    started = _process_start_time(pid)
    return started is None or started <= since + 1  # Later: the pid was reused.


class WorkdirLock:
    """`<workdir>/run.lock`, held by one training run at a time (process 0 takes it).

    The file holds the holder's host, pid, start time and command, and the
    holder touches it every `HEARTBEAT_S` seconds. A lock left by a process that
    no longer runs on this host (killed with SIGKILL), or one from another host
    untouched for `STALE_S` seconds (a job requeued onto another node after its
    node died), is taken over with a warning; otherwise the second run refuses
    with a `UserError`.
    """

    HEARTBEAT_S = 30
    STALE_S = 300  # Ten missed heartbeats: generous to clock skew between hosts.

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "run.lock")
        self._held = False
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        error = self._acquire() if jax.process_index() == 0 else None
        if not parallel.from_process_0(error is None):
            raise UserError(error or f"Process 0 could not lock {self.path}; see its error.")
        if self._held:
            threading.Thread(target=self._heartbeat, daemon=True, name="run.lock").start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._held and self._read() == self._content:
            os.remove(self.path)
        self._held = False

    def _heartbeat(self):
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # Gone or unwritable: the next run decides from what is there.

    def _is_stale(self, holder: dict) -> bool:
        if holder.get("host") == platform.node():
            return not _is_running(holder.get("pid", -1), holder.get("started", 0))
        try:
            return time.time() - os.path.getmtime(self.path) > self.STALE_S
        except OSError:
            return False

    def _acquire(self) -> str | None:
        """Creates the lock file; returns why it cannot be taken, or None when taken."""
        self._content = {
            "host": platform.node(), "pid": os.getpid(), "started": time.time(),
            "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        # Written in full to a file of our own, then linked into place: `link` fails
        # when the lock exists, and a lock that exists is never half written (a
        # holder stopped right after creating it would otherwise leave it empty).
        own = f"{self.path}.{platform.node()}.{os.getpid()}"
        with open(own, "w") as f:
            json.dump(self._content, f)
        try:
            return self._link(own)
        finally:
            os.remove(own)

    def _link(self, own: str) -> str | None:
        """Links `own` (the full lock content) to the lock path; `_acquire`'s result."""
        for _ in range(3):
            try:
                _create_exclusive(own, self.path)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    return (f"The lock file {self.path} cannot be read; if no other run is "
                            "training in this workdir, delete it and rerun.")
                if not self._is_stale(holder):
                    return (
                        f"Another run is training in this workdir: pid {holder.get('pid')} on "
                        f"host {holder.get('host')}, started {holder.get('started_utc')} "
                        f"({self.path}); wait for it to finish or stop it, or use another "
                        "--workdir (if that run is gone, delete the lock file and rerun)."
                    )
                try:  # Stale: move it away (one of two racing runs wins), then retry.
                    os.rename(self.path, f"{self.path}.stale.{os.getpid()}")
                    os.remove(f"{self.path}.stale.{os.getpid()}")
                except FileNotFoundError:
                    continue
                logging.warning(
                    "Took over the lock of an earlier run in this workdir (pid %s on host %s, "
                    "started %s), which is no longer running.", holder.get("pid"),
                    holder.get("host"), holder.get("started_utc"))
                continue
            self._held = True
            return None
        return f"Could not take the lock {self.path}: other runs keep taking it; use another --workdir."

    def _read(self) -> dict | None:
        """The lock file's content; None if it is missing or unreadable (after a short wait)."""
        for _ in range(10):  # A lock written by an older version may still be being written.
            try:
                with open(self.path) as f:
                    return json.load(f)
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                time.sleep(0.1)
        return None

def _create_exclusive(source: str, path: str) -> None:
    """Creates `path` with the content of file `source`, failing (FileExistsError) if it exists.

    A hard link does both at once; on file systems without hard links the
    file is created exclusively and then written.
    """
    try:
        os.link(source, path)
    except FileExistsError:
        raise
    except OSError:  # No hard links here (some network and FUSE file systems).
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with open(source) as src, os.fdopen(fd, "w") as dst:
            dst.write(src.read())


_PACKAGES = (
    "jaxvision", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex",
    "grain", "tensorflow-datasets", "ml-collections", "numpy",
)


class MetricWriter:
    """Appends metrics to `metrics.jsonl` and TensorBoard, and logs them.

    `start_step` is the step the run starts from (0, or the restored checkpoint's):
    rows of later steps, left by a run stopped after that checkpoint, are
    dropped from `metrics.jsonl` and TensorBoard (which hides earlier events at
    or past its `purge_step`).
    """

    def __init__(self, workdir: str, start_step: int = 0):
        self._enabled = jax.process_index() == 0
        self._rows: dict[tuple[int, str], dict] = {}
        if not self._enabled:
            return
        from tensorboardX import (
            SummaryWriter,  # Imported lazily: only process 0 writes.
        )

        path = os.path.join(workdir, "metrics.jsonl")
        self._keep_rows_until(path, start_step)
        self._jsonl = open(path, "a")  # noqa: SIM115 - open for the run.
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

    def _keep_rows_until(self, path: str, step: int):
        """Drops the rows of `path` after `step` (and a line cut short by a kill)."""
        if not os.path.exists(path):
            return
        with open(path) as f:
            lines = f.read().splitlines()
        kept = []
        for line in lines:
            row = _parse_row(line)
            if row is not None and row["step"] <= step:
                kept.append(line)
                self._rows[row["step"], row.get("split")] = row
        if len(kept) == len(lines):
            return
        with open(path + ".tmp", "w") as f:
            f.write("".join(line + "\n" for line in kept))
        os.replace(path + ".tmp", path)
        logging.info("Dropped %d rows of %s written after step %d, which this run writes again.",
                     len(lines) - len(kept), path, step)

    def has(self, step: int, split: str) -> bool:
        """Whether a row of (`step`, `split`) is recorded, on every process (process 0 knows)."""
        return bool(parallel.from_process_0((step, split) in self._rows))

    def get(self, step: int, split: str) -> dict | None:
        """The recorded row of (`step`, `split`) (process 0; None elsewhere)."""
        return self._rows.get((step, split))

    def write(self, step: int, split: str, metrics: Mapping[str, float]):
        """Records one event: `{"step": step, "split": split, **metrics}`."""
        if not self._enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in metrics.items()}
        row = {"step": step, "split": split, **values}
        self._rows[step, split] = row
        self._jsonl.write(json.dumps(row) + "\n")
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


def _parse_row(line: str) -> dict | None:
    """One line of metrics.jsonl as its row; None for a line cut short by a kill (or not a row)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def read_metrics(workdir: str) -> list[dict]:
    """The rows of `workdir/metrics.jsonl` in order ([] without one), skipping broken lines."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [row for row in map(_parse_row, f) if row is not None]


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
