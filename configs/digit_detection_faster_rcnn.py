"""Faster R-CNN (ResNet-18 FPN, narrow) on `digit_detection`: 1-6 real handwritten digits per 128x128 canvas.

  python scripts/train.py --config configs/digit_detection_faster_rcnn.py --workdir runs/digit_detection_faster_rcnn
  python scripts/eval.py --config configs/digit_detection_faster_rcnn.py --workdir runs/digit_detection_faster_rcnn
  python scripts/predict.py --config configs/digit_detection_faster_rcnn.py \
      --workdir runs/digit_detection_faster_rcnn --image canvas.png --out canvas_boxes.png

The two-stage detector of jaxvision/models/faster_rcnn.py (RPN, proposals,
RoIAlign, box head) on the data, augmentation, backbone width, schedule and
optimizer of configs/digit_detection_fcos.py (`common.digit_detection`); its
RPN and RoI head sizes (`common._digit_model`) are torchvision's scaled to
128 px canvases.

Expected: AP50 >= 0.90 on the 500 test canvases in under 20 minutes on a
2-core CPU (README.md, "Detection", has the measured figures).

Variants (`configs/digit_detection_faster_rcnn.py:VARIANT`):
  smoke: a few steps of a tiny model, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    return common.digit_detection("faster_rcnn", variant, nms_iou=0.5)  # torchvision's.
