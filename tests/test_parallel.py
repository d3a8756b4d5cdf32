"""Meshes, FSDP shardings, multi-process start-up errors, and cross-layout restore."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import digits_cnn
from jaxvision import experiment, parallel, train
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError


def test_mesh_shapes():
    assert dict(parallel.make_mesh().shape) == {"data": 8, "fsdp": 1}
    assert dict(parallel.make_mesh(fsdp=4).shape) == {"data": 2, "fsdp": 4}
    assert dict(parallel.make_mesh(data=2, fsdp=4).shape) == {"data": 2, "fsdp": 4}
    assert dict(parallel.make_mesh(devices=jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1}


@pytest.mark.parametrize("data,fsdp,match", [
    (-1, 3, "config.mesh.fsdp=3 does not divide the 8 devices"),
    (3, 2, "config.mesh.data=3 x config.mesh.fsdp=2 is 6 devices but there are 8"),
    (-1, 0, "config.mesh.fsdp=0"),
])
def test_bad_mesh_shapes_are_refused(data, fsdp, match):
    with pytest.raises(UserError, match=match):
        parallel.make_mesh(data=data, fsdp=fsdp)


def test_fsdp_spec_splits_the_largest_divisible_dimension():
    assert parallel.fsdp_spec((3, 3, 16, 64), 4) == P(None, None, None, "fsdp")
    assert parallel.fsdp_spec((256, 10), 4) == P("fsdp", None)
    assert parallel.fsdp_spec((10,), 4) == P()  # Nothing divisible: replicated.
    assert parallel.fsdp_spec((), 4) == P()
    assert parallel.fsdp_spec((256, 128), 1) == P()


@pytest.mark.parametrize("args,match", [
    (("127.0.0.1:1234", 2, None), "need all of"),
    (("127.0.0.1", 2, 1), "has no port"),
    (("127.0.0.1:1234", 2, 2), "out of range"),
    (("127.0.0.1:1234", 2, -1), "out of range"),
])
def test_bad_distributed_arguments_are_refused(args, match):
    with pytest.raises(UserError, match=match):
        parallel.initialize_distributed(*args)


def test_unreachable_coordinator_fails_within_the_timeout():
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    with pytest.raises(UserError, match="Could not reach the coordinator at 127.0.0.1:9 within 1 s"):
        parallel.initialize_distributed("127.0.0.1:9", 2, 1, timeout_s=1)


def _experiment(data_dir, num_devices, fsdp):
    config = digits_cnn.get_config("smoke")
    config.data.data_dir = data_dir
    mesh = parallel.make_mesh(fsdp=fsdp, devices=jax.devices()[:num_devices])
    return train.Trainer(experiment.Experiment(config, mesh=mesh))


@pytest.mark.parametrize("save_layout,restore_layout", [
    ((8, 4), (1, 1)),  # 8 devices with FSDP -> 1 device (a laptop).
    ((1, 1), (8, 2)),  # 1 device -> 8 devices with FSDP.
    ((8, 1), (8, 8)),  # Pure data parallel -> fully sharded.
])
def test_checkpoint_restores_on_another_layout(tmp_path, save_layout, restore_layout):
    data_dir = str(tmp_path / "tfds")
    saver = _experiment(data_dir, *save_layout)
    state = saver.init_state()
    batch = {
        "image": np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8),
        "label": np.arange(32, dtype=np.int32) % 10,
    }
    state, _ = saver.train_step(state, jax.device_put(batch, saver.experiment.batch_sharding))
    iterator = saver.train_iterator()
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(1, state, iterator, saver.experiment.meta)
    ckpt.close()
    saved = jax.device_get(state)

    restorer = _experiment(data_dir, *restore_layout)
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    restored = ckpt.restore(1, restorer.abstract_state())
    ckpt.close()
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(restorer.state_sharding)):
        assert got.sharding == want  # Laid out for the new mesh...
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)  # ...same values.
