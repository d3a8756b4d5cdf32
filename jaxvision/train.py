"""Training: the TrainState, the pure train step, the `Trainer` and the loop.

`train_step` is a module-level pure function; the `Trainer` jits it once with
explicit shardings over a mesh of all devices (parameters and optimizer
state split over the `fsdp` axis, donated; batches split over the `data`
axis), so the same code runs on one CPU, eight GPUs or many hosts. The model
side (model, decoder, eval step, evaluation) is `jaxvision.experiment`.

Everything is a function of (config, seed): the per-step RNG is
`fold_in(state.rng, state.step)`, the data order is seeded, and a checkpoint
holds the whole state and the loader's position, so a resumed run continues
exactly where it stopped.
"""

import contextlib
import functools
import os
import signal
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from flax.training.dynamic_scale import DynamicScale
from jax.sharding import Mesh

from jaxvision import data, optim, parallel, preemption, weights, writers
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError
from jaxvision.experiment import (
    Experiment,
    abstract_arrays,
    eval_splits,
    init_variables,
    variable_shardings,
)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree."""

    step: jax.Array  # int32 scalar: optimizer steps taken so far
    params: Any
    batch_stats: Any  # BatchNorm running statistics ({} for models without)
    opt_state: optax.OptState
    rng: jax.Array  # base key; step t uses fold_in(rng, t)
    # float16 compute only: dynamic loss scaling (scale, steps since last overflow).
    dynamic_scale: DynamicScale | None = None


def create_train_state(
    rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
    input_shape: tuple[int, ...], loss_scaling: bool = False,
) -> TrainState:
    """Initializes the model variables (`experiment.init_variables`) and the optimizer state.

    The state's own `rng` (threefry) is split from `rng` beside the init key.
    """
    init_rng, state_rng = jax.random.split(rng)
    variables = init_variables(init_rng, model, input_shape)
    params = variables["params"]
    dynamic_scale = None
    if loss_scaling:
        # Arrays, not Python numbers, so the pytree's types never change.
        dynamic_scale = DynamicScale(
            fin_steps=jnp.zeros((), jnp.int32), scale=jnp.asarray(2.0**15, jnp.float32)
        )
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(params),
        rng=state_rng,
        dynamic_scale=dynamic_scale,
    )


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *,
    tx: optax.GradientTransformation, loss_fn: Callable,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step. `loss_fn(params, batch_stats, batch, rng)` is the task's.

    With `state.dynamic_scale` (float16 compute), the loss is scaled before the
    backward pass and the gradients unscaled after it; a step whose gradients
    overflow is skipped (params, batch stats and optimizer state kept) and the
    scale halved.
    """
    rng = jax.random.fold_in(state.rng, state.step)
    args = (state.params, state.batch_stats, batch, rng)
    if state.dynamic_scale is None:
        (_, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(*args)
    else:
        grad_fn = state.dynamic_scale.value_and_grad(loss_fn, has_aux=True)
        dynamic_scale, is_finite, (_, (batch_stats, metrics)), grads = grad_fn(*args)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree_utils.tree_norm(grads))
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats,
        opt_state=opt_state,
    )
    if state.dynamic_scale is not None:
        # Overflow: keep the old values (a where, not a branch: no host sync).
        keep_old = functools.partial(jax.tree.map, lambda new, old: jnp.where(is_finite, new, old))
        new_state = new_state.replace(
            params=keep_old(new_state.params, state.params),
            batch_stats=keep_old(new_state.batch_stats, state.batch_stats),
            opt_state=keep_old(new_state.opt_state, state.opt_state),
            dynamic_scale=dynamic_scale,
        )
        metrics = dict(metrics, loss_scale=dynamic_scale.scale)
    return new_state, metrics


def _with_variables(
    state: TrainState, variables: dict[str, Any], *, tx: optax.GradientTransformation
) -> TrainState:
    """`state` holding `variables` (pretrained weights), with a fresh optimizer state."""
    return state.replace(
        params=variables["params"], batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
    )


def model_variables(state: TrainState) -> dict[str, Any]:
    """What `model.apply` takes from the state: params and BatchNorm statistics."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def state_shardings(mesh: Mesh, state: TrainState) -> TrainState:
    """Where each part of the (abstract) state lives on `mesh`.

    Parameters, BatchNorm statistics and optimizer moments are split over the
    `fsdp` axis (`experiment.variable_shardings`); step and RNG are replicated.
    """
    replicated = parallel.replicated(mesh)
    return TrainState(
        step=replicated, params=variable_shardings(mesh, state.params),
        batch_stats=variable_shardings(mesh, state.batch_stats),
        opt_state=variable_shardings(mesh, state.opt_state), rng=replicated,
        dynamic_scale=jax.tree.map(lambda _: replicated, state.dynamic_scale),
    )


class Trainer:
    """The training side of an `Experiment`: schedule, optimizer, state, train step, data."""

    def __init__(self, experiment: Experiment, num_train_examples: int | None = None):
        """Builds the optimizer and the jitted train step for `experiment`.

        Args:
          experiment: the model side (model, mesh, decoder, config).
          num_train_examples: the train split's size, for the schedule. Given,
            the dataset is not read (benchmarks on synthetic data).
        """
        self.experiment = exp = experiment
        config = exp.config
        data.order.local_batch_size(config.batch_size, exp.batch_sharding)  # Checks it.
        if num_train_examples is None:
            num_train_examples = len(data.load_source(
                config.data.name, config.data.train_split, config.data.data_dir))
            # Open the eval split(s) too: a wrong path fails now, not at the first evaluation.
            for split in eval_splits(config):
                data.load_source(config.data.name, split, config.data.data_dir)
        self.steps_per_epoch = max(num_train_examples // config.batch_size, 1)
        self.num_train_steps = config.num_train_steps or int(
            config.num_epochs * self.steps_per_epoch
        )
        # Fine-tuning: parameters that never change (config.model.freeze_backbone_stages,
        # frozen_bn) get no gradient and no update; None when all are trained.
        self.frozen = weights.frozen_mask(
            exp.variable_shapes["params"], config.model.get("freeze_backbone_stages", 0),
            config.model.get("frozen_bn", False),
        )
        self.tx, self.schedule = optim.make_optimizer(
            config.optimizer, self.steps_per_epoch, self.num_train_steps, frozen=self.frozen
        )
        init_fn = functools.partial(
            create_train_state, model=exp.model, tx=self.tx, input_shape=exp.input_shape,
            loss_scaling=config.dtype == "float16",
        )
        self._state_shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
        self.state_sharding = state_shardings(exp.mesh, self._state_shapes)
        self._init = jax.jit(init_fn, out_shardings=self.state_sharding)
        self._with_variables = jax.jit(
            functools.partial(_with_variables, tx=self.tx),
            out_shardings=self.state_sharding, donate_argnums=0,
        )
        loss_fn = functools.partial(exp.task.loss_fn, model=exp.model, config=config)
        if self.frozen is not None:
            loss_fn = weights.stop_frozen_gradients(loss_fn, self.frozen)
        self.train_step = jax.jit(
            functools.partial(train_step, tx=self.tx, loss_fn=loss_fn),
            in_shardings=(self.state_sharding, exp.batch_sharding),
            out_shardings=(self.state_sharding, parallel.replicated(exp.mesh)),
            donate_argnums=0,
        )

    def init_state(self) -> TrainState:
        """The state at step 0: random init, then `config.model.init_from`'s weights if set."""
        state = self._init(jax.random.PRNGKey(self.experiment.config.seed))
        spec = self.experiment.config.model.get("init_from")
        if not spec:
            return state
        variables = weights.initialize_from(spec, jax.device_get(model_variables(state)))
        return self._with_variables(state, variables)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the state on this mesh (`abstract_arrays`)."""
        return abstract_arrays(self._state_shapes, self.state_sharding)

    def train_iterator(self) -> data.TrainIterator:
        exp = self.experiment
        cfg = exp.config.data
        return data.make_train_iterator(
            cfg.name, cfg.train_split, cfg.data_dir,
            global_batch_size=exp.config.batch_size, seed=exp.config.seed,
            sharding=exp.batch_sharding, decode=exp.decode,
            worker_count=cfg.worker_count, cache=cfg.cache,
        )


def _dump_hlo(trainer: Trainer, state: TrainState, batch: dict, workdir: str):
    """Writes the train step's optimized (post-XLA) HLO to `workdir/train_step.hlo.txt`."""
    path = os.path.join(workdir, "train_step.hlo.txt")
    with open(path, "w") as f:
        f.write(trainer.train_step.lower(state, batch).compile().as_text())
    logging.info("Wrote the optimized HLO of the train step to %s.", path)


def _check_finite(step: int, losses: list[float], checkpoint_dir: str,
                  last_saved: int | None):
    if not np.all(np.isfinite(losses)):
        kept = (f"the last good checkpoint (step {last_saved}) in {checkpoint_dir} "
                "is kept" if last_saved is not None else "no checkpoint was saved")
        raise UserError(
            f"The training loss became NaN or infinite by step {step}; lower "
            "config.optimizer.learning_rate or set config.optimizer.grad_clip_norm "
            f"({kept})."
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains `config` in `workdir`, resuming from its newest checkpoint that restores.

    Evaluates every `config.eval_every_steps` and at the end, and saves a
    checkpoint every `config.checkpoint_every_steps` and at the end. Holds
    `workdir/run.lock` while it runs.

    Raises:
      UserError: bad input, another run in `workdir`, a failed save, or a
        non-finite loss (stops without saving it).
      preemption.Stopped: SIGTERM or SIGINT arrived; the step reached is saved.
    """
    writers.prepare_workdir(workdir)
    with writers.WorkdirLock(workdir):
        trainer = Trainer(Experiment(config))
        ckpt = Checkpointer(
            os.path.join(workdir, "checkpoints"),
            save_every_steps=config.checkpoint_every_steps, keep=config.keep_checkpoints,
        )
        train_iter = trainer.train_iterator()
        try:
            with preemption.StopSignals(trainer.experiment.mesh) as signals:
                return _train_loop(trainer, ckpt, train_iter, signals, workdir)
        finally:
            train_iter.close()
            ckpt.close()  # Lets an in-flight save finish, even on error.


def _is_eval_step(config: ml_collections.ConfigDict, step: int, num_steps: int) -> bool:
    return step % config.eval_every_steps == 0 or step == num_steps


def _train_loop(
    trainer: Trainer, ckpt: Checkpointer, train_iter: data.TrainIterator,
    signals: preemption.StopSignals, workdir: str,
) -> TrainState:
    """Resumes from the newest good checkpoint (or starts), then trains to the end."""
    exp = trainer.experiment
    config = exp.config
    num_steps = trainer.num_train_steps
    eval_split = config.data.eval_split
    restored, state = ckpt.restore_latest(
        lambda step: ckpt.restore(step, trainer.abstract_state(), train_iter),
        exp.meta, set_broken_aside=True,
    )
    if state is None:
        state = trainer.init_state()
    else:
        logging.info("Resumed from checkpoint step %d in %s", restored, ckpt.directory)
    start_step = int(state.step)
    writers.write_run_files(workdir, config)
    with contextlib.closing(writers.MetricWriter(workdir, start_step)) as writer:
        if (start_step and _is_eval_step(config, start_step, num_steps)
                and not writer.has(start_step, eval_split)):
            # Stopped after saving this step but before evaluating it.
            writer.write(start_step, eval_split, exp.evaluate(model_variables(state)))
        if start_step >= num_steps:
            logging.info("Training already finished (step %d); its %s metrics: %s", start_step,
                         eval_split, writer.get(start_step, eval_split))
            return state
        return _train_steps(trainer, ckpt, train_iter, signals, writer, state, workdir)


def _train_steps(
    trainer: Trainer, ckpt: Checkpointer, train_iter: data.TrainIterator,
    signals: preemption.StopSignals, writer: writers.MetricWriter, state: TrainState,
    workdir: str,
) -> TrainState:
    """The steps from `state.step` to the end: train, log, save, evaluate, stop on a signal."""
    exp = trainer.experiment
    config = exp.config
    start_step, num_steps = int(state.step), trainer.num_train_steps
    last_saved = start_step or None  # Resumed runs start from a saved step.
    profile = config.profile
    trace_end = profile.start_step + profile.num_steps - 1  # Last traced step.
    tracing = False
    pending = []  # Per-step metrics (on device) since the last host sync.
    with tqdm.tqdm(total=num_steps, initial=start_step, desc="train", unit="step",
                   disable=jax.process_index() != 0, dynamic_ncols=True) as bar:
        for step in range(start_step + 1, num_steps + 1):
            batch = next(train_iter)
            if profile.dump_hlo and step == start_step + 1:
                _dump_hlo(trainer, state, batch, workdir)
            if step == profile.start_step:
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
                tracing = True
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = trainer.train_step(state, batch)
            if tracing and step in (trace_end, num_steps):
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
                logging.info("Wrote a profiler trace of steps %d-%d to %s/profile.",
                             profile.start_step, step, workdir)
            pending.append(metrics)
            bar.update(1)
            stop_signal = signals.stop_requested()  # 0, or SIGTERM/SIGINT: save and stop.
            is_last = step == num_steps
            log_now = step % config.log_every_steps == 0 or is_last
            save_now = step % config.checkpoint_every_steps == 0 or is_last or stop_signal
            if log_now or save_now:
                # The one host sync point: fetch the metrics, refuse to go on (or
                # save) past a non-finite loss or a save that failed.
                host = jax.device_get(pending)
                pending = []
                _check_finite(step, [m["loss"] for m in host], ckpt.directory, last_saved)
                ckpt.check()
                if log_now:
                    means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                    means["learning_rate"] = float(trainer.schedule(step - 1))
                    writer.write(step, "train", means)
                    bar.set_postfix(loss=f"{means['loss']:.4f}")
                force = is_last or bool(stop_signal)
                if save_now and ckpt.save(step, state, train_iter, exp.meta, force=force):
                    last_saved = step
            if stop_signal:
                ckpt.wait()  # The resumed run evaluates this step if it is due.
                bar.close()
                logging.warning(
                    "Stopped by %s: checkpoint step %d is saved in %s; rerun the same command "
                    "to resume.", signal.Signals(stop_signal).name, step, ckpt.directory)
                raise preemption.Stopped(stop_signal, step)
            if _is_eval_step(config, step, num_steps):
                if is_last:
                    ckpt.wait()  # The final metrics have a checkpoint behind them.
                writer.write(step, config.data.eval_split, exp.evaluate(model_variables(state)))
    return state
