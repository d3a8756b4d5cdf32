"""The config -> optax chain: schedules, weight-decay mask, clipping."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvision import optim
from jaxvision.errors import UserError


def _opt(**overrides):
    opt = ml_collections.ConfigDict({
        "name": "sgd", "learning_rate": 1.0, "momentum": 0.0, "nesterov": False,
        "weight_decay": 0.0, "grad_clip_norm": 0.0, "schedule": "constant",
        "warmup_epochs": 0, "decay_epochs": (), "decay_factor": 0.1, "b1": 0.9, "b2": 0.999,
    })
    opt.update(overrides)
    return opt


def test_cosine_schedule_with_warmup():
    # 10 steps/epoch, 1 warmup epoch, 110 steps: linear 0->1 over 10, cosine 1->0 over 100.
    sched = optim.make_schedule(_opt(schedule="cosine", warmup_epochs=1), 10, 110)
    np.testing.assert_allclose(
        [sched(0), sched(5), sched(10), sched(60), sched(110)],
        [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6,
    )


def test_step_schedule_counts_epochs_from_the_start():
    # Warmup 1 epoch; x0.1 at epochs 3 and 5 (steps 30 and 50).
    opt = _opt(schedule="step", warmup_epochs=1, decay_epochs=(3, 5), decay_factor=0.1)
    sched = optim.make_schedule(opt, 10, 100)
    np.testing.assert_allclose(
        [sched(10), sched(29), sched(31), sched(49), sched(51)],
        [1.0, 1.0, 0.1, 0.1, 0.01], rtol=1e-6,
    )


def test_weight_decay_skips_biases_and_norm_scales():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,)), "scale": jnp.ones((2,))}
    grads = {k: jnp.zeros_like(v) for k, v in params.items()}
    for name in ("sgd", "adamw"):
        tx, _ = optim.make_optimizer(_opt(name=name, learning_rate=0.1, weight_decay=0.5), 1, 1)
        updates, _ = tx.update(grads, tx.init(params), params)
        # SGD: -lr * wd * w = -0.05; AdamW: -lr * wd * w = -0.05 (zero grads, zero Adam term).
        np.testing.assert_allclose(updates["kernel"], -0.05, rtol=1e-6)
        np.testing.assert_allclose(updates["bias"], 0.0)
        np.testing.assert_allclose(updates["scale"], 0.0)


def test_gradient_clipping_by_global_norm():
    tx, _ = optim.make_optimizer(_opt(grad_clip_norm=1.0), 1, 1)
    grads = {"w": jnp.array([3.0, 4.0])}  # Global norm 5 -> scaled to norm 1.
    updates, _ = tx.update(grads, tx.init(grads), grads)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


def test_sgd_nesterov_matches_optax():
    opt = _opt(momentum=0.9, nesterov=True, learning_rate=0.1)
    tx, _ = optim.make_optimizer(opt, 1, 1)
    ref = optax.sgd(0.1, momentum=0.9, nesterov=True)
    params, grads = {"w": jnp.ones(3)}, {"w": jnp.array([1.0, -2.0, 0.5])}
    s, r = tx.init(params), ref.init(params)
    for _ in range(3):
        u, s = tx.update(grads, s, params)
        v, r = ref.update(grads, r, params)
        np.testing.assert_allclose(u["w"], v["w"], rtol=1e-6)


@pytest.mark.parametrize("field,value", [("name", "lamb"), ("schedule", "poly")])
def test_unknown_names_are_user_errors(field, value):
    with pytest.raises(UserError, match=field):
        optim.make_optimizer(_opt(**{field: value}), 1, 1)


# (what reads the field, the config that names it, the field).
READERS = [
    ("optimizer 'sgd'", {"name": "sgd"}, "momentum"),
    ("optimizer 'sgd'", {"name": "sgd"}, "nesterov"),
    ("optimizer 'adamw'", {"name": "adamw"}, "b1"),
    ("optimizer 'adamw'", {"name": "adamw"}, "b2"),
    ("every optimizer", {"name": "adamw"}, "weight_decay"),
    ("every schedule", {"schedule": "constant"}, "learning_rate"),
    ("every schedule", {"schedule": "cosine"}, "warmup_epochs"),
    ("schedule 'step'", {"schedule": "step", "decay_epochs": (1,)}, "decay_epochs"),
    ("schedule 'step'", {"schedule": "step", "decay_epochs": (1,)}, "decay_factor"),
]


@pytest.mark.parametrize("reader,fields,missing", READERS)
def test_missing_field_is_a_user_error_naming_it(reader, fields, missing):
    opt = _opt(**fields)
    del opt[missing]
    with pytest.raises(UserError) as info:
        optim.make_optimizer(opt, 1, 1)
    assert str(info.value).startswith(
        f"config.optimizer has no field {missing!r}, which {reader} needs; add it to your config"
    )


def test_each_optimizer_and_schedule_reads_only_its_own_fields():
    for name, others in [("sgd", ("b1", "b2")), ("adamw", ("momentum", "nesterov"))]:
        opt = _opt(name=name)  # Constant schedule.
        for field in (*others, "decay_epochs", "decay_factor"):
            del opt[field]
        tx, _ = optim.make_optimizer(opt, 1, 1)
        params = {"w": jnp.ones(2)}
        updates, _ = tx.update(params, tx.init(params), params)
        # lr 1, grads 1: SGD's -lr * grad, or AdamW's first step -lr * sign(grad).
        np.testing.assert_allclose(updates["w"], -1.0, rtol=1e-4)  # float32 bias correction.


def test_step_schedule_without_decay_epochs_is_a_user_error():
    with pytest.raises(UserError, match="decay_epochs is empty"):
        optim.make_schedule(_opt(schedule="step", decay_epochs=()), 1, 1)
