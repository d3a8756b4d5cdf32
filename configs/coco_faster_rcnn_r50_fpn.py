"""Faster R-CNN, ResNet-50 FPN, on COCO 2017 (tfds `coco/2017`, prepared by the user), the 1x schedule.

  pip install -e ".[prepare]" && tfds build coco/2017 --file_format array_record
  python scripts/train.py --config configs/coco_faster_rcnn_r50_fpn.py --workdir runs/coco_faster_rcnn_r50_fpn
  python scripts/eval.py --config configs/coco_faster_rcnn_r50_fpn.py --workdir runs/coco_faster_rcnn_r50_fpn

Detectron2's 1x recipe (`common.coco_1x`, shared with the FCOS and RetinaNet
configs: 90k steps at batch 16, SGD momentum 0.9, 1,000 warmup steps, the
rate divided by 10 at steps 60k and 80k, weight decay 1e-4, horizontal flip,
1024 px canvases, bf16 compute) with the two-stage detectors' learning rate
0.02. The model is torchvision's `fasterrcnn_resnet50_fpn` (the defaults of
jaxvision/models/faster_rcnn.py): anchors 32-512 px on P2-P6, RPN 2,000
proposals per image in training and 1,000 at test, 512 RoIs per image at 25%
positives, two FC-1024 layers, NMS 0.5, 100 detections.

Expected: torchvision reports 37.0 box AP for this model (1x, 26 epochs with
its own schedule) from an ImageNet-pretrained, frozen-BatchNorm ResNet-50:
add --config.model.init_from=torchvision:resnet50.pth
--config.model.freeze_backbone_stages=2 --config.model.frozen_bn=True. From
random weights (the default) the 1x schedule gives far less (He et al. 2019, "Rethinking ImageNet Pre-training",
train 3-6x longer and with normalized heads to catch up). Not yet measured here.

Variants (`configs/coco_faster_rcnn_r50_fpn.py:VARIANT`):
  smoke: a tiny model on 64 px canvases for 2 steps, for tests (mock data).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.coco_1x("faster_rcnn", variant, nms_iou=0.5)  # torchvision's.
    config.optimizer.learning_rate = 0.02  # Detectron2's two-stage 1x (its RetinaNet: 0.01).
    return config
