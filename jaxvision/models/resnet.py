"""ResNet v1.5 (torchvision layout), NHWC.

v1.5 puts the stride of a bottleneck block on its 3x3 conv rather than on the
first 1x1 conv; it is what torchvision ships and what most papers report. With
`num_classes=1000` the parameter counts equal torchvision's exactly.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.typing import Dtype

from jaxvision.errors import UserError
from jaxvision.ops import conv

ModuleDef = Any
ones, zeros = nn.initializers.ones, nn.initializers.zeros

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_conv(
    features: int, kernel_size: tuple[int, int], strides: int = 1, **kwargs: Any
) -> nn.Conv:
    """A bias-free conv padded like torch (k // 2 on each side), not like "SAME".

    "SAME" pads a stride-2 conv on even inputs only at the bottom/right; torch
    pads symmetrically. Matching torch keeps ported torchvision weights exact.
    """
    padding = [(k // 2, k // 2) for k in kernel_size]
    return nn.Conv(
        features,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        conv_general_dilated=conv.conv_general_dilated,  # 1x1: a matmul on CPUs.
        **kwargs,
    )


class ResidualBlock(nn.Module):
    """What `BasicBlock` and `BottleneckBlock` share: fields and the shortcut.

    Attributes:
        filters: channels of the block's convs; the output has
            `filters * expansion`.
        conv: conv constructor (bias-free, dtypes and init already bound).
        norm: BatchNorm constructor (train/eval mode already bound).
        strides: stride of the (first) 3x3 conv; 2 halves the resolution.
        zero_init_residual: start the last BN scale at zero, so the residual
            branch outputs zero at init and the block starts as its shortcut.
    """

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    zero_init_residual: bool = False

    expansion = 1  # output channels = filters * expansion (BottleneckBlock: 4)

    @nn.nowrap
    def last_norm(self, name: str) -> nn.Module:
        """The branch's last BatchNorm, scale from `zero_init_residual`."""
        return self.norm(scale_init=zeros if self.zero_init_residual else ones, name=name)

    @nn.nowrap
    def add_shortcut(self, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
        """`relu(y + shortcut(x))`; the shortcut is 1x1 conv + BN where shapes differ.

        Args:
          x: `[B, H, W, C_in]` block input.
          y: `[B, H / strides, W / strides, filters * expansion]` residual branch.
        """
        residual = x
        if residual.shape != y.shape:
            residual = self.conv(
                self.filters * self.expansion, (1, 1), self.strides,
                name="downsample_conv",
            )(x)
            residual = self.norm(name="downsample_bn")(residual)
        return nn.relu(y + residual)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs with a residual connection (ResNet-18/34); see `ResidualBlock`."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # x: [B, H, W, C_in] -> [B, H / strides, W / strides, filters]
        y = self.conv(self.filters, (3, 3), self.strides, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), name="conv2")(y)
        y = self.last_norm("bn2")(y)
        return self.add_shortcut(x, y)


class BottleneckBlock(ResidualBlock):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual (ResNet-50+).

    See `ResidualBlock`; the output has `4 * filters` channels.
    """

    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # x: [B, H, W, C_in] -> [B, H / strides, W / strides, 4 * filters]
        y = self.conv(self.filters, (1, 1), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), self.strides, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.filters * self.expansion, (1, 1), name="conv3")(y)
        y = self.last_norm("bn3")(y)
        return self.add_shortcut(x, y)


class ResNetBackbone(nn.Module):
    """Stem and four stages; returns the feature map of each, by name.

    Attributes:
        stage_sizes: number of blocks in each of the four stages.
        block_cls: `BasicBlock` or `BottleneckBlock`.
        width: channels of the stem and of the first stage's blocks; each later
            stage doubles it.
        small_inputs: CIFAR-style stem (3x3 stride-1 conv, no max pool), for
            32x32 images; every feature stride is then 4x smaller.
        zero_init_residual: start each block's last BN scale at zero.
        frozen_bn: every BatchNorm uses its running statistics, also in
            training (detectron2's FrozenBN, for fine-tuning pretrained
            weights with small batches); the trainer then also freezes the
            BN scales and biases (`weights.frozen_mask`).
        dtype: compute dtype.
        param_dtype: parameter dtype.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    width: int = 64
    small_inputs: bool = False
    zero_init_residual: bool = False
    frozen_bn: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
        """Maps images [B, H, W, C] to {"stem", "c2", "c3", "c4", "c5"} features.

        Strides relative to the input: stem 4, c2 4, c3 8, c4 16, c5 32.
        """
        conv = functools.partial(
            torch_conv,
            kernel_init=conv_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train or self.frozen_bn,
            momentum=0.9,  # torch's momentum=0.1: running = 0.9 * running + 0.1 * batch
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

        # x: [B, H, W, C]
        if self.small_inputs:
            x = conv(self.width, (3, 3), name="stem_conv")(x)
            x = nn.relu(norm(name="stem_bn")(x))  # [B, H, W, width]
        else:
            x = conv(self.width, (7, 7), 2, name="stem_conv")(x)
            x = nn.relu(norm(name="stem_bn")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            # [B, H / 4, W / 4, width]
        features = {"stem": x}

        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block_cls(
                    filters=self.width * 2**i,
                    conv=conv,
                    norm=norm,
                    strides=2 if i > 0 and j == 0 else 1,
                    zero_init_residual=self.zero_init_residual,
                    name=f"stage{i + 1}_block{j}",
                )(x)
            features[f"c{i + 2}"] = x  # [B, H / 2**(i + 2), W / 2**(i + 2), C_i]
        return features


# ResNet name -> (blocks per stage, block type), as in He et al. (2016), Table 1.
RESNET_DEPTHS: dict[str, tuple[tuple[int, ...], ModuleDef]] = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), BottleneckBlock),
    "resnet101": ((3, 4, 23, 3), BottleneckBlock),
    "resnet152": ((3, 8, 36, 3), BottleneckBlock),
}


def resnet_backbone(name: str, /, **kwargs: Any) -> ResNetBackbone:
    """The `ResNetBackbone` of ResNet `name` (a `RESNET_DEPTHS` key), for detectors."""
    if name not in RESNET_DEPTHS:
        raise UserError(
            f"Unknown backbone {name!r}; use one of {', '.join(RESNET_DEPTHS)}."
        )
    stage_sizes, block_cls = RESNET_DEPTHS[name]
    return ResNetBackbone(stage_sizes=stage_sizes, block_cls=block_cls, **kwargs)


class ResNet(nn.Module):
    """ResNet classifier: `ResNetBackbone`, global average pool, dense head.

    Attributes:
        stage_sizes, block_cls, width, small_inputs, zero_init_residual,
        frozen_bn, dtype, param_dtype: as in `ResNetBackbone`.
        num_classes: number of output logits.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    width: int = 64
    small_inputs: bool = False
    zero_init_residual: bool = False
    frozen_bn: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Maps normalized images [B, H, W, C] to float32 logits [B, num_classes]."""
        features = ResNetBackbone(
            stage_sizes=self.stage_sizes,
            block_cls=self.block_cls,
            width=self.width,
            small_inputs=self.small_inputs,
            zero_init_residual=self.zero_init_residual,
            frozen_bn=self.frozen_bn,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="backbone",
        )(x, train)
        x = jnp.mean(features["c5"], axis=(1, 2))  # [B, C5]
        x = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )(x)
        return x.astype(jnp.float32)  # [B, num_classes]
