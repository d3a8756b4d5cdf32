"""What single-stage dense detectors (FCOS, RetinaNet) share: backbone, pyramid, towers.

A dense detector is a ResNet and an FPN (`backbone_pyramid`), two towers of
3x3 convs (`ConvTower`: "cls_tower" and "box_tower") whose weights are
shared across the pyramid levels, and small 3x3 prediction convs on top
(`head_conv`), run on every level with the rows of all levels
concatenated, P3 first (`DenseDetector.per_level`). A new dense head
subclasses `DenseDetector` and writes only its prediction convs, targets,
loss and box decoding.

The helpers are called inside the detector's `@nn.compact __call__` and build
their modules with explicit names, so those are the detector's own children:
the parameter tree stays flat (`backbone`, `fpn`, `cls_tower`, `box_tower`
and the detector's prediction convs).
"""

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer

from jaxvision.models.fpn import FPN
from jaxvision.models.resnet import resnet_backbone
from jaxvision.ops import nms

# Both papers initialize head convs from N(0, 0.01) with zero bias.
head_init = nn.initializers.normal(stddev=0.01)


def prior_bias_init(prior_prob: float) -> Initializer:
    """Constant bias `-log((1 - p) / p)`: every sigmoid starts at probability `p`.

    With a small `p` (0.01) the focal loss of the many background locations
    does not swamp the first steps (RetinaNet paper, Sec. 4.1).
    """
    return nn.initializers.constant(-math.log((1 - prior_prob) / prior_prob))


def head_conv(
    features: int,
    name: str,
    dtype: Dtype,
    param_dtype: Dtype,
    bias_init: Initializer = nn.initializers.zeros,
) -> nn.Conv:
    """A head's 3x3 conv (tower or prediction), kernel from `head_init`.

    Args:
      features: output channels.
      name: the parameter name, a child of the calling module.
      dtype: compute dtype.
      param_dtype: parameter dtype.
      bias_init: zeros, or `prior_bias_init(...)` for a classifier.
    """
    return nn.Conv(
        features, (3, 3), padding="SAME", kernel_init=head_init, bias_init=bias_init,
        dtype=dtype, param_dtype=param_dtype, name=name,
    )


class ConvTower(nn.Module):
    """A detection head's tower: `num_convs` x (3x3 conv, GroupNorm, ReLU).

    One instance is applied to every pyramid level, so the weights (GroupNorm's
    too) are shared across levels, as in RetinaNet and FCOS.

    Attributes:
        features: channels of every conv.
        num_convs: depth of the tower (4 in the papers).
        norm_groups: GroupNorm groups (32 in FCOS); 0 means no normalization.
        dtype: compute dtype.
        param_dtype: parameter dtype.
    """

    features: int
    num_convs: int
    norm_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, h, w, F_in]` -> `[B, h, w, features]`."""
        for i in range(self.num_convs):
            x = head_conv(self.features, f"conv{i}", self.dtype, self.param_dtype)(x)
            if self.norm_groups:
                x = nn.GroupNorm(
                    num_groups=self.norm_groups, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f"norm{i}",
                )(x)
            x = nn.relu(x)
        return x


def backbone_pyramid(
    backbone: str,
    backbone_width: int,
    fpn_features: int,
    p6_from: str,
    dtype: Dtype,
    param_dtype: Dtype,
    images: jax.Array,
    train: bool,
    min_level: int = 3,
    max_level: int = 7,
    frozen_bn: bool = False,
) -> dict[str, jax.Array]:
    """ResNet `backbone`, then `FPN`: the children "backbone" and "fpn" of the caller.

    Call it inside a detector's `@nn.compact` method.

    Args:
      backbone: a `RESNET_DEPTHS` name.
      backbone_width: `ResNetBackbone.width` (64 for the real ResNets).
      fpn_features: channels `F` of every pyramid level.
      p6_from: "c5" (RetinaNet), "p5" (FCOS) or "pool" (Faster R-CNN), see `FPN`.
      dtype: compute dtype.
      param_dtype: parameter dtype.
      images: `[B, H, W, C]` normalized images.
      train: batch statistics in the backbone's BatchNorm (else running ones).
      min_level, max_level: the pyramid's levels, P3-P7 or P2-P6 (see `FPN`).
      frozen_bn: the backbone's BatchNorm always uses running statistics
        (`ResNetBackbone.frozen_bn`).

    Returns:
      `{"p<min_level>": [B, H / 2**min_level, W / 2**min_level, F], ...,
      "p<max_level>": ...}` (sizes rounded up).
    """
    c = resnet_backbone(
        backbone, width=backbone_width, frozen_bn=frozen_bn, dtype=dtype,
        param_dtype=param_dtype, name="backbone",
    )(images, train)  # {"c3": [B, H / 8, W / 8, C3], ..., "c5": ...}
    return FPN(
        fpn_features, p6_from=p6_from, min_level=min_level, max_level=max_level,
        dtype=dtype, param_dtype=param_dtype, name="fpn",
    )(c)


class DenseDetector(nn.Module):
    """The fields and layers of a single-stage dense detector; subclasses add the head.

    A subclass implements `__call__` (with `backbone_pyramid`, `head_conv` and
    `self.per_level`), `loss`, `detect` and `level_sizes`. This class turns
    them into the two methods `jaxvision.tasks.detection` calls on every
    detector (dense or two-stage): `training_loss` and `predict`.

    Attributes:
        num_classes: `K`, one sigmoid classifier per class (no background class).
        backbone: a `RESNET_DEPTHS` name.
        backbone_width: `ResNetBackbone.width` (64 for the real ResNets).
        frozen_bn: the backbone's BatchNorm always uses running statistics
            (`ResNetBackbone.frozen_bn`; for fine-tuning pretrained weights).
        fpn_features: channels of every pyramid level and of the head towers.
        head_convs: 3x3 convs in each of the two towers (4 in the papers).
        norm_groups: GroupNorm groups in the towers (0: no normalization, as
            in the RetinaNet paper and detectron2's RetinaNet).
        prior_prob: initial foreground probability of every classifier
            (`prior_bias_init`).
        levels: pyramid levels used (P3-P7); level `l` has stride `2**l`.
        focal_alpha: focal loss weight of the positives.
        focal_gamma: focal loss focusing exponent.
        box_loss_weight: weight of the box loss in the total loss.
        dtype: compute dtype; the outputs are float32.
        param_dtype: parameter dtype.
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_width: int = 64
    frozen_bn: bool = False
    fpn_features: int = 256
    head_convs: int = 4
    norm_groups: int = 32
    prior_prob: float = 0.01
    levels: tuple[int, ...] = (3, 4, 5, 6, 7)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss_weight: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.nowrap
    def per_level(
        self,
        pyramid: dict[str, jax.Array],
        predict: Callable[[int, jax.Array, jax.Array], tuple[jax.Array, ...]],
    ) -> tuple[jax.Array, ...]:
        """Runs the towers and `predict` on every level; concatenates the rows, P3 first.

        Builds "cls_tower" and "box_tower" (one instance each for all levels).

        Args:
          pyramid: `backbone_pyramid`'s levels, `{"p3": [B, h_3, w_3, F], ...}`.
          predict: `(level, cls_features, box_features)` -> a tuple of
            `[B, rows_l, ...]` arrays for that level, given the towers' outputs
            `[B, h_l, w_l, F]`.

        Returns:
          `predict`'s tuple with each entry concatenated over `self.levels`
          along the rows, `[B, sum(rows_l), ...]`.
        """
        tower = functools.partial(
            ConvTower, self.fpn_features, self.head_convs, self.norm_groups,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        cls_tower, box_tower = tower(name="cls_tower"), tower(name="box_tower")
        rows = []
        for level in self.levels:
            x = pyramid[f"p{level}"]  # [B, h, w, F]
            rows.append(predict(level, cls_tower(x), box_tower(x)))
        return tuple(jnp.concatenate(parts, axis=1) for parts in zip(*rows, strict=True))

    def training_loss(
        self, images: jax.Array, targets: dict[str, jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The detector's loss on a training batch (call with `method=` and `train` BatchNorm).

        Args:
          images: `[B, H, W, C]` normalized, augmented images.
          targets: "boxes" `[B, M, 4]` xyxy pixels, "labels" `[B, M]` int32 and
            "box_mask" `[B, M]` bool (other keys are ignored).

        Returns:
          `loss`'s scalar loss and metrics.
        """
        outputs = self(images, train=True)
        return self.loss(
            outputs, targets["boxes"], targets["labels"], targets["box_mask"], images.shape[1:3]
        )

    def predict(
        self, images: jax.Array, *, score_threshold: float, pre_nms_topk: int,
        nms_iou: float, max_detections: int,
    ) -> dict[str, jax.Array]:
        """Final detections of normalized images `[B, H, W, C]`, in input pixels.

        Per pyramid level, the `pre_nms_topk` best (location, class) scores are
        kept; all levels' candidates then go through class-aware NMS
        (`nms_iou`), which keeps at most `max_detections` boxes scoring at
        least `score_threshold`. The keyword arguments are `config.detect`.

        Returns:
          "boxes" `[B, D, 4]` xyxy, "scores" `[B, D]`, "labels" `[B, D]` int32 and
          "valid" `[B, D]` bool (False: empty slot), best first; D = max_detections.
        """
        detections, _ = self.postprocess(
            self(images, train=False), images.shape[1:3], score_threshold=score_threshold,
            pre_nms_topk=pre_nms_topk, nms_iou=nms_iou, max_detections=max_detections,
        )
        return detections

    @nn.nowrap
    def postprocess(
        self, outputs: dict[str, jax.Array], image_size: tuple[int, int], *,
        score_threshold: float, pre_nms_topk: int, nms_iou: float, max_detections: int,
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """`predict`'s per-level top-k and NMS on `__call__`'s outputs.

        Returns:
          `predict`'s detections, and int32 `[B, D]` the output row (point or
          anchor, into `N`) each detection came from (0 on empty slots), so a
          subclass can gather more of that row's outputs (`models.jde`).
        """
        boxes, scores = self.detect(outputs, image_size)  # [B, N, 4], [B, N, K]
        batch, _, num_classes = scores.shape

        candidates = []  # Per level: (boxes [B, k, 4], scores [B, k], labels [B, k], rows [B, k]).
        start = 0
        for size in self.level_sizes(image_size):
            level = scores[:, start : start + size].reshape(batch, size * num_classes)  # [B, n*K]
            top_scores, flat = jax.lax.top_k(level, min(pre_nms_topk, size * num_classes))
            rows = start + flat // num_classes  # [B, k] into N
            top_boxes = jnp.take_along_axis(boxes, rows[..., None], axis=1)  # [B, k, 4]
            candidates.append((top_boxes, top_scores, flat % num_classes, rows))
            start += size
        cand_boxes, cand_scores, cand_labels, cand_rows = (
            jnp.concatenate(parts, axis=1) for parts in zip(*candidates)
        )  # [B, C, 4], [B, C], [B, C], [B, C]
        kept = nms.batched_nms(
            cand_boxes, cand_scores, cand_labels, nms_iou, max_detections,
            score_threshold=score_threshold,
        )
        detections = {
            "boxes": kept["boxes"],
            "scores": kept["scores"],
            "labels": kept["classes"].astype(jnp.int32),
            "valid": kept["valid"],
        }
        rows = jnp.where(
            kept["valid"], jnp.take_along_axis(cand_rows, kept["indices"], axis=1), 0
        )  # [B, D]
        return detections, rows.astype(jnp.int32)
