"""Faster R-CNN with FPN (Ren et al., 2015; Lin et al., 2017), and Mask R-CNN (He et al., 2017).

ResNet -> FPN (P2-P6, P6 by max pool) -> region proposal network (RPN) ->
proposals -> 7x7 RoIAlign -> box head (two FC layers, class logits and
class-specific box deltas) [-> 14x14 RoIAlign -> mask head, `mask_head.py`].
Defaults are torchvision's `fasterrcnn_resnet50_fpn` / `maskrcnn_resnet50_fpn`.

Static shapes everywhere, so one jitted step serves every batch:
  - the RPN keeps `rpn_pre_nms_topk` anchors per level, NMS (per level, IoU
    0.7) keeps at most `rpn_post_nms_topk` proposals per image, with a
    validity mask instead of a variable count; proposals carry no gradient;
  - training samples a fixed number of anchors (`rpn_batch_size`, at most
    half positive) and of RoIs (`roi_batch_size`, at most a quarter
    positive, the ground-truth boxes appended to the proposals) with
    `ops.sampling.balanced_sample`, seeded from the step's "sampling" RNG;
  - the mask head trains on the sample's positive slots only (the sample
    puts positives first), `int(roi_batch_size * roi_positive_fraction)`;
  - inference keeps the `pre_nms_topk` best (proposal, class) scores and
    runs class-aware NMS, returning the padded output format of every
    jaxvision detector ("boxes", "scores", "labels", "valid", and "masks").

Classes: labels are `0..K-1`; the box classifier has `K + 1` logits, the last
one background (detectron2's layout), and `K` class-specific deltas.
Losses are torchvision's: binary cross-entropy on the sampled anchors and
smooth L1 (beta 1/9) on the positive ones, both over the number sampled;
cross-entropy over the sampled RoIs and smooth L1 (beta 1/9) on the positive
ones' deltas (weights 10, 10, 5, 5) over the number sampled.

Boxes are xyxy in input pixels (`jaxvision.ops.boxes`).
"""

import functools
from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.typing import Dtype

from jaxvision import losses
from jaxvision.errors import UserError
from jaxvision.models.fpn import FPN
from jaxvision.models.mask_head import MaskHead, class_masks, mask_loss, mask_targets
from jaxvision.models.resnet import resnet_backbone
from jaxvision.models.retinanet import MATCH_BACKGROUND, MATCH_FOREGROUND, match_anchors
from jaxvision.ops import anchors as anchor_ops
from jaxvision.ops import boxes as box_ops
from jaxvision.ops import nms
from jaxvision.ops import roi_align as roi_ops
from jaxvision.ops.sampling import balanced_sample

RPN_LEVELS = (2, 3, 4, 5, 6)  # Pyramid levels with anchors (strides 4 to 64).
ROI_LEVELS = (2, 3, 4, 5)  # Levels the RoIs are pooled from (P6 only proposes).
_SMOOTH_L1_BETA = 1 / 9  # torchvision's, for both stages.
_MIN_BOX_SIZE = 1e-3  # Proposals and detections narrower than this (pixels) are dropped.


class RPNHead(nn.Module):
    """Region proposal head, shared by all levels: 3x3 conv, ReLU, 1x1 objectness and deltas.

    Attributes:
        num_anchors: `A` anchors per cell.
        features: channels of the pyramid and the 3x3 conv.
        dtype: compute dtype; outputs are float32.
        param_dtype: parameter dtype.
    """

    num_anchors: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """`[B, h_l, w_l, F]` per level -> objectness logits `[B, N]` and deltas `[B, N, 4]`.

        Rows are the levels concatenated in order, each row-major over
        `(y, x, anchor)` as `ops.anchors.anchors`.
        """
        init = nn.initializers.normal(stddev=0.01)  # torchvision's
        conv = functools.partial(nn.Conv, kernel_init=init, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        shared = conv(self.features, (3, 3), padding="SAME", name="conv")
        objectness = conv(self.num_anchors, (1, 1), name="objectness")
        box_deltas = conv(self.num_anchors * 4, (1, 1), name="deltas")
        logits, deltas = [], []
        for x in levels:
            x = nn.relu(shared(x))  # [B, h, w, F]
            batch = x.shape[0]
            logits.append(objectness(x).reshape(batch, -1))  # [B, h * w * A]
            deltas.append(box_deltas(x).reshape(batch, -1, 4))  # [B, h * w * A, 4]
        return (jnp.concatenate(logits, axis=1).astype(jnp.float32),
                jnp.concatenate(deltas, axis=1).astype(jnp.float32))


class BoxHead(nn.Module):
    """RoI features `[B, R, 7, 7, F]` -> class logits `[B, R, K + 1]` and deltas `[B, R, K, 4]`.

    Two fully connected layers with ReLU (torchvision's `TwoMLPHead`), then
    the classifier (background last) and class-specific box deltas.

    Attributes:
        num_classes: `K`.
        features: width of the two FC layers (1024 in the paper).
        dtype: compute dtype; outputs are float32.
        param_dtype: parameter dtype.
    """

    num_classes: int
    features: int = 1024
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        batch, rois = x.shape[:2]
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.reshape(batch, rois, -1)  # [B, R, 7 * 7 * F]
        x = nn.relu(dense(self.features, name="fc6")(x))  # [B, R, D]
        x = nn.relu(dense(self.features, name="fc7")(x))  # [B, R, D]
        logits = dense(self.num_classes + 1, kernel_init=nn.initializers.normal(0.01),
                       name="cls_logits")(x)  # [B, R, K + 1]
        deltas = dense(self.num_classes * 4, kernel_init=nn.initializers.normal(0.001),
                       name="box_deltas")(x)  # [B, R, 4K]
        return (logits.astype(jnp.float32),
                deltas.reshape(batch, rois, self.num_classes, 4).astype(jnp.float32))


class FasterRCNN(nn.Module):
    """Faster R-CNN (ResNet FPN), or Mask R-CNN with `with_masks=True`.

    Attributes:
        num_classes: `K` object classes (background is not one of them).
        backbone: a `RESNET_DEPTHS` name.
        backbone_width: `ResNetBackbone.width` (64 for the real ResNets).
        frozen_bn: the backbone's BatchNorm always uses running statistics
            (`ResNetBackbone.frozen_bn`; for fine-tuning pretrained weights).
        fpn_features: channels of every pyramid level, the RPN and the mask head.
        anchor_scale: anchor side in strides (8: 32 px on P2 ... 512 px on P6).
        aspect_ratios: anchor `height / width`, one anchor each per cell.
        rpn_foreground_iou: anchors from this IoU are positives (and each
            box's best anchors, as in the paper).
        rpn_background_iou: anchors below this IoU are negatives.
        rpn_batch_size: anchors sampled per image for the RPN loss.
        rpn_positive_fraction: at most this share of them positive.
        rpn_pre_nms_topk_train, rpn_pre_nms_topk_test: anchors kept per level
            by objectness before NMS.
        rpn_post_nms_topk_train, rpn_post_nms_topk_test: proposals kept per
            image after NMS.
        rpn_nms_iou: the proposals' NMS threshold (per level).
        roi_batch_size: RoIs sampled per image for the box head's loss.
        roi_positive_fraction: at most this share of them positive.
        roi_foreground_iou: RoIs from this IoU with a box are positives, the
            others background.
        box_head_features: width of the box head's FC layers.
        box_weights: `(wx, wy, ww, wh)` of the box head's deltas.
        sampling_ratio: RoIAlign samples per bin along each axis.
        with_masks: add the mask head (Mask R-CNN).
        mask_head_convs: 3x3 convs of the mask head.
        dtype: compute dtype; outputs and losses are float32.
        param_dtype: parameter dtype.
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_width: int = 64
    frozen_bn: bool = False
    fpn_features: int = 256
    anchor_scale: float = 8.0
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_foreground_iou: float = 0.7
    rpn_background_iou: float = 0.3
    rpn_batch_size: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_topk_train: int = 2000
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_train: int = 2000
    rpn_post_nms_topk_test: int = 1000
    rpn_nms_iou: float = 0.7
    roi_batch_size: int = 512
    roi_positive_fraction: float = 0.25
    roi_foreground_iou: float = 0.5
    box_head_features: int = 1024
    box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    sampling_ratio: int = 2
    with_masks: bool = False
    mask_head_convs: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        dtypes = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.resnet = resnet_backbone(self.backbone, width=self.backbone_width,
                                      frozen_bn=self.frozen_bn, name="backbone", **dtypes)
        self.fpn = FPN(self.fpn_features, p6_from="pool", min_level=2, max_level=6, **dtypes)
        self.rpn = RPNHead(len(self.aspect_ratios), self.fpn_features, **dtypes)
        self.box_head = BoxHead(self.num_classes, self.box_head_features, **dtypes)
        if self.with_masks:
            self.mask_head = MaskHead(self.num_classes, self.fpn_features,
                                      self.mask_head_convs, **dtypes)

    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        """The pyramid and the RPN's outputs (what both `training_loss` and `predict` start from).

        Args:
          images: `[B, H, W, C]` normalized images.
          train: batch statistics in the backbone's BatchNorm (else running ones).

        Returns:
          "p2" ... "p6" `[B, H / 2**l, W / 2**l, F]`, "objectness" `[B, N]` and
          "deltas" `[B, N, 4]` float32 for the `N` anchors of `anchor_boxes`.
        """
        chex.assert_rank(images, 4)
        pyramid = self.fpn(self.resnet(images, train))
        objectness, deltas = self.rpn([pyramid[f"p{level}"] for level in RPN_LEVELS])
        outputs = {**pyramid, "objectness": objectness, "deltas": deltas}
        if self.is_initializing():  # The heads run on RoIs: create their parameters too.
            rois = jnp.zeros((images.shape[0], 1, 4), jnp.float32)  # [B, 1, 4]
            self.box_head(self.pool(outputs, rois, 7))
            if self.with_masks:
                self.mask_head(self.pool(outputs, rois, 14))
        return outputs

    @nn.nowrap
    def anchor_boxes(self, image_size: tuple[int, int]) -> list[jax.Array]:
        """Per RPN level, its `[h_l * w_l * A, 4]` xyxy anchors, in the RPN's row order."""
        return anchor_ops.anchors(image_size, RPN_LEVELS, self.anchor_scale, (1.0,),
                                  self.aspect_ratios)

    def training_loss(
        self, images: jax.Array, targets: dict[str, jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """RPN + box head (+ mask head) losses on a training batch; needs a "sampling" RNG.

        Args:
          images: `[B, H, W, C]` normalized, augmented images.
          targets: "boxes" `[B, M, 4]` xyxy pixels, "labels" `[B, M]` int32,
            "box_mask" `[B, M]` bool and, with masks, "masks" `[B, M, G, G]`
            box-relative ground-truth masks in [0, 1].

        Returns:
          The float32 scalar loss and metrics: "loss", "rpn_cls_loss",
          "rpn_box_loss", "roi_cls_loss", "roi_box_loss" ("mask_loss"), and
          "num_positives" (positive RoIs in the batch).
        """
        if self.with_masks and "masks" not in targets:
            raise UserError(
                "Mask R-CNN trains on instance masks, but the batches have none; set "
                "config.data.mask_size (e.g. 28) and use a dataset with masks."
            )
        image_size = images.shape[1:3]
        boxes = targets["boxes"].astype(jnp.float32)  # [B, M, 4]
        box_mask = targets["box_mask"]  # [B, M]
        boxes = jnp.where(box_mask[..., None], boxes, 0.0)  # Padding cannot leak NaN.
        labels = jnp.where(box_mask, targets["labels"], 0).astype(jnp.int32)  # [B, M]
        batch = images.shape[0]
        rpn_rng, roi_rng = jax.random.split(self.make_rng("sampling"))

        outputs = self(images, train=True)
        anchors = self.anchor_boxes(image_size)
        rpn_cls, rpn_box = rpn_loss(
            jax.random.split(rpn_rng, batch), outputs["objectness"], outputs["deltas"],
            jnp.concatenate(anchors), boxes, box_mask, self.rpn_foreground_iou,
            self.rpn_background_iou, self.rpn_batch_size, self.rpn_positive_fraction,
        )
        proposals, valid = propose(
            outputs["objectness"], outputs["deltas"], anchors, image_size,
            self.rpn_pre_nms_topk_train, self.rpn_post_nms_topk_train, self.rpn_nms_iou,
        )  # [B, P, 4], [B, P]

        sample = jax.vmap(functools.partial(
            sample_rois, num_samples=self.roi_batch_size,
            positive_fraction=self.roi_positive_fraction,
            foreground_iou=self.roi_foreground_iou, background_label=self.num_classes,
        ))(jax.random.split(roi_rng, batch), proposals, valid, boxes, labels, box_mask)
        rois = sample["rois"]  # [B, S, 4]
        logits, deltas = self.box_head(self.pool(outputs, rois, 7))  # [B, S, K + 1], [B, S, K, 4]
        roi_cls, roi_box = box_head_loss(logits, deltas, sample, boxes, self.box_weights)

        total = rpn_cls + rpn_box + roi_cls + roi_box
        metrics = {
            "rpn_cls_loss": rpn_cls, "rpn_box_loss": rpn_box,
            "roi_cls_loss": roi_cls, "roi_box_loss": roi_box,
            "num_positives": jnp.sum(sample["positive"]).astype(jnp.float32),
        }
        if self.with_masks:
            # The sample puts its positives first: the mask head sees only those slots.
            first = int(self.roi_batch_size * self.roi_positive_fraction)
            positive = {key: value[:, :first] for key, value in sample.items()}
            mask_logits = self.mask_head(self.pool(outputs, positive["rois"], 14))
            # mask_logits: [B, P, 28, 28, K]
            size = mask_logits.shape[2]
            mask_target = jax.vmap(functools.partial(mask_targets, size=size))(
                targets["masks"], boxes, positive["rois"], positive["matched"]
            )  # [B, P, 28, 28]
            metrics["mask_loss"] = mask_loss(
                mask_logits.reshape(-1, *mask_logits.shape[2:]),
                positive["labels"].reshape(-1), mask_target.reshape(-1, size, size),
                positive["positive"].reshape(-1).astype(jnp.float32),
            )
            total = total + metrics["mask_loss"]
        return total, {"loss": total, **metrics}

    def predict(
        self, images: jax.Array, *, score_threshold: float, pre_nms_topk: int,
        nms_iou: float, max_detections: int,
    ) -> dict[str, jax.Array]:
        """Final detections of normalized images `[B, H, W, C]`, in input pixels.

        Every proposal is scored for every class (softmax) with its own
        class-specific box; the `pre_nms_topk` best (proposal, class) pairs go
        through class-aware NMS (`nms_iou`), which keeps at most
        `max_detections` scoring at least `score_threshold` (`config.detect`).

        Returns:
          "boxes" `[B, D, 4]` xyxy, "scores" `[B, D]`, "labels" `[B, D]` int32,
          "valid" `[B, D]` bool, best first, D = max_detections; with masks,
          "masks" `[B, D, 28, 28]` float32 probabilities over each box.
        """
        image_size = images.shape[1:3]
        outputs = self(images, train=False)
        proposals, valid = propose(
            outputs["objectness"], outputs["deltas"], self.anchor_boxes(image_size),
            image_size, self.rpn_pre_nms_topk_test, self.rpn_post_nms_topk_test,
            self.rpn_nms_iou,
        )  # [B, P, 4], [B, P]
        logits, deltas = self.box_head(self.pool(outputs, proposals, 7))
        # logits: [B, P, K + 1]; deltas: [B, P, K, 4]
        batch, num_proposals, num_classes = deltas.shape[:3]
        scores = jax.nn.softmax(logits, axis=-1)[..., :num_classes]  # [B, P, K]
        boxes = box_ops.decode(deltas, proposals[:, :, None, :], self.box_weights)
        boxes = box_ops.clip(boxes, *image_size)  # [B, P, K, 4]
        wh = boxes[..., 2:] - boxes[..., :2]  # [B, P, K, 2]
        usable = valid[..., None] & jnp.all(wh >= _MIN_BOX_SIZE, axis=-1)  # [B, P, K]
        scores = jnp.where(usable, scores, -1.0).reshape(batch, -1)  # [B, P * K]
        top_scores, flat = jax.lax.top_k(scores, min(pre_nms_topk, num_proposals * num_classes))
        top_boxes = jnp.take_along_axis(
            boxes.reshape(batch, -1, 4), flat[..., None], axis=1
        )  # [B, k, 4]
        kept = nms.batched_nms(top_boxes, top_scores, flat % num_classes, nms_iou,
                               max_detections, score_threshold=score_threshold)
        detections = {
            "boxes": kept["boxes"],
            "scores": kept["scores"],
            "labels": kept["classes"].astype(jnp.int32),
            "valid": kept["valid"],
        }
        if self.with_masks:
            mask_logits = self.mask_head(self.pool(outputs, detections["boxes"], 14))
            # mask_logits: [B, D, 28, 28, K]
            detections["masks"] = jax.nn.sigmoid(class_masks(mask_logits, detections["labels"]))
        return detections

    def pool(self, outputs: dict[str, jax.Array], rois: jax.Array, size: int) -> jax.Array:
        """RoIAlign `[B, R, size, size, F]` of `rois` `[B, R, 4]`, each from its FPN level."""
        levels = roi_ops.assign_levels(rois, ROI_LEVELS[0], ROI_LEVELS[-1])  # [B, R]
        return roi_ops.multilevel_roi_align(
            [outputs[f"p{level}"] for level in ROI_LEVELS],
            anchor_ops.fpn_strides(ROI_LEVELS), rois, levels - ROI_LEVELS[0],
            (size, size), self.sampling_ratio,
        )


def rpn_loss(
    rngs: jax.Array, objectness: jax.Array, deltas: jax.Array, anchors: jax.Array,
    boxes: jax.Array, box_mask: jax.Array, foreground_iou: float, background_iou: float,
    batch_size: int, positive_fraction: float,
) -> tuple[jax.Array, jax.Array]:
    """The RPN's losses: BCE on sampled anchors, smooth L1 on the positive ones.

    Anchors are matched as in RetinaNet (`match_anchors`, each box's best
    anchors positive too); `batch_size` per image are sampled, at most
    `positive_fraction` positive; ignored anchors are never sampled.

    Args:
      rngs: `[B]` keys, one per image.
      objectness: `[B, N]` logits; deltas: `[B, N, 4]`; anchors: `[N, 4]`.
      boxes: `[B, M, 4]` ground truth (zeros on padding); box_mask: `[B, M]`.

    Returns:
      `(cls_loss, box_loss)`, float32 scalars, both divided by the number of
      sampled anchors in the batch.
    """
    match = functools.partial(match_anchors, foreground_iou=foreground_iou,
                              background_iou=background_iou, allow_low_quality_matches=True)
    index, state = jax.vmap(match, in_axes=(None, 0, 0))(anchors, boxes, box_mask)  # [B, N]
    draw = functools.partial(balanced_sample, num_samples=batch_size,
                             positive_fraction=positive_fraction)
    picked, positive, valid = jax.vmap(draw)(
        rngs, state == MATCH_FOREGROUND, state == MATCH_BACKGROUND
    )  # [B, S] each
    num_sampled = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)

    logits = jnp.take_along_axis(objectness, picked, axis=1)  # [B, S]
    bce = optax.sigmoid_binary_cross_entropy(logits, positive.astype(jnp.float32))  # [B, S]
    cls_loss = jnp.sum(jnp.where(valid, bce, 0.0)) / num_sampled

    matched = jnp.take_along_axis(boxes, index[..., None], axis=1)  # [B, N, 4]
    sampled_anchors = anchors[picked]  # [B, S, 4]
    sampled_boxes = jnp.take_along_axis(matched, picked[..., None], axis=1)  # [B, S, 4]
    # Non-positive slots regress onto their own anchor: finite, then masked out.
    sampled_boxes = jnp.where(positive[..., None], sampled_boxes, sampled_anchors)
    box_targets = box_ops.encode(sampled_boxes, sampled_anchors)  # [B, S, 4]
    sampled_deltas = jnp.take_along_axis(deltas, picked[..., None], axis=1)  # [B, S, 4]
    smooth = losses.smooth_l1_loss(sampled_deltas, box_targets, _SMOOTH_L1_BETA)  # [B, S, 4]
    box_loss = jnp.sum(smooth * positive[..., None]) / num_sampled
    return cls_loss, box_loss


def propose(
    objectness: jax.Array, deltas: jax.Array, anchors: Sequence[jax.Array],
    image_size: tuple[int, int], pre_nms_topk: int, post_nms_topk: int, nms_iou: float,
) -> tuple[jax.Array, jax.Array]:
    """Proposals: top-k anchors per level, decoded, clipped, NMS per level, best first.

    Args:
      objectness: `[B, N]` logits; deltas: `[B, N, 4]`.
      anchors: per level `[N_l, 4]` (`sum N_l = N`, in row order).
      image_size: static `(H, W)`.
      pre_nms_topk: anchors kept per level (fewer if the level has fewer).
      post_nms_topk: proposals per image, `P`.
      nms_iou: NMS threshold; boxes of different levels never suppress each other.

    Returns:
      `[B, P, 4]` proposals (no gradient) and `[B, P]` bool validity (False:
      fewer than P survived; the box is zeros).
    """
    objectness = jax.lax.stop_gradient(objectness)
    deltas = jax.lax.stop_gradient(deltas)
    candidates = []  # Per level: (boxes [B, k, 4], scores [B, k], level [B, k]).
    start = 0
    for level, level_anchors in enumerate(anchors):
        size = level_anchors.shape[0]
        scores, index = jax.lax.top_k(objectness[:, start : start + size],
                                      min(pre_nms_topk, size))  # [B, k]
        level_deltas = jnp.take_along_axis(
            deltas[:, start : start + size], index[..., None], axis=1
        )  # [B, k, 4]
        boxes = box_ops.clip(box_ops.decode(level_deltas, level_anchors[index]), *image_size)
        candidates.append((boxes, scores, jnp.full(scores.shape, level, jnp.int32)))
        start += size
    boxes, scores, levels = (jnp.concatenate(parts, axis=1) for parts in zip(*candidates))
    wh = boxes[..., 2:] - boxes[..., :2]  # [B, C, 2]
    scores = jnp.where(jnp.all(wh >= _MIN_BOX_SIZE, axis=-1), scores, -jnp.inf)  # [B, C]
    kept = nms.batched_nms(boxes, scores, levels, nms_iou, post_nms_topk,
                           score_threshold=jnp.finfo(jnp.float32).min)
    return kept["boxes"], kept["valid"]


def sample_rois(
    rng: jax.Array, proposals: jax.Array, proposal_valid: jax.Array, boxes: jax.Array,
    labels: jax.Array, box_mask: jax.Array, *, num_samples: int, positive_fraction: float,
    foreground_iou: float, background_label: int,
) -> dict[str, jax.Array]:
    """The RoIs ONE image trains its box (and mask) head on.

    The ground-truth boxes join the proposals as candidates. A candidate is
    positive when its best IoU with a real box is >= `foreground_iou`, else
    background; `num_samples` are drawn, at most `positive_fraction` positive
    (positives first).

    Args:
      rng: a key; proposals: `[P, 4]`; proposal_valid: `[P]`;
      boxes: `[M, 4]` ground truth; labels: `[M]`; box_mask: `[M]`.

    Returns:
      "rois" `[S, 4]`, "labels" `[S]` (the matched box's class, or
      `background_label`), "matched" `[S]` index of the matched box,
      "positive" and "valid" `[S]` bool.
    """
    candidates = jnp.concatenate([proposals, boxes])  # [P + M, 4]
    usable = jnp.concatenate([proposal_valid, box_mask])  # [P + M]
    iou = box_ops.pairwise_iou(candidates, boxes)  # [P + M, M]
    iou = jnp.where(box_mask[None, :], iou, -1.0)  # Padding never matches.
    best, matched = jnp.max(iou, axis=1), jnp.argmax(iou, axis=1).astype(jnp.int32)
    positive = usable & (best >= foreground_iou)  # [P + M]
    index, is_positive, valid = balanced_sample(
        rng, positive, usable & ~positive, num_samples, positive_fraction
    )  # [S] each
    matched = matched[index]  # [S]
    return {
        "rois": candidates[index],
        "labels": jnp.where(is_positive, labels[matched], background_label).astype(jnp.int32),
        "matched": matched,
        "positive": is_positive,
        "valid": valid,
    }


def box_head_loss(
    logits: jax.Array, deltas: jax.Array, sample: dict[str, jax.Array], boxes: jax.Array,
    weights: Sequence[float],
) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy over the sampled RoIs, smooth L1 on the positives' class deltas.

    Args:
      logits: `[B, S, K + 1]`; deltas: `[B, S, K, 4]`.
      sample: `sample_rois`'s output, batched (`[B, S, ...]`).
      boxes: `[B, M, 4]` ground truth.
      weights: the box coder's `(wx, wy, ww, wh)`.

    Returns:
      `(cls_loss, box_loss)`, float32 scalars over the number of sampled RoIs.
    """
    valid, positive = sample["valid"], sample["positive"]  # [B, S]
    num_sampled = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, sample["labels"])  # [B, S]
    cls_loss = jnp.sum(jnp.where(valid, ce, 0.0)) / num_sampled

    num_classes = deltas.shape[2]
    class_index = jnp.minimum(sample["labels"], num_classes - 1)  # Background: any row.
    predicted = jnp.take_along_axis(deltas, class_index[..., None, None], axis=2)[:, :, 0]
    matched = jnp.take_along_axis(boxes, sample["matched"][..., None], axis=1)  # [B, S, 4]
    # Non-positive slots (zero-size when unused) encode a unit box onto itself: finite.
    safe_rois = jnp.where(positive[..., None], sample["rois"], jnp.array([0.0, 0.0, 1.0, 1.0]))
    matched = jnp.where(positive[..., None], matched, safe_rois)
    targets = box_ops.encode(matched, safe_rois, weights)  # [B, S, 4]
    smooth = losses.smooth_l1_loss(predicted, targets, _SMOOTH_L1_BETA)  # [B, S, 4]
    box_loss = jnp.sum(smooth * positive[..., None]) / num_sampled
    return cls_loss, box_loss
