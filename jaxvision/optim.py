"""Config -> optax chain: learning-rate schedule, optimizer, weight decay, clipping.

All hyperparameters come from `config.optimizer`; nothing is hard-coded here.
Schedules are given in epochs in the config and turned into steps here.
"""

import jax
import ml_collections
import optax

from jaxvision.errors import UserError


def make_schedule(
    opt: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """Warmup then `constant`, `cosine` or `step` decay, as named by `opt.schedule`."""
    warmup_steps = int(opt.warmup_epochs * steps_per_epoch)
    peak = opt.learning_rate
    if opt.schedule == "constant":
        decay = optax.constant_schedule(peak)
    elif opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
    elif opt.schedule == "step":
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
    opt: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optax chain named by `opt.name` ('sgd' or 'adamw')."""
    schedule = make_schedule(opt, steps_per_epoch, total_steps)
    parts = []
    if opt.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.name == "sgd":
        # L2-style decay added to the gradient before momentum, as in PyTorch SGD.
        if opt.weight_decay:
            parts.append(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask))
        parts.append(
            optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)
        )
    elif opt.name == "adamw":
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
            f"Unknown config.optimizer.name {opt.name!r}; use 'sgd' or 'adamw'."
        )
    return optax.chain(*parts), schedule
