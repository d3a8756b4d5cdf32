"""Tasks: the pieces of training and evaluation that depend on the kind of problem.

A task is one module in this package that satisfies `Task` (below), plus one
line in `TASKS`; `config.task` names it. The trainer (`jaxvision.train`) and
the model side (`jaxvision.experiment`) call only these pieces, so adding a
task (recognition, tracking, ...) touches no other file of the library.

  classification  image -> one label; cross-entropy, accuracy
  detection       image -> boxes; the detector's own loss, COCO box AP
  recognition     image -> embedding; a margin softmax (ArcFace, ...), verification
                  accuracy and identification on unseen identities
  tracking        video -> tracks; a detector that also embeds (JDE), the tracker of
                  `jaxvision.tracking` at evaluation, MOTA / IDF1 / HOTA
"""

from typing import Any, Protocol

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxvision.data import DatasetInfo, Decode
from jaxvision.errors import UserError
from jaxvision.tasks import classification, detection, recognition, tracking


class EvalAccumulator(Protocol):
    """A task's `Evaluator`: adds up `Task.eval_outputs` of every eval batch on the host."""

    def add(self, outputs: dict[str, Any]) -> None:
        """Adds one batch's `eval_outputs`, fetched to the host (NumPy arrays)."""

    def result(self, export_dir: str | None = None) -> dict[str, float]:
        """The metrics over everything added; writes the task's exports to `export_dir`."""


class Task(Protocol):
    """What a task module defines (module-level functions and one class).

    `loss_fn` and `eval_outputs` run inside `jax.jit`: pure, static shapes,
    augmentation on device. Everything else runs on the host.
    """

    def make_decode(self, config: ml_collections.ConfigDict) -> Decode:
        """The host decode: dataset record -> example of fixed-shape arrays."""

    def input_shape(
        self, config: ml_collections.ConfigDict, info: DatasetInfo
    ) -> tuple[int, ...]:
        """The shape of one model input, `(1, H, W, C)`, used to initialize the model."""

    def loss_fn(
        self, params: Any, batch_stats: Any, batch: dict[str, jax.Array], rng: jax.Array,
        *, model: nn.Module, config: ml_collections.ConfigDict,
    ) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
        """The loss on a training batch: `(loss, (new_batch_stats, scalar metrics))`."""

    def eval_outputs(
        self, variables: dict[str, Any], batch: dict[str, jax.Array],
        *, model: nn.Module, config: ml_collections.ConfigDict,
    ) -> dict[str, jax.Array]:
        """What one eval batch contributes; padding examples (`batch["mask"]` False) count for nothing."""

    def Evaluator(  # A class in the task module.
        self, config: ml_collections.ConfigDict, info: DatasetInfo, split: str
    ) -> EvalAccumulator:
        """A fresh accumulator for one eval pass over `split`."""

    def synthetic_batch(
        self, config: ml_collections.ConfigDict, info: DatasetInfo, batch_size: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Random host rows shaped exactly like decoded batches, for `jaxvision.benchmark`."""


# config.task -> the module that implements it.
TASKS: dict[str, Task] = {
    "classification": classification,
    "detection": detection,
    "recognition": recognition,
    "tracking": tracking,
}


def get_task(name: str) -> Task:
    """The task module registered as `name`.

    Raises:
      UserError: no such task.
    """
    if name not in TASKS:
        raise UserError(f"Unknown config.task {name!r}; known tasks: {sorted(TASKS)}.")
    return TASKS[name]
