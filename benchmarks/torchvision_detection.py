"""A detection config's detector in torchvision, timed for the side-by-side with jaxvision.

  python benchmarks/torchvision_detection.py --config configs/coco_fcos_r50_fpn.py --device cuda
  python benchmarks/torchvision_detection.py --config configs/coco_retinanet_r50_fpn.py \
      --batch_size 16 --compile
  python benchmarks/torchvision_detection.py --config configs/digit_detection_fcos.py --mode eval
  python benchmarks/torchvision_detection.py --config configs/digit_detection_faster_rcnn.py
  python benchmarks/torchvision_detection.py --config configs/digit_detection_mask_rcnn.py \
      --mode eval

The jaxvision command it answers: `python scripts/benchmark.py --config ...` with
the same overrides. Flags, timing and the JSON are `torch_peer`'s.

Dense detectors (`config.model.name` "fcos", "retinanet"): torchvision's
`FCOS` / `RetinaNet` classes, assembled from the fields of jaxvision's module
(jaxvision/models/fcos.py, retinanet.py, fpn.py, dense_head.py) with the
config's overrides:
- backbone: `torch_peer.resnet(config.model.backbone)` at `backbone_width`
  and the dataset's channels, with ordinary (trained) BatchNorm, as
  jaxvision's. Its FPN is `BackboneWithFPN` with C3-C5 (layers 2-4),
  `fpn_features` channels and `LastLevelP6P7`, P6 from P5 (FCOS) or C5
  (RetinaNet), as jaxvision's `p6_from`: what
  `backbone_utils._resnet_fpn_extractor(resnet, trainable_layers=5,
  returned_layers=[2, 3, 4], extra_blocks=...)` builds, which fixes the FPN at
  256 channels.
- heads: torchvision's `FCOSHead` / `RetinaNetHead` with both towers replaced
  by jaxvision's `ConvTower`: `head_convs` x (3x3 conv with bias,
  GroupNorm(`norm_groups`), ReLU). torchvision's own towers have 4 convs,
  FCOS's GroupNorm(32) fixed, and RetinaNet v2's bias-free convs.
- anchors: FCOS one point per cell (torchvision's default, sizes = strides);
  RetinaNet `anchor_scale * stride * anchor_scales` x `aspect_ratios`, read
  from jaxvision's `RetinaNet` (3 x 3 at P3-P7: 32 px at P3).
- post-processing (eval): `config.detect` (score_threshold, nms_iou,
  max_detections, pre_nms_topk); training: FCOS's `center_sampling_radius`,
  RetinaNet's `foreground_iou` / `background_iou`, and RetinaNet's smooth-L1
  box loss (jaxvision's; torchvision's v2 uses GIoU).

Two-stage detectors ("faster_rcnn", "mask_rcnn"): torchvision's `FasterRCNN`
/ `MaskRCNN` with the fields of jaxvision's `FasterRCNN`
(jaxvision/models/faster_rcnn.py, mask_head.py):
- backbone: the same ResNet, `BackboneWithFPN` with C2-C5 (layers 1-4),
  `fpn_features` channels and `LastLevelMaxPool` (P6 = P5[::2, ::2]), as
  jaxvision's `FPN(p6_from="pool", min_level=2, max_level=6)`.
- RPN: `RPNHead` (3x3 conv, ReLU, 1x1 objectness A and deltas 4A) and an
  `AnchorGenerator` of side `anchor_scale * stride` at P2-P6 (strides 4-64)
  with `aspect_ratios`; pre-NMS top-k per level and post-NMS top-k per image
  (train/test), NMS IoU, foreground/background IoU, anchors sampled per image
  and their positive fraction: the `rpn_*` fields.
- RoI heads: `MultiScaleRoIAlign` over P2-P5 (7x7; 14x14 for masks) with
  `sampling_ratio` and the FPN paper's level mapping, `TwoMLPHead(F * 7 * 7,
  box_head_features)`, `FastRCNNPredictor`; RoIs sampled per image
  (`roi_batch_size`, `roi_positive_fraction`), positives from
  `roi_foreground_iou` and all others background (fg = bg threshold), box
  coder weights `box_weights`; eval: `config.detect`'s score_threshold,
  nms_iou, max_detections. Masks: `MaskRCNNHeads(F, [F] * mask_head_convs)` +
  `MaskRCNNPredictor` (2x2 transposed conv to 28x28, 1x1 conv per class).
- `num_classes = K + 1`: torchvision has a background class everywhere,
  jaxvision (detectron2's layout) only in the classifier's K + 1 logits.

`min_size = max_size = image_size`: torchvision's transform keeps the square
canvas at its size; it normalizes with `config.augment.mean/std`.

Parameter counts equal jaxvision's, except:
- FCOS: jaxvision has a learnable `Scale` per pyramid level (5 scalars at
  P3-P7), torchvision's FCOS none.
- Faster R-CNN: torchvision's box regressor has 4 (K + 1) outputs (a
  background row) where jaxvision's has 4 K: 4 (box_head_features + 1) more
  parameters in torchvision (digit config: 1,784,758 vs 1,783,730, +1,028;
  COCO's 1024-wide box head: +4,100).
- Mask R-CNN: that, plus torchvision's background mask channel (a 1x1 conv
  from F channels and its bias): 4 (box_head_features + 1) + fpn_features + 1
  more (digit config: 1,875,777 vs 1,874,684, +1,093; COCO: +4,357).

Differences that remain (none changes a layer's FLOPs, save the one extra
class row or mask channel above):
- FCOS: no per-level `Scale` multiply; torchvision normalizes the regression
  by the anchor size in its box coder instead.
- torchvision's transform runs an (identity, scale 1) bilinear resize of every
  image (and every Mask R-CNN target mask) and pads the batch to a multiple
  of 32 px (jaxvision: the canvas, its feature maps rounded up); jaxvision's
  train step instead rescales and crops each canvas on the device (scale
  jitter).
- Targets, losses and post-processing are torchvision's: per-image Python
  loops, a host sync for the positives count, per-image `batched_nms`;
  jaxvision's are batched with static shapes. Loss constants that do not
  change the work (focal alpha/gamma, loss weights, smooth-L1 beta, FCOS size
  ranges, prior probability) are torchvision's.
- Two-stage: torchvision's proposals, sampled RoIs and detections have
  data-dependent counts (as many proposals as survive NMS; the mask head
  trains on the positives sampled and, in eval, sees only the detections
  above the score threshold; `MultiScaleRoIAlign` gathers each level's RoIs
  with `torch.where`);
  jaxvision's are fixed-size and padded (`rpn_post_nms_topk_*` proposals,
  `roi_batch_size` RoIs, `roi_batch_size * roi_positive_fraction` mask
  slots, `max_detections` detections with a validity mask), so it computes
  the padding too. torchvision keeps every (proposal, class) pair above the
  score threshold for NMS (jaxvision the `config.detect.pre_nms_topk` best),
  and pastes each mask into the image on the device in eval (jaxvision
  returns box-relative 28x28 masks and pastes them on the host).
- Two-stage: torchvision's `MultiScaleRoIAlign` runs `roi_align` with
  `aligned=False` (jaxvision: `aligned=True`, detectron2's); Mask R-CNN's
  targets are full-image masks `[n, S, S]`, cropped per RoI by `roi_align`
  (jaxvision: box-relative `mask_size`^2 masks).
- Anchors are rounded to whole pixels and ordered ratio-major (jaxvision:
  exact, size-major); the prediction layout follows.
- Inputs are a list of `[C, S, S]` images (torchvision's API), batched by
  the transform in the contiguous format; channels_last applies from the
  first conv on (the weights are channels_last).
- Dense detectors: `config.model.levels` must be P3-P7 (torchvision's
  `LastLevelP6P7`).

The batch: B images `[C, S, S]` of uniform uint8-range values scaled to
[0, 1], each with `max(1, max_boxes // 2)` random boxes (xyxy pixels, sides
1/8 to 1/2 of S), random labels and, for Mask R-CNN, each box's mask the
filled box, as `jaxvision.tasks.detection.synthetic_batch`; made on the
device once.
"""
import torch
import torch_peer
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from jaxvision.errors import UserError

LEVELS = (3, 4, 5, 6, 7)  # C3-C5 -> P3-P5, and P6, P7 from LastLevelP6P7.
TWO_STAGE = ("faster_rcnn", "mask_rcnn")
RPN_LEVELS = (2, 3, 4, 5, 6)  # C2-C5 -> P2-P5, and P6 from LastLevelMaxPool: the anchors'.
ROI_FEATURES = ["0", "1", "2", "3"]  # P2-P5, the levels RoIs are pooled from (not "pool", P6).


def backbone_fpn(spec, in_channels: int, p6_from: str) -> BackboneWithFPN:
    """jaxvision's `backbone_pyramid`: ResNet C3-C5 -> FPN P3-P7 of `spec.fpn_features` channels."""
    resnet = torch_peer.resnet(spec.backbone, width=spec.backbone_width, in_channels=in_channels)
    c3 = spec.backbone_width * 2 * type(resnet.layer1[0]).expansion  # C3's channels
    features = spec.fpn_features
    extra = LastLevelP6P7(features if p6_from == "p5" else 4 * c3, features)
    extra.use_P5 = p6_from == "p5"  # Explicit: torchvision infers it from the channels.
    return BackboneWithFPN(
        resnet, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[c3, 2 * c3, 4 * c3], out_channels=features, extra_blocks=extra,
    )


def tower(spec) -> nn.Sequential:
    """jaxvision's `ConvTower`: `head_convs` x (3x3 conv with bias, GroupNorm, ReLU)."""
    features, layers = spec.fpn_features, []
    for _ in range(spec.head_convs):
        norm = nn.GroupNorm(spec.norm_groups, features) if spec.norm_groups else nn.Identity()
        layers += [nn.Conv2d(features, features, 3, padding=1), norm, nn.ReLU()]
    return nn.Sequential(*layers)


def two_stage_backbone(spec, in_channels: int) -> BackboneWithFPN:
    """`FasterRCNN`'s backbone: ResNet C2-C5 -> FPN P2-P6 (P6 by `LastLevelMaxPool`)."""
    resnet = torch_peer.resnet(spec.backbone, width=spec.backbone_width, in_channels=in_channels)
    c2 = spec.backbone_width * type(resnet.layer1[0]).expansion  # C2's channels
    return BackboneWithFPN(
        resnet, return_layers={f"layer{i + 1}": name for i, name in enumerate(ROI_FEATURES)},
        in_channels_list=[c2, 2 * c2, 4 * c2, 8 * c2], out_channels=spec.fpn_features,
        extra_blocks=LastLevelMaxPool(),
    )


def two_stage(spec, config, in_channels: int) -> FasterRCNN | MaskRCNN:
    """torchvision's `FasterRCNN` / `MaskRCNN` with the fields of jaxvision's `FasterRCNN` `spec`.

    torchvision counts the background as a class: `num_classes = K + 1`.
    """
    size, detect = config.data.image_size, config.detect
    features, classes = spec.fpn_features, spec.num_classes + 1
    anchors = AnchorGenerator(  # One side anchor_scale * stride per level, as `ops.anchors`.
        tuple((spec.anchor_scale * 2**level,) for level in RPN_LEVELS),
        aspect_ratios=(tuple(spec.aspect_ratios),) * len(RPN_LEVELS),
    )
    fields = {
        "min_size": size, "max_size": size,
        "image_mean": list(config.augment.mean), "image_std": list(config.augment.std),
        "rpn_anchor_generator": anchors,
        "rpn_head": RPNHead(features, len(spec.aspect_ratios)),
        "rpn_pre_nms_top_n_train": spec.rpn_pre_nms_topk_train,
        "rpn_pre_nms_top_n_test": spec.rpn_pre_nms_topk_test,
        "rpn_post_nms_top_n_train": spec.rpn_post_nms_topk_train,
        "rpn_post_nms_top_n_test": spec.rpn_post_nms_topk_test,
        "rpn_nms_thresh": spec.rpn_nms_iou,
        "rpn_fg_iou_thresh": spec.rpn_foreground_iou,
        "rpn_bg_iou_thresh": spec.rpn_background_iou,
        "rpn_batch_size_per_image": spec.rpn_batch_size,
        "rpn_positive_fraction": spec.rpn_positive_fraction,
        "box_roi_pool": MultiScaleRoIAlign(ROI_FEATURES, 7, spec.sampling_ratio),
        "box_head": TwoMLPHead(features * 7 * 7, spec.box_head_features),
        "box_predictor": FastRCNNPredictor(spec.box_head_features, classes),
        "box_score_thresh": detect.score_threshold,
        "box_nms_thresh": detect.nms_iou,
        "box_detections_per_img": detect.max_detections,
        # jaxvision: every RoI below the foreground IoU is background (no ignored band).
        "box_fg_iou_thresh": spec.roi_foreground_iou,
        "box_bg_iou_thresh": spec.roi_foreground_iou,
        "box_batch_size_per_image": spec.roi_batch_size,
        "box_positive_fraction": spec.roi_positive_fraction,
        "bbox_reg_weights": tuple(spec.box_weights),
    }
    backbone = two_stage_backbone(spec, in_channels)
    if not spec.with_masks:
        return FasterRCNN(backbone, **fields)
    return MaskRCNN(
        backbone, mask_roi_pool=MultiScaleRoIAlign(ROI_FEATURES, 14, spec.sampling_ratio),
        mask_head=MaskRCNNHeads(features, [features] * spec.mask_head_convs, dilation=1),
        mask_predictor=MaskRCNNPredictor(features, features, classes), **fields,
    )


def detector(spec, config, in_channels: int) -> FCOS | RetinaNet | FasterRCNN | MaskRCNN:
    """The torchvision detector mirroring jaxvision's module `spec` (`config.model`'s fields)."""
    if config.model.name in TWO_STAGE:
        return two_stage(spec, config, in_channels)
    if tuple(spec.levels) != LEVELS:
        raise UserError(
            f"config.model.levels={tuple(spec.levels)} has no torchvision peer; the "
            f"peer builds P3-P7, so drop the override or use levels={LEVELS}."
        )
    size = config.data.image_size
    detect = config.detect
    common = {
        "num_classes": spec.num_classes, "min_size": size, "max_size": size,
        "image_mean": list(config.augment.mean), "image_std": list(config.augment.std),
        "score_thresh": detect.score_threshold, "nms_thresh": detect.nms_iou,
        "detections_per_img": detect.max_detections, "topk_candidates": detect.pre_nms_topk,
    }
    if config.model.name == "fcos":
        # num_convs=0: no towers yet (torchvision's have GroupNorm(32) fixed); set below.
        head = FCOSHead(spec.fpn_features, num_anchors=1, num_classes=spec.num_classes, num_convs=0)
        model = FCOS(
            backbone_fpn(spec, in_channels, p6_from="p5"), head=head,
            center_sampling_radius=spec.center_sampling_radius, **common,
        )
    elif config.model.name == "retinanet":
        sizes = [  # Sides anchor_scale * stride * scale, as jaxvision's `ops.anchors`.
            [spec.anchor_scale * 2**level * s for s in spec.anchor_scales] for level in LEVELS
        ]
        anchors = AnchorGenerator(sizes, aspect_ratios=[list(spec.aspect_ratios)] * len(LEVELS))
        # Its towers (4 convs, fixed) are replaced below.
        head = RetinaNetHead(spec.fpn_features, spec.num_anchors, spec.num_classes)
        head.regression_head._loss_type = "smooth_l1"  # jaxvision's box loss (detectron2's).
        model = RetinaNet(
            backbone_fpn(spec, in_channels, p6_from="c5"), anchor_generator=anchors, head=head,
            fg_iou_thresh=spec.foreground_iou, bg_iou_thresh=spec.background_iou, **common,
        )
    else:
        raise UserError(
            f"Model {config.model.name!r} has no torchvision peer; use fcos, retinanet, "
            "faster_rcnn or mask_rcnn."
        )
    head.classification_head.conv = tower(spec)  # Both heads run `self.conv` on each level.
    head.regression_head.conv = tower(spec)
    return model


def synthetic_batch(
    batch_size: int, channels: int, size: int, max_boxes: int, num_classes: int,
    generator: torch.Generator, masks: bool = False,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Random images `[C, S, S]` in [0, 1] and targets, as jaxvision's `synthetic_batch`.

    Each image gets `max(1, max_boxes // 2)` boxes `[n, 4]` (xyxy pixels, sides
    1/8 to 1/2 of `size`), int64 labels `[n]` in `[0, num_classes)` and, with
    `masks`, uint8 instance masks `[n, S, S]` (torchvision's), each its box
    filled (edges rounded to whole pixels, as jaxvision's "instances" map).
    """
    num_boxes = max(1, max_boxes // 2)
    images = torch.randint(0, 256, (batch_size, channels, size, size), generator=generator) / 255
    wh = 0.125 + 0.375 * torch.rand(batch_size, num_boxes, 2, generator=generator)  # [B, n, 2]
    top_left = (1 - wh) * torch.rand(batch_size, num_boxes, 2, generator=generator)  # [B, n, 2]
    boxes = torch.cat([top_left, top_left + wh], dim=-1) * size  # [B, n, 4] xyxy pixels
    labels = torch.randint(0, num_classes, (batch_size, num_boxes), generator=generator)
    targets = [{"boxes": b, "labels": l} for b, l in zip(boxes, labels, strict=True)]
    if masks:
        x0, y0, x1, y1 = boxes.round().unbind(-1)  # 4 x [B, n]
        pixels = torch.arange(size)  # [S]
        in_x = (pixels >= x0[..., None]) & (pixels < x1[..., None])  # [B, n, S]
        in_y = (pixels >= y0[..., None]) & (pixels < y1[..., None])  # [B, n, S]
        filled = (in_y[..., :, None] & in_x[..., None, :]).to(torch.uint8)  # [B, n, S, S]
        for target, mask in zip(targets, filled, strict=True):
            target["masks"] = mask
    return list(images), targets


def workload(setup: torch_peer.Setup) -> torch_peer.Workload:
    """The config's detector in torchvision, a random batch with boxes, the summed losses."""
    config, info, spec = setup.config, setup.info, setup.spec
    size = config.data.image_size
    model = detector(spec, config, info.channels)
    images, targets = synthetic_batch(
        setup.batch_size, info.channels, size, config.data.max_boxes, info.num_classes,
        torch.Generator().manual_seed(0), masks=config.model.name == "mask_rcnn",
    )
    batch = (
        [image.to(setup.device) for image in images],  # B x [C, S, S]
        [{k: v.to(setup.device) for k, v in t.items()} for t in targets],
    )

    def loss(model, batch):
        return sum(model(*batch).values())  # The named losses: {"loss_classifier": ..., ...}

    return torch_peer.Workload(
        model=model, batch=batch, loss=loss, forward=lambda model, batch: model(batch[0]),
        fields={"model": config.model.name, "backbone": spec.backbone}, image_size=size,
    )


if __name__ == "__main__":
    torch_peer.run(workload, task="detection")
