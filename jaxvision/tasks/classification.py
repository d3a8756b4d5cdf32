"""Image classification: the loss on a training batch and the eval metrics.

These are the only task-specific pieces the trainer needs. Both run inside
`jax.jit`; augmentation happens here, on the device.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxvision import losses
from jaxvision.data import augment


def loss_fn(
    params: Any,
    batch_stats: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    model: nn.Module,
    config: ml_collections.ConfigDict,
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


def eval_sums(
    variables: dict[str, Any],
    batch: dict[str, jax.Array],
    *,
    model: nn.Module,
    config: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
    """Sums over the real (unpadded) examples of an eval batch.

    Sums, not means, so that batches add up exactly and padded examples
    (`mask` False) count for nothing.
    """
    aug = config.augment
    images = augment.preprocess_for_eval(
        batch["image"], crop_size=aug.crop_size, mean=aug.mean, std=aug.std
    )
    logits = model.apply(variables, images, train=False)  # [B, K]
    mask = batch["mask"].astype(jnp.float32)  # [B]
    per_example = losses.softmax_cross_entropy(logits, batch["label"])  # [B]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {
        "loss": jnp.sum(per_example * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Eval sums -> mean loss and accuracy over the examples seen."""
    count = max(float(sums["count"]), 1.0)
    return {
        "accuracy": float(sums["correct"]) / count,
        "loss": float(sums["loss"]) / count,
        "num_examples": float(sums["count"]),
    }
