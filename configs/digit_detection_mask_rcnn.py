"""Mask R-CNN (ResNet-18 FPN, narrow) on `digit_detection`: boxes and the ink mask of every digit.

  python scripts/train.py --config configs/digit_detection_mask_rcnn.py --workdir runs/digit_detection_mask_rcnn
  python scripts/eval.py --config configs/digit_detection_mask_rcnn.py --workdir runs/digit_detection_mask_rcnn
  python scripts/predict.py --config configs/digit_detection_mask_rcnn.py \
      --workdir runs/digit_detection_mask_rcnn --image canvas.png --out canvas_masks.png

configs/digit_detection_faster_rcnn.py plus the mask head
(jaxvision/models/mask_head.py): every digit's instance mask is its ink
pixels, stored by the `digit_detection` dataset and decoded as a 32 x 32
mask over the digit's box (`config.data.mask_size`). Box metrics (AP, AP50,
...) and mask metrics (mask_AP, mask_AP50, ..., pycocotools' segm
evaluation) are logged side by side.

Expected: mask AP50 >= 0.85 on the 500 test canvases in under 25 minutes on a
2-core CPU (README.md, "Detection", has the measured figures).

Variants (`configs/digit_detection_mask_rcnn.py:VARIANT`):
  smoke: a few steps of a tiny model, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    return common.digit_detection("mask_rcnn", variant, nms_iou=0.5)  # torchvision's.
