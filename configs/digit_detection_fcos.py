"""FCOS (ResNet-18 FPN, narrow) on `digit_detection`: 1-6 real handwritten digits per 128x128 canvas.

  python scripts/train.py --config configs/digit_detection_fcos.py --workdir runs/digit_detection_fcos
  python scripts/eval.py --config configs/digit_detection_fcos.py --workdir runs/digit_detection_fcos
  python scripts/predict.py --config configs/digit_detection_fcos.py --workdir runs/digit_detection_fcos \
      --image canvas.png --out canvas_boxes.png

Expected: AP50 >= 0.90 on the 500 test canvases (digits the train split never
saw) in under 20 minutes on a 2-core CPU; expect about 6 minutes, including
compiling and building the dataset (README.md, "Detection", has the measured
figures). The dataset is built from scikit-learn on first use: no download,
no TensorFlow.

The recipe (data, augmentation, model size, AdamW schedule) is
`common.digit_detection`, shared with configs/digit_detection_retinanet.py;
this file adds FCOS's own settings.

Variants (`configs/digit_detection_fcos.py:VARIANT`):
  smoke: a few steps of a tiny model, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.digit_detection("fcos", variant, nms_iou=0.6)
    # Locations within 1.5 strides of a box center are its positives (the
    # paper's center sampling), not every location inside the box.
    config.model.center_sampling_radius = 1.5
    return config
