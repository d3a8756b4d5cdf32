"""RetinaNet, ResNet-50 FPN, on COCO 2017: the FCOS COCO config with the detector swapped.

  pip install -e ".[prepare]" && tfds build coco/2017 --file_format array_record
  python scripts/train.py --config configs/coco_retinanet_r50_fpn.py --workdir runs/coco_retinanet_r50_fpn
  python scripts/eval.py --config configs/coco_retinanet_r50_fpn.py --workdir runs/coco_retinanet_r50_fpn

Data, schedule (Detectron2's 1x) and optimizer are `common.coco_1x`, shared
with configs/coco_fcos_r50_fpn.py (its docstring describes them). RetinaNet
with the paper's anchors (3 scales x 3 aspect ratios, 32 px at P3), IoU
matching 0.5/0.4, focal loss and smooth-L1 box loss, and GroupNorm heads.

Expected: box AP ~36-37 (the paper's R50 1x) needs an ImageNet-pretrained
backbone (add --config.model.init_from=torchvision:resnet50.pth
--config.model.freeze_backbone_stages=2 --config.model.frozen_bn=True); not
yet measured here.

Variants (`configs/coco_retinanet_r50_fpn.py:VARIANT`):
  smoke: a tiny model on 64 px canvases for 2 steps, for tests (mock data).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    return common.coco_1x("retinanet", variant, nms_iou=0.5)  # RetinaNet's (FCOS: 0.6).
