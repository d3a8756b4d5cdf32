"""RetinaNet (Lin et al., 2017, "Focal Loss for Dense Object Detection").

ResNet -> FPN (P3-P7, P6 from C5) -> two towers shared across levels -> at
every cell, `A` anchors (3 scales x 3 aspect ratios) each with `K` sigmoid
class logits and 4 box deltas. Anchors are matched to ground truth by IoU
(>= 0.5 foreground, < 0.4 background, in between ignored, plus each box's
best anchors); the loss is the focal loss over non-ignored anchors plus
smooth L1 on the deltas of foreground anchors, both divided by the number of
foreground anchors in the batch. Targets and losses follow detectron2's
`RetinaNet`, except that the normalizer is the batch's count rather than an
EMA of it, and the towers have GroupNorm by default (as in torchvision's
RetinaNet v2 and the FCOS paper's comparison).

Boxes are xyxy in pixels (see `jaxvision.ops.boxes`). Prediction rows are all
levels concatenated in level order (P3 first), each row-major over
`(y, x, anchor)`, in the order of `jaxvision.ops.anchors.anchors()`.

Backbone, FPN, towers and the per-level loop are `jaxvision.models.dense_head`'s;
this file holds the prediction convs, anchor matching, loss and box decoding.
"""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import losses
from jaxvision.models.dense_head import (
    DenseDetector,
    backbone_pyramid,
    head_conv,
    prior_bias_init,
)
from jaxvision.ops import anchors as anchor_ops
from jaxvision.ops import boxes as box_ops

# The states `match_anchors` gives anchors.
MATCH_FOREGROUND, MATCH_BACKGROUND, MATCH_IGNORE = 1, 0, -1


class RetinaNet(DenseDetector):
    """RetinaNet detector; defaults are the paper's COCO setting (with GN heads).

    Its fields are those of `DenseDetector` (classes, backbone, towers, focal
    loss, dtypes) and the anchors' and matching's:

    Attributes:
        anchor_scale: anchor side in strides at scale 1 (4: 32 px on P3).
        anchor_scales: multipliers on the side within a level (3 octave steps).
        aspect_ratios: anchor `height / width`.
        foreground_iou: IoU from which an anchor is foreground.
        background_iou: IoU below which an anchor is background; anchors in
            `[background_iou, foreground_iou)` are ignored by the loss.
        allow_low_quality_matches: also make each box's best anchors foreground,
            so no box (a small or thin one) is left without an anchor.
        smooth_l1_beta: quadratic zone of the box loss (detectron2: 0.1).
    """

    anchor_scale: float = 4.0
    anchor_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    foreground_iou: float = 0.5
    background_iou: float = 0.4
    allow_low_quality_matches: bool = True
    smooth_l1_beta: float = 0.1

    @property
    def num_anchors(self) -> int:
        """`A`, anchors per feature-map cell."""
        return len(self.anchor_scales) * len(self.aspect_ratios)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        """Predictions for every anchor.

        Args:
          images: `[B, H, W, C]` normalized images.
          train: BatchNorm in the backbone uses batch statistics.

        Returns:
          `{"logits": [B, N, K], "deltas": [B, N, 4]}` float32, `N = sum(level_sizes)`,
          deltas `(dx, dy, dw, dh)` relative to the anchors (`ops.boxes.encode`).
        """
        chex.assert_rank(images, 4)
        batch = images.shape[0]
        pyramid = backbone_pyramid(
            self.backbone, self.backbone_width, self.fpn_features, "c5", self.dtype,
            self.param_dtype, images, train, frozen_bn=self.frozen_bn,
        )
        # One instance of each conv, applied to every level: shared weights.
        conv = functools.partial(head_conv, dtype=self.dtype, param_dtype=self.param_dtype)
        prior = prior_bias_init(self.prior_prob)
        cls_logits = conv(self.num_anchors * self.num_classes, "cls_logits", bias_init=prior)
        box_deltas = conv(self.num_anchors * 4, "box_deltas")

        def predict(level: int, cls_x: jax.Array, box_x: jax.Array) -> tuple:
            del level  # Every level has the same head.
            # [B, h, w, A * K] -> [B, h * w * A, K]: rows (y, x, anchor) as anchors.
            logits = cls_logits(cls_x).reshape(batch, -1, self.num_classes)
            deltas = box_deltas(box_x).reshape(batch, -1, 4)  # [B, h * w * A, 4]
            return logits, deltas

        logits, deltas = self.per_level(pyramid, predict)
        return {
            "logits": logits.astype(jnp.float32),  # [B, N, K]
            "deltas": deltas.astype(jnp.float32),  # [B, N, 4]
        }

    def level_sizes(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        """Rows per level, `h_l * w_l * A`, for a static `image_size = (H, W)`."""
        return tuple(
            math.prod(anchor_ops.feature_size(image_size, stride)) * self.num_anchors
            for stride in anchor_ops.fpn_strides(self.levels)
        )

    def anchor_boxes(self, image_size: tuple[int, int]) -> jax.Array:
        """`[N, 4]` xyxy anchors of all levels, in the prediction rows' order."""
        return jnp.concatenate(
            anchor_ops.anchors(
                image_size,
                self.levels,
                self.anchor_scale,
                self.anchor_scales,
                self.aspect_ratios,
            ),
            axis=0,
        )  # [N, 4]

    def loss(
        self,
        outputs: dict[str, jax.Array],
        boxes: jax.Array,
        labels: jax.Array,
        box_mask: jax.Array,
        image_size: tuple[int, int],
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Focal loss + smooth L1, normalized by the batch's foreground anchors.

        Args:
          outputs: `__call__`'s `{"logits": [B, N, K], "deltas": [B, N, 4]}`.
          boxes: `[B, M, 4]` xyxy ground truth in pixels, padded.
          labels: `[B, M]` int32 classes in `[0, K)`.
          box_mask: `[B, M]` bool, False on padding rows (ignored whatever they hold).
          image_size: static `(H, W)` of the input images.

        Returns:
          The float32 scalar loss and scalar metrics "loss", "cls_loss",
          "box_loss" and "num_positives" (foreground anchors in the batch).
        """
        logits = outputs["logits"].astype(jnp.float32)  # [B, N, K]
        deltas = outputs["deltas"].astype(jnp.float32)  # [B, N, 4]
        batch, num_rows, num_classes = logits.shape
        num_boxes = boxes.shape[1]
        chex.assert_shape(deltas, (batch, num_rows, 4))
        chex.assert_shape(boxes, (batch, num_boxes, 4))
        chex.assert_shape([labels, box_mask], (batch, num_boxes))
        anchors = self.anchor_boxes(image_size)  # [N, 4]
        chex.assert_shape(anchors, (num_rows, 4))

        # Padding rows become harmless zeros, so NaN or garbage cannot leak in.
        boxes = boxes.astype(jnp.float32)  # [B, M, 4]
        boxes = jnp.where(box_mask[..., None], boxes, 0.0)  # [B, M, 4]
        labels = jnp.where(box_mask, labels, 0)  # [B, M]
        match = functools.partial(
            match_anchors,
            foreground_iou=self.foreground_iou,
            background_iou=self.background_iou,
            allow_low_quality_matches=self.allow_low_quality_matches,
        )
        index, state = jax.vmap(match, in_axes=(None, 0, 0))(anchors, boxes, box_mask)
        # index, state: [B, N]
        foreground = state == MATCH_FOREGROUND  # [B, N]
        counted = state != MATCH_IGNORE  # [B, N]
        num_positives = jnp.sum(foreground).astype(jnp.float32)
        normalizer = jnp.maximum(num_positives, 1.0)

        matched_labels = jnp.take_along_axis(labels, index, axis=1)  # [B, N]
        targets = jax.nn.one_hot(matched_labels, num_classes) * foreground[..., None]
        # targets: [B, N, K], all zeros on background rows.
        cls_loss = losses.sigmoid_focal_loss(
            logits, targets, self.focal_alpha, self.focal_gamma
        )  # [B, N, K]
        cls_loss = jnp.sum(cls_loss * counted[..., None]) / normalizer

        matched = jnp.take_along_axis(boxes, index[..., None], axis=1)  # [B, N, 4]
        # Non-foreground rows regress onto their own anchor: finite, then masked out.
        matched = jnp.where(foreground[..., None], matched, anchors)  # [B, N, 4]
        box_targets = box_ops.encode(matched, anchors)  # [B, N, 4]
        beta = self.smooth_l1_beta
        box_loss = losses.smooth_l1_loss(deltas, box_targets, beta)  # [B, N, 4]
        box_loss = jnp.sum(box_loss * foreground[..., None]) / normalizer

        total = cls_loss + self.box_loss_weight * box_loss
        return total, {
            "loss": total,
            "cls_loss": cls_loss,
            "box_loss": box_loss,
            "num_positives": num_positives,
        }

    def detect(
        self, outputs: dict[str, jax.Array], image_size: tuple[int, int]
    ) -> tuple[jax.Array, jax.Array]:
        """Every anchor's decoded box and class scores, before NMS.

        Args:
          outputs: `__call__`'s `{"logits": [B, N, K], "deltas": [B, N, 4]}`.
          image_size: static `(H, W)` of the input images.

        Returns:
          boxes `[B, N, 4]` float32 xyxy pixels clipped to the image, and
          scores `[B, N, K]` float32 sigmoid probabilities.
        """
        logits = outputs["logits"].astype(jnp.float32)  # [B, N, K]
        deltas = outputs["deltas"].astype(jnp.float32)  # [B, N, 4]
        chex.assert_rank(logits, 3)
        chex.assert_shape(deltas, (*logits.shape[:2], 4))
        anchors = self.anchor_boxes(image_size)  # [N, 4]
        boxes = box_ops.decode(deltas, anchors)  # [B, N, 4]
        boxes = box_ops.clip(boxes, *image_size)  # [B, N, 4]
        return boxes, jax.nn.sigmoid(logits)


def match_anchors(
    anchors: jax.Array,
    boxes: jax.Array,
    box_mask: jax.Array,
    foreground_iou: float,
    background_iou: float,
    allow_low_quality_matches: bool,
) -> tuple[jax.Array, jax.Array]:
    """Matches the anchors of ONE image to its ground truth (detectron2's `Matcher`).

    Each anchor takes the real box it overlaps most. Its state is foreground
    if that IoU is `>= foreground_iou`, background if `< background_iou`, and
    ignore in between. With `allow_low_quality_matches`, for every real box
    the anchors whose IoU with it equals its highest IoU over all anchors
    (ties included, and only if that IoU is > 0) become foreground too (Faster
    R-CNN's RPN rule (i)). As in detectron2's code, such an anchor keeps its own
    best box as its match: that is the box that chose it unless the anchor
    overlaps another box even more. Padding columns are never matched, and
    with no real box every anchor is background.

    Args:
      anchors: `[N, 4]` xyxy anchors.
      boxes: `[M, 4]` xyxy ground truth (padded).
      box_mask: `[M]` bool, False on padding.
      foreground_iou: IoU from which an anchor is foreground.
      background_iou: IoU below which an anchor is background.
      allow_low_quality_matches: add each box's best anchors to the foreground.

    Returns:
      index `[N]` int32: each anchor's matched box (meaningful where foreground;
      never a padding column while the image has a real box), and
      state `[N]` int32: `MATCH_FOREGROUND` (1), `MATCH_BACKGROUND` (0) or
      `MATCH_IGNORE` (-1).
    """
    chex.assert_shape(anchors, (None, 4))
    chex.assert_shape(boxes, (None, 4))
    chex.assert_shape(box_mask, boxes.shape[:1])
    iou = box_ops.pairwise_iou(anchors, boxes)  # [N, M]
    iou = jnp.where(box_mask[None, :], iou, -1.0)  # [N, M]: padding below any real IoU
    index = jnp.argmax(iou, axis=1).astype(jnp.int32)  # [N]
    best = jnp.max(iou, axis=1)  # [N]
    state = jnp.where(
        best >= foreground_iou,
        MATCH_FOREGROUND,
        jnp.where(best < background_iou, MATCH_BACKGROUND, MATCH_IGNORE),
    ).astype(jnp.int32)  # [N]
    if allow_low_quality_matches:
        highest = jnp.max(iou, axis=0)  # [M] best IoU of each box; -1 on padding
        is_best = (iou == highest[None, :]) & (highest[None, :] > 0)  # [N, M]
        state = jnp.where(jnp.any(is_best, axis=1), MATCH_FOREGROUND, state)  # [N]
    return index, state
