"""Mask R-CNN's mask branch (He et al., 2017): head, targets and loss.

For each RoI, a 14x14 RoIAlign of the FPN level its size picks (as for the
box head), four 3x3 convs with ReLU, a 2x2 stride-2 transposed conv to 28x28,
and a 1x1 conv with one mask logit per class; the mask of an RoI is the
channel of its class (ground-truth class in training, predicted class at
inference). This is torchvision's `MaskRCNNHeads` + `MaskRCNNPredictor`,
with detectron2's layout of K class channels (no background channel).

Masks are box-relative: a `[m, m]` mask covers its box, cell `(r, c)` the
box-relative square `[c / m, (c + 1) / m) x [r / m, (r + 1) / m)`. Ground
truth comes the same way (`data.DetectionDecode`'s "masks", `[M, G, G]` over
each ground-truth box), and the target of an RoI is the RoIAlign crop of its
matched ground-truth mask over the RoI (`mask_targets`), thresholded at 0.5.
Predicted masks are pasted into image pixels on the host for evaluation and
drawing (`jaxvision.coco.paste_mask`, `mask_rles`).
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.typing import Dtype

from jaxvision.ops import roi_align as roi_ops

# torchvision's mask head initializes its convs with Kaiming normal (fan out, ReLU).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class MaskHead(nn.Module):
    """RoI features `[B, R, 14, 14, F]` -> per-class mask logits `[B, R, 28, 28, K]`.

    Attributes:
        num_classes: `K`.
        features: channels of the convs and the transposed conv (256 in the paper).
        num_convs: 3x3 convs before the upsampling (4 in the paper).
        dtype: compute dtype; the logits are float32.
        param_dtype: parameter dtype.
    """

    num_classes: int
    features: int = 256
    num_convs: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, rois, height, width, channels = x.shape
        x = x.reshape(batch * rois, height, width, channels)  # [B * R, 14, 14, F]
        for i in range(self.num_convs):
            x = nn.Conv(self.features, (3, 3), padding="SAME", kernel_init=_conv_init,
                        dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv{i}")(x)
            x = nn.relu(x)
        x = Upsample2x(self.features, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="upsample")(x)
        x = nn.relu(x)  # [B * R, 28, 28, F]
        x = nn.Conv(self.num_classes, (1, 1), kernel_init=_conv_init, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="mask_logits")(x)  # [B * R, 28, 28, K]
        return x.reshape(batch, rois, *x.shape[1:]).astype(jnp.float32)  # [B, R, 28, 28, K]


class Upsample2x(nn.Module):
    """A 2x2 stride-2 transposed convolution (torch's `ConvTranspose2d(C, F, 2, stride=2)`).

    Each input pixel fills its own 2x2 output block, so it is one matmul and a
    reshape: XLA:CPU runs `nn.ConvTranspose`'s gradient ~15x slower than this
    (4.7 s vs 0.3 s for a batch of 512 RoIs at 14x14x64). The parameters are
    those of a transposed convolution: kernel `[2, 2, C, F]` and bias `[F]`.

    Attributes:
        features: output channels `F`.
        dtype: compute dtype.
        param_dtype: parameter dtype.
    """

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[N, H, W, C]` -> `[N, 2H, 2W, F]`."""
        n, h, w, c = x.shape
        kernel = self.param("kernel", _conv_init, (2, 2, c, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        y = jnp.einsum("nhwc,abcf->nhawbf", x, kernel)  # [N, H, 2, W, 2, F]
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias  # [N, 2H, 2W, F]


def class_masks(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The channel of each RoI's class: `[..., m, m, K]`, `[...]` -> `[..., m, m]`."""
    index = labels[..., None, None, None].astype(jnp.int32)  # [..., 1, 1, 1]
    return jnp.take_along_axis(logits, index, axis=-1)[..., 0]  # [..., m, m]


def mask_targets(
    gt_masks: jax.Array, gt_boxes: jax.Array, rois: jax.Array, matched: jax.Array,
    size: int, sampling_ratio: int = 2,
) -> jax.Array:
    """Binary mask targets of ONE image's RoIs: their matched ground truth, cropped to the RoI.

    The ground-truth mask covers its box on a `G x G` grid; the RoI, in that
    grid's coordinates, is RoIAligned from it at `size x size` and thresholded
    at 0.5. Parts of the RoI outside the ground-truth box are background.

    Args:
      gt_masks: `[M, G, G]` box-relative masks in [0, 1].
      gt_boxes: `[M, 4]` xyxy pixels, the boxes the masks cover.
      rois: `[R, 4]` xyxy pixels.
      matched: `[R]` int32 index of each RoI's ground truth (any value for
        RoIs the caller ignores).
      size: output side `m` (28).
      sampling_ratio: RoIAlign samples per bin along each axis.

    Returns:
      `[R, m, m]` float32 in {0, 1}.
    """
    grid = gt_masks.shape[-1]
    chex.assert_shape(gt_masks, (None, grid, grid))
    masks = gt_masks[matched].astype(jnp.float32)[..., None]  # [R, G, G, 1]
    boxes = gt_boxes[matched].astype(jnp.float32)  # [R, 4]
    origin = jnp.tile(boxes[:, :2], 2)  # [R, 4] as (x0, y0, x0, y0)
    extent = jnp.tile(jnp.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6), 2)  # [R, 4] (w, h, w, h)
    in_grid = (rois.astype(jnp.float32) - origin) / extent * grid  # [R, 4] in mask cells
    crops = roi_ops.roi_align(masks, in_grid[:, None, :], (size, size), 1.0, sampling_ratio)
    return (crops[:, 0, :, :, 0] >= 0.5).astype(jnp.float32)  # [R, m, m]


def mask_loss(
    logits: jax.Array, labels: jax.Array, targets: jax.Array, weights: jax.Array
) -> jax.Array:
    """Per-pixel sigmoid cross-entropy of each RoI's class channel, averaged over RoIs.

    Args:
      logits: `[R, m, m, K]` mask logits.
      labels: `[R]` int class of each RoI.
      targets: `[R, m, m]` in {0, 1}.
      weights: `[R]` 1 for the RoIs that count (positives), 0 otherwise.

    Returns:
      The float32 scalar: the mean over pixels and counted RoIs (0 with none).
    """
    chex.assert_rank(logits, 4)
    chex.assert_shape(targets, logits.shape[:3])
    chex.assert_shape([labels, weights], logits.shape[:1])
    bce = optax.sigmoid_binary_cross_entropy(class_masks(logits, labels), targets)  # [R, m, m]
    per_roi = jnp.mean(bce, axis=(1, 2))  # [R]
    return jnp.sum(per_roi * weights) / jnp.maximum(jnp.sum(weights), 1.0)
