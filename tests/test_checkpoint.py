"""The checkpointer: array checksums, falling back past broken steps, failed saves."""

import errno
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections  # noqa: F401 - imported before orbax, as the scripts do.
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision import checkpoint, parallel
from jaxvision.checkpoint import Checkpointer, CorruptCheckpoint
from jaxvision.errors import UserError

META = {"model": {"name": "tiny"}}


def _numpy_fingerprint(x: np.ndarray) -> int:
    """The checksum written out in NumPy: sum of bits * (index * 0x9E3779B1 | 1), mod 2^32."""
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    bits = x.reshape(-1).view(unsigned).astype(np.uint64)
    weights = (np.arange(x.size, dtype=np.uint64) * 0x9E3779B1 % 2**32) | 1
    return int(np.sum(bits * weights % 2**32) % 2**32)


def test_fingerprint_matches_numpy_reference():
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.normal(size=(3, 5, 7)).astype(np.float32),
        "bf16": rng.normal(size=(4, 9)).astype(jnp.bfloat16),
        "i32": rng.integers(-2**31, 2**31 - 1, (6, 4), dtype=np.int32),
        "u8": rng.integers(0, 256, (11,), dtype=np.uint8),
        "scalar": np.array(12345, np.int32),
    }
    got = checkpoint.fingerprints(jax.tree.map(jnp.asarray, arrays))
    assert got == {name: _numpy_fingerprint(np.asarray(x)) for name, x in arrays.items()}


def test_fingerprint_is_the_same_sharded_and_changes_with_every_bit():
    x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    mesh = parallel.make_mesh(data=4, fsdp=2)
    sharded = jax.device_put(x, NamedSharding(mesh, P("data", "fsdp")))
    plain = checkpoint.fingerprints({"x": jnp.asarray(x)})["x"]
    assert checkpoint.fingerprints({"x": sharded})["x"] == plain
    bits = x.view(np.uint32)
    for index in [(0, 0), (7, 3), (15, 5)]:
        for bit in range(32):
            flipped = bits.copy()
            flipped[index] ^= np.uint32(1 << bit)
            assert checkpoint.fingerprints({"x": jnp.asarray(flipped.view(np.float32))})["x"] != plain
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert checkpoint.fingerprints({"x": jnp.asarray(swapped)})["x"] != plain


def test_describe_error_finds_the_os_cause_and_cuts_at_a_word():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as inner:
            raise Exception("Encountered error while writing") from inner  # noqa: TRY002 - as Orbax.
    except Exception as e:  # noqa: BLE001
        assert checkpoint.describe_error(e) == "No space left on device"
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "x": Failed to write 12 bytes '
                             "to file 13: No space left on device [os_error_code='28']")
    assert checkpoint.describe_error(tensorstore) == "No space left on device"
    long = ValueError("word " * 100)
    text = checkpoint.describe_error(long, limit=50)
    assert len(text) <= 50 and text.endswith(" ...") and "wor " not in text


class _Position:
    """A stand-in for the train iterator: its state is a small JSON dict."""

    def __init__(self, next_batch=0):
        self.state = {"next_batch": next_batch}

    def get_state(self):
        return self.state

    def set_state(self, state):
        self.state = state


def _state(step):
    # Random values: incompressible, so the checkpoint stores their bytes as they are.
    w = np.random.default_rng(step).normal(size=4096).astype(np.float32)
    return {"step": jnp.asarray(step, jnp.int32), "params": {"w": jnp.asarray(w)}}


def _abstract():
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        _state(0))


@pytest.fixture
def three_steps(tmp_path):
    """A checkpoint folder with steps 1, 2 and 3 (each `_state(step)`, position `step`)."""
    ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=5)
    for step in (1, 2, 3):
        ckpt.save(step, _state(step), _Position(step), META)
    ckpt.close()
    return tmp_path / "ckpt"


def _flip_a_bit_of_w(step_dir, step):
    """Replaces step `step`'s arrays by a copy with one bit of `params/w` flipped.

    The arrays are compressed on disk, so the flip is made before writing: the
    `state` folder of a save of the flipped state replaces the original one,
    whose checksums (in `meta`) stay. Orbax reads it without complaint.
    """
    state = _state(step)
    w = np.array(state["params"]["w"])
    w.view(np.uint32)[1000] ^= np.uint32(1 << 2)
    state["params"]["w"] = jnp.asarray(w)
    tampered = step_dir.parent.parent / "tampered"
    ckpt = Checkpointer(str(tampered))
    ckpt.save(step, state, _Position(step), META)
    ckpt.close()
    shutil.rmtree(step_dir / "state")
    shutil.copytree(tampered / str(step) / "state", step_dir / "state")
    shutil.rmtree(tampered)


def _truncate_arrays(step_dir):
    for root, _, files in os.walk(step_dir / "state"):
        if os.path.basename(root) == "d":
            for name in files:
                path = os.path.join(root, name)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)


def _restore_latest(directory, **kwargs):
    ckpt = Checkpointer(str(directory))
    position = _Position()
    try:
        step, state = ckpt.restore_latest(
            lambda s: ckpt.restore(s, _abstract(), position), META, **kwargs)
    finally:
        ckpt.close()
    return step, state, position.state


def test_restore_verifies_checksums_of_arrays_and_position(three_steps):
    step, state, position = _restore_latest(three_steps)
    assert step == 3 and position == {"next_batch": 3}
    np.testing.assert_array_equal(state["params"]["w"], _state(3)["params"]["w"])
    _flip_a_bit_of_w(three_steps / "3", 3)
    ckpt = Checkpointer(str(three_steps))
    with pytest.raises(CorruptCheckpoint, match="params/w does not match its checksum"):
        ckpt.restore(3, _abstract(), _Position())
    ckpt.close()


@pytest.mark.parametrize("set_aside", [False, True])
def test_restore_latest_falls_back_past_broken_steps(three_steps, caplog, set_aside):
    _flip_a_bit_of_w(three_steps / "3", 3)  # Read without error: only the checksum tells.
    _truncate_arrays(three_steps / "2")  # Orbax fails to read it.
    with caplog.at_level(logging.WARNING):
        step, state, position = _restore_latest(three_steps, set_broken_aside=set_aside)
    assert step == 1 and position == {"next_batch": 1}
    np.testing.assert_array_equal(state["params"]["w"], _state(1)["params"]["w"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "step 2 could not be restored" in warnings[0]
    assert "step 3 could not be restored (array params/w does not match its checksum)" in warnings[1]
    if set_aside:  # Renamed, never deleted.
        assert sorted(os.listdir(three_steps)) == ["1", "2.corrupt", "3.corrupt"]
        assert "moved to" in warnings[1] and "3.corrupt" in warnings[1]
    else:
        assert sorted(os.listdir(three_steps)) == ["1", "2", "3"]
        assert f"left in place at {three_steps / '3'}" in warnings[1]


def test_restore_latest_with_nothing_restorable_is_one_error(three_steps):
    for step in (1, 2, 3):
        _truncate_arrays(three_steps / str(step))
    with pytest.raises(UserError, match=r"No checkpoint in .* restores \(step 3: "):
        _restore_latest(three_steps, set_broken_aside=True)
    assert sorted(os.listdir(three_steps)) == ["1", "2", "3"]  # Nothing moved.


def test_restore_latest_without_checkpoints_is_none(tmp_path):
    assert _restore_latest(tmp_path / "empty")[:2] == (None, None)


def test_restore_latest_retries_a_step_deleted_while_reading(three_steps, caplog):
    ckpt = Checkpointer(str(three_steps))

    def restore_racing_the_cleanup(step):
        if step == 3:  # The trainer's keep-N cleanup removes it mid-read.
            shutil.rmtree(three_steps / "3")
        return ckpt.restore(step, _abstract())

    with caplog.at_level(logging.WARNING):
        step, _ = ckpt.restore_latest(restore_racing_the_cleanup, META)
    ckpt.close()
    assert step == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_meta_of_another_model_is_an_error_not_a_fallback(three_steps):
    with pytest.raises(UserError, match="was written with model="):
        ckpt = Checkpointer(str(three_steps))
        try:
            ckpt.restore_latest(lambda s: ckpt.restore(s, _abstract()), {"model": {"name": "other"}})
        finally:
            ckpt.close()


def test_a_failed_save_names_its_step_folder_and_cause(tmp_path, monkeypatch):
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(1, _state(1), _Position(1), META)
    ckpt.wait()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full)
    with pytest.raises(UserError) as error:
        ckpt.save(2, _state(2), _Position(2), META)
    monkeypatch.undo()
    message = str(error.value)
    assert f"Saving checkpoint step 2 to {tmp_path / 'ckpt'} failed (No space left on device)" in message
    assert "checkpoint step 1 and earlier are intact" in message
    ckpt.close()  # Does not raise the same failure twice.
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1"]


def test_a_save_failing_in_the_background_is_blamed_on_its_step(tmp_path, monkeypatch):
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(1, _state(1), _Position(1), META)
    ckpt.wait()
    ckpt.save(2, _state(2), _Position(2), META)

    def read_only(self):
        raise ValueError("FAILED: Error writing: [os_error_code='30']")

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", read_only)
    with pytest.raises(UserError, match=r"step 2 .* failed \(Read-only file system\)"):
        ckpt.save(3, _state(3), _Position(3), META)
    monkeypatch.undo()
    ckpt.close()
