"""The train step, the loop, checkpoints and exact resume (8 virtual CPU devices)."""

import errno
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import digits_cnn
from jaxvision import experiment, parallel, train
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def smoke_config(data_dir, **overrides):
    config = digits_cnn.get_config("smoke")
    config.data.data_dir = data_dir
    config.update_from_flattened_dict(overrides)
    return config


def _random_batch(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (batch_size, 8, 8, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, (batch_size,)).astype(np.int32),
    }


def _assert_trees_equal(a, b, rtol=0.0, atol=0.0):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a, b,
    )


LAYOUTS = {  # name: (number of devices, fsdp)
    "1 device": (1, 1),
    "8 devices, data parallel": (8, 1),
    "8 devices, fsdp=4": (8, 4),  # A 2 x 4 (data x fsdp) mesh.
}


@pytest.mark.parametrize("model", ["cnn", "resnet18"])
def test_training_same_on_1_device_8_devices_and_fsdp(data_dir, model):
    config = smoke_config(data_dir, batch_size=16)
    if model == "resnet18":
        # BatchNorm: under sharding its statistics are those of the global batch.
        config.model = ml_collections.ConfigDict(
            {"name": "resnet18", "width": 8, "small_inputs": True}
        )
    # SGD: its update is linear in the gradient, so float-level differences in
    # the all-reduce stay float-level (Adam's first step is ~lr * sign(g) and
    # turns a 1e-9 difference of a near-zero gradient into a 2 * lr one).
    config.optimizer = ml_collections.ConfigDict({
        "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
        "weight_decay": 1e-4, "grad_clip_norm": 0.0, "schedule": "constant",
        "warmup_epochs": 0,
    })
    # ResNet compiles slowly on CPU: its mixed data x fsdp layout covers both axes.
    layouts = LAYOUTS if model == "cnn" else {k: LAYOUTS[k] for k in ("1 device", "8 devices, fsdp=4")}
    results = {}
    for name, (num_devices, fsdp) in layouts.items():
        mesh = parallel.make_mesh(fsdp=fsdp, devices=jax.devices()[:num_devices])
        trainer = train.Trainer(experiment.Experiment(config, mesh=mesh))
        state = trainer.init_state()
        losses = []
        for step in range(2):
            batch = jax.device_put(_random_batch(16, step), trainer.experiment.batch_sharding)
            state, metrics = trainer.train_step(state, batch)
            losses.append(float(metrics["loss"]))
        assert trainer.train_step._cache_size() == 1  # No recompilation after step 1.
        results[name] = (losses, jax.device_get(state))
    if model == "cnn":  # FSDP really splits the parameters.
        kernel = state.params["hidden"]["kernel"]
        assert np.prod(kernel.sharding.shard_shape(kernel.shape)) == kernel.size // 4
    losses1, state1 = results["1 device"]
    for name, (losses, state) in results.items():
        np.testing.assert_allclose(losses, losses1, rtol=1e-5, err_msg=name)
        _assert_trees_equal(state.params, state1.params, rtol=1e-4, atol=2e-5)
        _assert_trees_equal(state.batch_stats, state1.batch_stats, rtol=1e-4, atol=2e-5)
        # Momentum is the raw gradient sum: all-reduce order shows at ~1e-4 relative.
        _assert_trees_equal(state.opt_state, state1.opt_state, rtol=1e-4, atol=1e-4)


def test_save_restore_gives_identical_state(data_dir, tmp_path):
    trainer = train.Trainer(experiment.Experiment(smoke_config(data_dir)))
    exp = trainer.experiment
    state = trainer.init_state()
    state, _ = trainer.train_step(state, jax.device_put(_random_batch(32), exp.batch_sharding))
    iterator = trainer.train_iterator()
    next(iterator)
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(1, state, iterator, exp.meta)
    ckpt.close()
    expected_next = jax.device_get(next(iterator))

    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    fresh_iterator = trainer.train_iterator()
    restored = ckpt.restore(ckpt.latest_step(), trainer.abstract_state(), fresh_iterator)
    ckpt.close()
    _assert_trees_equal(jax.device_get(state), jax.device_get(restored))
    assert jax.tree.structure(state) == jax.tree.structure(restored)
    # The data iterator continues with the batch after the saved one.
    _assert_trees_equal(expected_next, jax.device_get(next(fresh_iterator)))


def _read_json(workdir, name):
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def _read_text(path):
    with open(path) as f:
        return f.read()


def _read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def smoke_run(data_dir, tmp_path_factory):
    """One uninterrupted run of the digits smoke config."""
    workdir = str(tmp_path_factory.mktemp("smoke"))
    state = train.train_and_evaluate(smoke_config(data_dir), workdir)
    return workdir, jax.device_get(state)


def test_smoke_run_learns_and_writes_its_outputs(smoke_run):
    workdir, state = smoke_run
    assert int(state.step) == 60
    records = _read_metrics(workdir)
    test = [r for r in records if r["split"] == "test"]
    assert test[-1]["step"] == 60 and test[-1]["num_examples"] == 360
    assert test[-1]["accuracy"] > 0.5  # Chance is 0.1.
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [20, 40, 60]
    assert {"loss", "accuracy", "learning_rate", "grad_norm"} <= set(train_records[0])
    assert _read_json(workdir, "config.json")["model"]["name"] == "cnn"
    run = _read_json(workdir, "run.json")
    assert run["device_count"] == 8 and run["packages"]["jax"] == jax.__version__
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "40", "60"]


def test_same_seed_gives_identical_metrics(smoke_run, data_dir, tmp_path):
    workdir, _ = smoke_run
    train.train_and_evaluate(smoke_config(data_dir), str(tmp_path))
    assert _read_metrics(str(tmp_path)) == _read_metrics(workdir)


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_parameters(smoke_run, data_dir, tmp_path, monkeypatch):
    _, uninterrupted = smoke_run
    save = Checkpointer.save

    def save_then_die(self, step, *args, **kwargs):
        saved = save(self, step, *args, **kwargs)
        if step == 40:
            raise _Interrupt()
        return saved

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(_Interrupt):
        train.train_and_evaluate(smoke_config(data_dir), str(tmp_path))
    monkeypatch.undo()
    resumed = jax.device_get(train.train_and_evaluate(smoke_config(data_dir), str(tmp_path)))
    _assert_trees_equal(resumed, uninterrupted)  # Bit for bit.
    # The rows written after step 40 by the stopped run are written once, again.
    assert _read_metrics(str(tmp_path)) == _read_metrics(smoke_run[0])


def test_finished_run_restarted_writes_nothing_new(smoke_run, data_dir):
    workdir, state = smoke_run
    before = _read_metrics(workdir)
    again = train.train_and_evaluate(smoke_config(data_dir), workdir)
    _assert_trees_equal(jax.device_get(again), state)
    assert _read_metrics(workdir) == before  # One row per (step, split).
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "40", "60"]


def test_corrupt_latest_checkpoint_is_passed_over_by_eval_and_training(
        smoke_run, data_dir, tmp_path, caplog):
    original, state = smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    state_dir = workdir / "checkpoints" / "60" / "state"
    for root, _, files in os.walk(state_dir):  # Truncate every array file.
        for name in files:
            if os.path.basename(root) == "d":
                os.truncate(os.path.join(root, name), os.path.getsize(os.path.join(root, name)) // 2)
    with caplog.at_level(logging.WARNING):
        assert experiment.evaluate(smoke_config(data_dir), str(workdir))["step"] == 40
    assert "Checkpoint step 60 could not be restored" in caplog.text
    assert (workdir / "checkpoints" / "60").is_dir()  # Evaluation leaves it as it is.

    resumed = jax.device_get(train.train_and_evaluate(smoke_config(data_dir), str(workdir)))
    _assert_trees_equal(resumed, state)  # Resumed from step 40, bit for bit.
    assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "40", "60", "60.corrupt"]
    assert _read_metrics(str(workdir)) == _read_metrics(original)


def test_evaluate_restores_latest_checkpoint(smoke_run, data_dir):
    workdir, _ = smoke_run
    metrics = experiment.evaluate(smoke_config(data_dir), workdir)
    last_test = next(r for r in _read_metrics(workdir) if r["split"] == "test")
    assert metrics["step"] == 60
    assert metrics["accuracy"] == pytest.approx(last_test["accuracy"])


def test_evaluate_needs_only_the_eval_split(smoke_run, data_dir):
    workdir, _ = smoke_run
    # A train split that does not exist: reading it would raise a UserError.
    config = smoke_config(data_dir, **{"data.train_split": "no_such_split"})
    assert experiment.evaluate(config, workdir)["step"] == 60


def test_checkpoint_of_another_model_is_refused_and_kept(smoke_run, data_dir):
    workdir, _ = smoke_run
    config = smoke_config(data_dir)
    config.model.hidden = 64
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    config_json = _read_text(os.path.join(workdir, "config.json"))
    with pytest.raises(UserError, match="new --workdir"):
        train.train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
    assert _read_text(os.path.join(workdir, "config.json")) == config_json


def test_nan_loss_stops_without_saving(data_dir, tmp_path):
    config = smoke_config(data_dir, **{"optimizer.learning_rate": 1e30})
    with pytest.raises(UserError, match="NaN"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.listdir(tmp_path / "checkpoints")
    assert not (tmp_path / "run.lock").exists()  # Released on the way out.


def test_failed_save_stops_training_with_earlier_checkpoints_intact(data_dir, tmp_path, monkeypatch):
    save = ocp.CheckpointManager.save

    def disk_full_at_40(self, step, *args, **kwargs):
        if step == 40:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full_at_40)
    with pytest.raises(UserError, match=r"step 40 .* failed \(No space left on device\)"):
        train.train_and_evaluate(smoke_config(data_dir), str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints") == ["20"]
    assert max(r["step"] for r in _read_metrics(str(tmp_path))) == 40  # No result after it.
    assert not (tmp_path / "run.lock").exists()


@pytest.mark.parametrize("batch_size", [12, 0])
def test_batch_size_not_dividing_devices_is_refused(data_dir, tmp_path, batch_size):
    with pytest.raises(UserError, match=f"config.batch_size={batch_size} must be a positive multiple of"):
        train.train_and_evaluate(smoke_config(data_dir, batch_size=batch_size), str(tmp_path))


def test_unwritable_workdir_is_refused(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # A file where a directory should be: fails even as root.
    with pytest.raises(UserError, match="Cannot write to workdir"):
        train.train_and_evaluate(smoke_config(data_dir), str(blocker / "run"))


def test_evaluate_without_checkpoint_is_refused(data_dir, tmp_path):
    with pytest.raises(UserError, match="train first"):
        experiment.evaluate(smoke_config(data_dir), str(tmp_path))


def test_bfloat16_step_matches_float32_and_training_learns(data_dir, tmp_path):
    batch = _random_batch(32)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        trainer = train.Trainer(experiment.Experiment(smoke_config(data_dir, dtype=dtype)))
        batch_on_devices = jax.device_put(batch, trainer.experiment.batch_sharding)
        _, metrics = trainer.train_step(trainer.init_state(), batch_on_devices)
        losses[dtype] = float(metrics["loss"])
    # Same parameters, same batch: the loss agrees to bf16's ~3 significant digits.
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=1e-2)
    assert losses["bfloat16"] != losses["float32"]  # The compute really was bf16.
    state = train.train_and_evaluate(smoke_config(data_dir, dtype="bfloat16"), str(tmp_path))
    # The 60-step smoke run reaches ~0.65-0.75 (f32 and bf16 alike; chance is 0.1).
    assert [r for r in _read_metrics(str(tmp_path)) if r["split"] == "test"][-1]["accuracy"] > 0.5
    # Parameters and optimizer state stay float32; only the compute is bf16.
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}


def test_float16_skips_overflowing_steps_and_backs_off_the_loss_scale(data_dir):
    trainer = train.Trainer(experiment.Experiment(smoke_config(data_dir, dtype="float16")))
    state = trainer.init_state()
    assert float(state.dynamic_scale.scale) == 2.0**15
    # A scale so large that the scaled gradients overflow float32.
    state = state.replace(dynamic_scale=state.dynamic_scale.replace(scale=jnp.float32(3e38)))
    before = jax.device_get(state.params)
    batch = jax.device_put(_random_batch(32), trainer.experiment.batch_sharding)
    state, metrics = trainer.train_step(state, batch)
    _assert_trees_equal(jax.device_get(state.params), before)  # Step skipped...
    assert float(metrics["loss_scale"]) == pytest.approx(1.5e38)  # ...scale halved.
    assert int(state.step) == 1


def test_float16_smoke_run_learns(data_dir, tmp_path):
    train.train_and_evaluate(smoke_config(data_dir, dtype="float16"), str(tmp_path))
    records = _read_metrics(str(tmp_path))
    assert "loss_scale" in records[0]
    assert [r for r in records if r["split"] == "test"][-1]["accuracy"] > 0.5


def test_profile_writes_a_trace_and_the_hlo(data_dir, tmp_path):
    config = smoke_config(data_dir, **{
        "num_train_steps": 6, "profile.start_step": 2, "profile.num_steps": 2,
        "profile.dump_hlo": True,
    })
    train.train_and_evaluate(config, str(tmp_path))
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0
    hlo = (tmp_path / "train_step.hlo.txt").read_text()
    assert hlo.startswith("HloModule")
    assert "block0_conv" in hlo  # Module names reach the HLO (and so the trace).


def test_unknown_dtype_is_refused(data_dir):
    with pytest.raises(UserError, match="config.dtype='float8'"):
        experiment.Experiment(smoke_config(data_dir, dtype="float8"))
