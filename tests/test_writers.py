"""What a run writes besides checkpoints: the workdir lock and metrics.jsonl on resume."""

import json
import logging
import os
import platform
import subprocess
import sys
import time

import pytest

from jaxvision import writers
from jaxvision.errors import UserError


def _write_lock(workdir, **fields):
    holder = {"host": platform.node(), "pid": os.getpid(), "started": time.time(),
              "started_utc": "2026-12-02T05:00:00+00:00", "command": "train.py", **fields}
    (workdir / "run.lock").write_text(json.dumps(holder))


def test_lock_is_held_while_running_and_released(tmp_path):
    with writers.WorkdirLock(str(tmp_path)):
        holder = json.loads((tmp_path / "run.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == platform.node()
    assert not (tmp_path / "run.lock").exists()


def test_lock_of_a_live_process_refuses(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, pid=other.pid)
        with (pytest.raises(UserError, match=f"Another run is training in this workdir: pid "
                                              f"{other.pid} on host {platform.node()}"),
              writers.WorkdirLock(str(tmp_path))):
            pass
    finally:
        other.kill()
        other.wait()
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == other.pid  # Not ours.


def test_lock_of_another_host_refuses_until_its_heartbeat_stops(tmp_path, caplog):
    _write_lock(tmp_path, host="some-other-node", pid=1)
    with (pytest.raises(UserError, match="on host some-other-node.*delete the lock file"),
          writers.WorkdirLock(str(tmp_path))):
        pass
    untouched = time.time() - writers.WorkdirLock.STALE_S - 10
    os.utime(tmp_path / "run.lock", (untouched, untouched))
    with caplog.at_level(logging.WARNING), writers.WorkdirLock(str(tmp_path)):
        pass
    assert "pid 1 on host some-other-node" in caplog.text


def test_lock_holder_touches_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(writers.WorkdirLock, "HEARTBEAT_S", 0.05)
    with writers.WorkdirLock(str(tmp_path)):
        old = time.time() - 1000
        os.utime(tmp_path / "run.lock", (old, old))
        time.sleep(0.3)
        assert os.path.getmtime(tmp_path / "run.lock") > old + 900


@pytest.mark.parametrize("case", ["dead", "reused_pid", "own_pid"])
def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, case):
    if case == "dead":  # Killed with SIGKILL: it could not remove its lock.
        finished = subprocess.Popen([sys.executable, "-c", "pass"])
        finished.wait()
        _write_lock(tmp_path, pid=finished.pid)
    elif case == "reused_pid":  # A live process that started after the lock was written.
        _write_lock(tmp_path, pid=os.getppid(), started=time.time() - 10**7)
    else:  # A restarted container's process can get its predecessor's pid.
        _write_lock(tmp_path, pid=os.getpid())
    with caplog.at_level(logging.WARNING), writers.WorkdirLock(str(tmp_path)):
        assert json.loads((tmp_path / "run.lock").read_text())["started"] > time.time() - 60
    assert "Took over the lock of an earlier run" in caplog.text
    assert not (tmp_path / "run.lock").exists()


def test_metric_writer_drops_rows_after_the_start_step(tmp_path):
    rows = [{"step": s, "split": split, "loss": 1.0} for s in (10, 20, 30) for split in ("train", "test")]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "spl'  # Cut by a kill.
    (tmp_path / "metrics.jsonl").write_text(text)
    writer = writers.MetricWriter(str(tmp_path), start_step=20)
    assert writer.has(20, "test") and not writer.has(30, "train")
    writer.write(30, "train", {"loss": 0.5})
    writer.close()
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert written == rows[:4] + [{"step": 30, "split": "train", "loss": 0.5}]
