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
"""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from jaxvision import losses
from jaxvision.models.fpn import FPN, ConvTower, head_init
from jaxvision.models.resnet import resnet_backbone
from jaxvision.ops import anchors as anchor_ops
from jaxvision.ops import boxes as box_ops

FOREGROUND, BACKGROUND, IGNORE = 1, 0, -1  # `match_anchors` states.


class RetinaNet(nn.Module):
    """RetinaNet detector; defaults are the paper's COCO setting (with GN heads).

    Attributes:
        num_classes: `K`, one sigmoid classifier per class (no background class).
        backbone: a `RESNET_DEPTHS` name.
        backbone_width: `ResNetBackbone.width` (64 is the real ResNet).
        fpn_features: channels of every pyramid level and of the head towers.
        head_convs: 3x3 convs in each tower (4 in the paper).
        norm_groups: GroupNorm groups in the towers (0: no normalization, as in
            the paper and detectron2).
        prior_prob: initial foreground probability of every logit, so the
            ~100k background anchors do not swamp the first steps.
        levels: pyramid levels; level `l` has stride `2**l`.
        anchor_scale: anchor side in strides at scale 1 (4: 32 px on P3).
        anchor_scales: multipliers on the side within a level (3 octave steps).
        aspect_ratios: anchor `height / width`.
        foreground_iou: IoU from which an anchor is foreground.
        background_iou: IoU below which an anchor is background; anchors in
            `[background_iou, foreground_iou)` are ignored by the loss.
        allow_low_quality_matches: also make each box's best anchors foreground,
            so no box (a small or thin one) is left without an anchor.
        focal_alpha: focal loss weight of the positives.
        focal_gamma: focal loss focusing exponent.
        smooth_l1_beta: quadratic zone of the box loss (detectron2: 0.1).
        box_loss_weight: weight of the box loss in the total.
        dtype: compute dtype; outputs are float32.
        param_dtype: parameter dtype.
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_width: int = 64
    fpn_features: int = 256
    head_convs: int = 4
    norm_groups: int = 32
    prior_prob: float = 0.01
    levels: tuple[int, ...] = (3, 4, 5, 6, 7)
    anchor_scale: float = 4.0
    anchor_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    foreground_iou: float = 0.5
    background_iou: float = 0.4
    allow_low_quality_matches: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 0.1
    box_loss_weight: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

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
        features = resnet_backbone(
            self.backbone,
            width=self.backbone_width,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="backbone",
        )(images, train)
        pyramid = FPN(
            self.fpn_features,
            p6_from="c5",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fpn",
        )({k: features[k] for k in ("c3", "c4", "c5")})

        def tower(name: str) -> ConvTower:
            return ConvTower(
                self.fpn_features,
                self.head_convs,
                self.norm_groups,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        # One instance of each, applied to every level: weights shared across levels.
        cls_tower, box_tower = tower("cls_tower"), tower("box_tower")
        head_conv = functools.partial(
            nn.Conv,
            kernel_size=(3, 3),
            padding="SAME",
            kernel_init=head_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        prior_bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        cls_logits = head_conv(
            self.num_anchors * self.num_classes,
            bias_init=nn.initializers.constant(prior_bias),
            name="cls_logits",
        )
        box_deltas = head_conv(self.num_anchors * 4, name="box_deltas")

        logits, deltas = [], []
        for level in self.levels:
            p = pyramid[f"p{level}"]  # [B, h, w, F]
            # [B, h, w, A * K] -> [B, h * w * A, K]: rows (y, x, anchor) as anchors.
            logits.append(cls_logits(cls_tower(p)).reshape(batch, -1, self.num_classes))
            # [B, h, w, A * 4] -> [B, h * w * A, 4]
            deltas.append(box_deltas(box_tower(p)).reshape(batch, -1, 4))
        return {
            "logits": jnp.concatenate(logits, axis=1).astype(jnp.float32),  # [B, N, K]
            "deltas": jnp.concatenate(deltas, axis=1).astype(jnp.float32),  # [B, N, 4]
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
        foreground = state == FOREGROUND  # [B, N]
        counted = state != IGNORE  # [B, N]
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
      state `[N]` int32: 1 foreground, 0 background, -1 ignore.
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
        FOREGROUND,
        jnp.where(best < background_iou, BACKGROUND, IGNORE),
    ).astype(jnp.int32)  # [N]
    if allow_low_quality_matches:
        highest = jnp.max(iou, axis=0)  # [M] best IoU of each box; -1 on padding
        is_best = (iou == highest[None, :]) & (highest[None, :] > 0)  # [N, M]
        state = jnp.where(jnp.any(is_best, axis=1), FOREGROUND, state)  # [N]
    return index, state
