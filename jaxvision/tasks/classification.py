"""Image classification: one label per image, cross-entropy, accuracy.

Implements the `jaxvision.tasks.Task` protocol. Batches (from
`data.ClassificationDecode`) hold "image" uint8 [B, H, W, C], "label" int32
[B], and at eval "mask" bool [B] (False: padding).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import data, losses
from jaxvision.data import augment
from jaxvision.errors import UserError


def make_decode(config: ml_collections.ConfigDict) -> data.Decode:
    """`ClassificationDecode`: resized to `data.resize_size`, converted to `data.channels` if set."""
    return data.ClassificationDecode(config.data.resize_size, config.data.get("channels"))


def input_shape(
    config: ml_collections.ConfigDict, info: data.DatasetInfo
) -> tuple[int, int, int, int]:
    """`(1, crop, crop, C)`: one augmented image; C is `data.channels` or the dataset's."""
    channels = config.data.get("channels") or info.channels
    return (1, config.augment.crop_size, config.augment.crop_size, channels)


def loss_fn(
    params: Any, batch_stats: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    """Mean cross-entropy on an augmented training batch.

    Args:
      params, batch_stats: the model variables.
      batch: `image` uint8 `[B, H, W, C]`, `label` int32 `[B]`.
      rng: key for augmentation and dropout.

    Returns:
      `(loss, (new_batch_stats, metrics))`, metrics being batch means.
    """
    aug = config.augment
    aug_rng, dropout_rng = jax.random.split(rng)
    images = augment.preprocess_for_train(
        batch["image"], aug_rng, crop_size=aug.crop_size, pad=aug.pad,
        flip=aug.flip, random_resized_crop=aug.random_resized_crop,
        mean=aug.mean, std=aug.std,
    )  # [B, crop, crop, C] float32
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats},
        images,
        train=True,
        rngs={"dropout": dropout_rng},
        mutable=["batch_stats"],
    )  # [B, K]
    per_example = losses.softmax_cross_entropy(
        logits, batch["label"], config.label_smoothing
    )  # [B]
    loss = per_example.mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_batch_stats = updates.get("batch_stats", batch_stats)
    return loss, (new_batch_stats, {"loss": loss, "accuracy": accuracy})


def predict(
    variables: dict[str, Any], images: jax.Array, *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> jax.Array:
    """float32 logits `[B, K]` of decoded uint8 images `[B, H, W, C]` (as eval batches hold them).

    The eval preprocessing (center crop to `config.augment.crop_size`,
    normalization), then the model in inference mode.
    """
    aug = config.augment
    images = augment.preprocess_for_eval(
        images, crop_size=aug.crop_size, mean=aug.mean, std=aug.std
    )  # [B, crop, crop, C] float32
    return model.apply(variables, images, train=False)  # [B, K]


def eval_outputs(
    variables: dict[str, Any], batch: dict[str, jax.Array], *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
    """Sums over the real (unpadded) examples of an eval batch.

    Sums, not means, so that batches add up exactly and padded examples
    (`mask` False) count for nothing.
    """
    logits = predict(variables, batch["image"], model=model, config=config)  # [B, K]
    mask = batch["mask"].astype(jnp.float32)  # [B]
    per_example = losses.softmax_cross_entropy(logits, batch["label"])  # [B]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {
        "loss": jnp.sum(per_example * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }


class Evaluator:
    """Adds up the eval sums of every batch; `result` gives mean loss and accuracy."""

    def __init__(self, config: ml_collections.ConfigDict, info: data.DatasetInfo, split: str):
        del config, info, split  # Nothing to configure.
        self._sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        """Adds one batch's `eval_outputs` (fetched to the host)."""
        for key in self._sums:
            self._sums[key] += float(outputs[key])

    def result(self, export_dir: str | None = None) -> dict[str, float]:
        """Mean loss and accuracy over the examples seen (nothing to export)."""
        del export_dir
        count = max(self._sums["count"], 1.0)
        return {
            "accuracy": self._sums["correct"] / count,
            "loss": self._sums["loss"] / count,
            "num_examples": self._sums["count"],
        }


def synthetic_batch(
    config: ml_collections.ConfigDict, info: data.DatasetInfo, batch_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Random uint8 "image" `[B, S, S, C]`, "label" `[B]` and "mask" `[B]` (all True).

    S is `config.data.resize_size`, or the dataset's fixed image size.
    """
    size = config.data.resize_size
    if size is None:
        if info.image_shape is None:
            raise UserError(
                f"Images of {config.data.name!r} vary in size; set "
                "config.data.resize_size (or --image_size) to benchmark it."
            )
        size = info.image_shape[0]
    return {
        "image": rng.integers(0, 256, (batch_size, size, size, input_shape(config, info)[-1]),
                              dtype=np.uint8),
        "label": rng.integers(0, info.num_classes, (batch_size,), dtype=np.int32),
        "mask": np.ones((batch_size,), bool),
    }
