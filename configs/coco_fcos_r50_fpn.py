"""FCOS, ResNet-50 FPN, on COCO 2017 (tfds `coco/2017`, prepared by the user), the 1x schedule.

  pip install -e ".[prepare]" && tfds build coco/2017 --file_format array_record
  python scripts/train.py --config configs/coco_fcos_r50_fpn.py --workdir runs/coco_fcos_r50_fpn
  python scripts/eval.py --config configs/coco_fcos_r50_fpn.py --workdir runs/coco_fcos_r50_fpn

Detectron2's 1x recipe (`common.coco_1x`, shared with
configs/coco_retinanet_r50_fpn.py): 90k steps at batch 16, SGD momentum 0.9,
lr 0.01 with 1,000 warmup steps, divided by 10 at steps 60k and 80k, weight
decay 1e-4; horizontal flip. FCOS with center sampling, GIoU and normalized
regression (the paper's "improvements"), GroupNorm heads, bf16 compute.
Images: longer side resized to 1024 px (static 1024x1024 canvases; for COCO's
4:3 images the shorter side is ~768 px, near Detectron2's 800).

Expected: box AP ~38.7 (the paper's R50 1x) needs an ImageNet-pretrained
backbone: add --config.model.init_from=torchvision:resnet50.pth
--config.model.freeze_backbone_stages=2 --config.model.frozen_bn=True. From
scratch (the default), 1x gives far less (He et al. 2019 train 3-6x longer from scratch). Not yet measured here.

Variants (`configs/coco_fcos_r50_fpn.py:VARIANT`):
  smoke: a tiny model on 64 px canvases for 2 steps, for tests (mock data).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.coco_1x("fcos", variant, nms_iou=0.6)
    config.model.center_sampling_radius = 1.5  # The paper's center sampling.
    return config
