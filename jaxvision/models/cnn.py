"""A small CNN for MNIST-sized images (sklearn digits, MNIST, CIFAR-10)."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from flax.typing import Dtype


class CNN(nn.Module):
    """Blocks of conv3x3 -> relu -> 2x2 max pool, then an MLP head.

    Each block halves the resolution (rounding down), so 8x8 inputs allow at
    most three blocks.

    Attributes:
        num_classes: number of output logits.
        features: output channels of each conv block.
        hidden: width of the hidden dense layer.
        dropout_rate: dropout before the last layer, active only when training.
        dtype: compute dtype.
        param_dtype: parameter dtype.
    """

    num_classes: int
    features: Sequence[int] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Maps normalized images [B, H, W, C] to float32 logits [B, num_classes]."""
        conv = functools.partial(
            nn.Conv, padding="SAME", dtype=self.dtype, param_dtype=self.param_dtype
        )
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype
        )

        # x: [B, H, W, C]
        for i, channels in enumerate(self.features):
            x = nn.relu(conv(channels, (3, 3), name=f"block{i}_conv")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            # [B, H / 2**(i + 1), W / 2**(i + 1), channels]
        x = x.reshape(x.shape[0], -1)  # [B, H' * W' * features[-1]]
        x = nn.relu(dense(self.hidden, name="hidden")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
        x = dense(self.num_classes, name="head")(x)
        return x.astype(jnp.float32)  # [B, num_classes]
