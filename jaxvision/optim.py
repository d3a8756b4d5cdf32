"""Config -> optax chain: learning-rate schedule, optimizer, weight decay, clipping.

All hyperparameters come from `config.optimizer`; nothing is hard-coded here.
Schedules are given in epochs in the config and turned into steps here. Each
optimizer and schedule reads only its own fields, and a missing one is a
`UserError` naming it (configs/common.py's blocks hold every field).
"""

from typing import Any

import jax
import ml_collections
import optax

from jaxvision.errors import UserError

OPTIMIZERS = ("sgd", "adamw")  # The values of config.optimizer.name.


def _require(opt: ml_collections.ConfigDict, reader: str, *fields: str) -> None:
    """Raises a UserError naming the first of `fields` that `opt` lacks and `reader` needs."""
    for field in fields:
        if field not in opt:
            raise UserError(
                f"config.optimizer has no field {field!r}, which {reader} needs; add it to "
                "your config (configs/common.py's sgd() and adamw() blocks hold every field)."
            )


def make_schedule(
    opt: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """Warmup then `constant`, `cosine` or `step` decay, as named by `opt.schedule`."""
    _require(opt, "every schedule", "schedule", "learning_rate", "warmup_epochs")
    warmup_steps = int(opt.warmup_epochs * steps_per_epoch)
    peak = opt.learning_rate
    if opt.schedule == "constant":
        decay = optax.constant_schedule(peak)
    elif opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
    elif opt.schedule == "step":
        _require(opt, "schedule 'step'", "decay_epochs", "decay_factor")
        if not opt.decay_epochs:
            raise UserError(
                "config.optimizer.decay_epochs is empty, so schedule 'step' would never decay; "
                "set it (e.g. --config.optimizer.decay_epochs='(30, 60)') or use 'constant'."
            )
        # Multiply by `decay_factor` at each epoch in `decay_epochs` (counted
        # from the start of training, as in the papers' recipes).
        boundaries = {
            int(e * steps_per_epoch) - warmup_steps: opt.decay_factor
            for e in opt.decay_epochs
        }
        decay = optax.piecewise_constant_schedule(peak, boundaries)
    else:
        raise UserError(
            f"Unknown config.optimizer.schedule {opt.schedule!r}; use 'constant', "
            "'cosine' or 'step'."
        )
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params):
    """True for weights that get weight decay: kernels, not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    opt: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int,
    frozen: Any = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optax chain named by `opt.name` (one of `OPTIMIZERS`).

    Args:
      opt: `config.optimizer`.
      steps_per_epoch, total_steps: turn the schedule's epochs into steps.
      frozen: None, or a pytree of bools like the params (`weights.frozen_mask`):
        True leaves are never updated, not even by weight decay.
    """
    _require(opt, "every optimizer", "name", "weight_decay")
    schedule = make_schedule(opt, steps_per_epoch, total_steps)
    parts = []
    if opt.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.name == "sgd":
        _require(opt, "optimizer 'sgd'", "momentum", "nesterov")
        # L2-style decay added to the gradient before momentum, as in PyTorch SGD.
        if opt.weight_decay:
            parts.append(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask))
        parts.append(
            optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)
        )
    elif opt.name == "adamw":
        _require(opt, "optimizer 'adamw'", "b1", "b2")
        parts.append(
            optax.adamw(
                schedule,
                b1=opt.b1,
                b2=opt.b2,
                weight_decay=opt.weight_decay,
                mask=decay_mask,
            )
        )
    else:
        raise UserError(
            f"Unknown config.optimizer.name {opt.name!r}; use "
            f"{' or '.join(repr(name) for name in OPTIMIZERS)}."
        )
    tx = optax.chain(*parts)
    if frozen is not None:
        labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen)
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule
