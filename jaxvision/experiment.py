"""The model side of a config: model, dataset info, input shape, decoder, eval step.

An `Experiment` is everything needed to *use* a trained model: build it,
lay its variables out on a mesh, restore them from a checkpoint, and
evaluate them on the eval split. It never reads the train split and knows
nothing of optimizers, so `scripts/eval.py` and `scripts/predict.py` work
with only the eval data at hand. Training adds its own side on top
(`jaxvision.train.Trainer`).
"""

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision import data, models, parallel, tasks
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")  # Compute dtypes; parameters stay float32.
# config.model fields that say how training starts, not what the model is: the
# trainer reads them (`jaxvision.weights`); the model and checkpoints never see them.
TRAINING_FIELDS = ("init_from", "freeze_backbone_stages")


def init_variables(
    rng: jax.Array, model: nn.Module, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """The model's initial variables: {"params": ..., "batch_stats": ...} ({} without BatchNorm).

    The parameters are sampled with the "rbg" PRNG, keyed by 128 bits of `rng`:
    XLA:CPU compiles threefry sampling for every parameter shape in tens of
    seconds (rbg: a few), and rbg streams are identical across shardings
    (though not across platforms).
    """
    rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
    variables = model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def variable_shardings(mesh: Mesh, variables: Any) -> Any:
    """Where each (abstract) array lives: split over the `fsdp` axis (`parallel.fsdp_spec`).

    Used for parameters, BatchNorm statistics and optimizer moments alike, so
    an optimizer moment is laid out like its parameter. One exception: a
    margin head's `class_centres` (`models.embedding`), which grow with the
    number of identities, are split over every device on their first axis,
    as insightface's Partial FC splits them (replicated if they do not divide).
    """
    fsdp = mesh.shape["fsdp"]

    def sharding(path: tuple, x: Any) -> NamedSharding:
        name = getattr(path[-1], "key", None) if path else None
        if name == "class_centres" and x.shape[0] % mesh.size == 0:
            return NamedSharding(mesh, P(parallel.BATCH_AXES, None))
        return NamedSharding(mesh, parallel.fsdp_spec(x.shape, fsdp))

    return jax.tree_util.tree_map_with_path(sharding, variables)


def abstract_arrays(shapes: Any, shardings: Any) -> Any:
    """`jax.ShapeDtypeStruct`s of `shapes` laid out as `shardings` (two pytrees alike).

    Restoring a checkpoint into them lays it out on this mesh, whatever mesh
    (or number of processes, or platform) wrote it.
    """
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
    )


def model_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`config.model` without its name and `TRAINING_FIELDS`: the model constructor's fields."""
    fields = config.model.to_dict()
    return {k: v for k, v in fields.items() if k != "name" and k not in TRAINING_FIELDS}


def eval_step(
    variables: dict[str, Any], batch: dict[str, jax.Array], *, outputs_fn: Callable
) -> dict[str, jax.Array]:
    """The task's outputs for one eval batch: `outputs_fn(variables, batch)`.

    Evaluation needs only the model variables, so a checkpoint evaluates
    whatever optimizer trained it.
    """
    return outputs_fn(variables, batch)


class Experiment:
    """The model side of `config`, built once; shared by training, evaluation and prediction."""

    def __init__(
        self, config: ml_collections.ConfigDict, mesh: Mesh | None = None,
        info: data.DatasetInfo | None = None,
    ):
        """Builds the task, mesh, dataset info, model, decoder and jitted eval step.

        Args:
          config: the experiment config.
          mesh: the device mesh; default from `config.mesh` over all devices.
          info: the dataset's classes and image shape; default: read from the
            dataset (a jaxvision dataset is prepared on first use). The
            benchmark passes one, so that it runs without the data.

        Raises:
          UserError: an unknown task, dtype, model or dataset.
        """
        self.task = tasks.get_task(config.task)
        if config.dtype not in DTYPES:
            raise UserError(
                f"config.dtype={config.dtype!r} is not a compute dtype jaxvision "
                f"supports; use one of {', '.join(map(repr, DTYPES))}."
            )
        self.config = config
        self.mesh = mesh or parallel.make_mesh(config.mesh.data, config.mesh.fsdp)
        if info is None:
            data.prepare(config.data.name, config.data.data_dir)  # Process 0 first.
            info = data.dataset_info(
                config.data.name, config.data.data_dir, config.data.train_split)
        self.info = info
        self.model = models.get_model(
            config.model.name, num_classes=self.info.num_classes,
            dtype=jnp.dtype(config.dtype), **model_fields(config),
        )
        self.input_shape = self.task.input_shape(config, self.info)
        self.decode = self.task.make_decode(config)
        self.batch_sharding = parallel.batch_sharding(self.mesh)

        init = functools.partial(init_variables, model=self.model, input_shape=self.input_shape)
        self.variable_shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
        self.variable_sharding = variable_shardings(self.mesh, self.variable_shapes)
        outputs_fn = functools.partial(self.task.eval_outputs, model=self.model, config=config)
        # Replicated outputs: every process sees the whole batch's results.
        self.eval_step = jax.jit(
            functools.partial(eval_step, outputs_fn=outputs_fn),
            in_shardings=(self.variable_sharding, self.batch_sharding),
            out_shardings=parallel.replicated(self.mesh),
        )

    @property
    def meta(self) -> dict:
        """The checkpoint header: what must match for a checkpoint to be restored.

        Round-tripped through JSON so it compares equal to what a checkpoint holds.
        """
        return json.loads(json.dumps({
            "model": {"name": self.config.model.name, **model_fields(self.config)},
            "dataset": self.config.data.name,
            "num_classes": self.info.num_classes,
        }))

    def abstract_variables(self) -> dict[str, Any]:
        """Shapes, dtypes and shardings of the model variables on this mesh (`abstract_arrays`)."""
        return abstract_arrays(self.variable_shapes, self.variable_sharding)

    def evaluate(
        self, variables: dict[str, Any], export_dir: str | None = None
    ) -> dict[str, float]:
        """One complete pass over the eval split(s) with `variables`; the task's metrics.

        `config.data.eval_split` is one split, or several separated by commas
        (e.g. insightface's "lfw.bin,cfp_fp.bin,agedb_30.bin"); each is then
        evaluated on its own and its metrics are prefixed with its name
        ("lfw/verification_accuracy"). With `export_dir`, the task also writes
        what it has to export there (detection: COCO-format ground truth and
        detections; recognition: the ROC curve), in a sub-folder per split
        when there are several.
        """
        splits = eval_splits(self.config)
        if len(splits) == 1:
            return self._evaluate_split(variables, splits[0], export_dir)
        metrics = {}
        for split in splits:
            name = split_name(split)
            split_dir = export_dir and os.path.join(export_dir, name)
            for key, value in self._evaluate_split(variables, split, split_dir).items():
                metrics[f"{name}/{key}"] = value
        return metrics

    def _evaluate_split(
        self, variables: dict[str, Any], split: str, export_dir: str | None
    ) -> dict[str, float]:
        cfg = self.config.data
        iterator = data.make_eval_iterator(
            cfg.name, split, cfg.data_dir,
            global_batch_size=self.config.eval_batch_size,
            sharding=self.batch_sharding, decode=self.decode,
            worker_count=cfg.worker_count,
        )
        evaluator = self.task.Evaluator(self.config, self.info, split)
        num_batches = 0
        for batch in iterator:
            evaluator.add(jax.device_get(self.eval_step(variables, batch)))
            num_batches += 1
        if not num_batches:
            raise UserError(
                f"The eval split {split!r} of {cfg.name!r} is empty; set "
                "config.data.eval_split to a split with examples."
            )
        return evaluator.result(export_dir)


def eval_splits(config: ml_collections.ConfigDict) -> list[str]:
    """The splits of `config.data.eval_split` ("test", or "lfw.bin,cfp_fp.bin": comma-separated).

    An unset eval split (a coco_json config without its eval files) is one
    empty split, which the dataset then refuses with a message naming the fields.
    """
    return [split.strip() for split in (config.data.eval_split or "").split(",")]


def split_name(split: str) -> str:
    """A split's name in metric names: "test" -> "test", "/data/lfw.bin" -> "lfw"."""
    return os.path.splitext(os.path.basename(split.rstrip("/")))[0] or split


def restore(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[Experiment, dict[str, Any], int]:
    """The experiment of `config` and the model variables of `workdir`'s newest good checkpoint.

    Only the params and BatchNorm statistics are read, so the config's
    optimizer fields need not match the run's, and the train split is never
    read. A step that does not restore (corrupt, or deleted by the trainer
    meanwhile) is passed over for the one before it (`Checkpointer.restore_latest`).

    Returns:
      `(experiment, variables, step)`.

    Raises:
      UserError: `workdir` has no checkpoint that restores, or one of another model.
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise UserError(
            f"No checkpoints in {directory}; train first with scripts/train.py "
            f"--workdir {workdir}, or point --workdir at a trained run."
        )
    exp = Experiment(config)
    ckpt = Checkpointer(directory)
    try:
        step, variables = ckpt.restore_latest(
            lambda step: ckpt.restore_part(step, exp.abstract_variables()), exp.meta
        )
    finally:
        ckpt.close()
    if step is None:
        raise UserError(
            f"No complete checkpoint in {directory}; train first with "
            f"scripts/train.py --workdir {workdir}."
        )
    return exp, variables, step


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Restores the latest checkpoint of `workdir` and evaluates it.

    What the task exports (detection: COCO JSON) goes to `workdir/eval`.
    """
    exp, variables, step = restore(config, workdir)
    metrics = exp.evaluate(variables, export_dir=os.path.join(workdir, "eval"))
    logging.info("step %d %s: %s", step, config.data.eval_split, metrics)
    return {"step": step, **metrics}
