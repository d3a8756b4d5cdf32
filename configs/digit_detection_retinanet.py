"""RetinaNet (ResNet-18 FPN, narrow) on `digit_detection`: the FCOS config with the detector swapped.

  python scripts/train.py --config configs/digit_detection_retinanet.py --workdir runs/digit_detection_retinanet
  python scripts/eval.py --config configs/digit_detection_retinanet.py --workdir runs/digit_detection_retinanet
  python scripts/predict.py --config configs/digit_detection_retinanet.py \
      --workdir runs/digit_detection_retinanet --image canvas.png --out canvas_boxes.png

Data, augmentation, model size, schedule and optimizer are
`common.digit_detection`, shared with configs/digit_detection_fcos.py; only
the detector, its anchors and its NMS threshold differ.

Expected: AP50 >= 0.90 on the 500 test canvases in under 20 minutes on a
2-core CPU; expect about 7 minutes (README.md, "Detection", has the measured
figures).

Variants (`configs/digit_detection_retinanet.py:VARIANT`):
  smoke: a few steps of a tiny model, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.digit_detection("retinanet", variant, nms_iou=0.5)  # RetinaNet's (FCOS: 0.6).
    # Anchors of 16-25 px at stride 8: the paper's 32-50 px reach IoU 0.5 with
    # no digit under ~16 px, and the test digits start at 12 px.
    config.model.anchor_scale = 2.0
    return config
