"""FCOS, ResNet-50 FPN, on your own COCO-format detection data (instances JSON + image folder).

  python scripts/train.py --config configs/coco_json_fcos.py --workdir runs/mine_fcos \
      --config.data.train_annotations=ROOT/annotations/train.json \
      --config.data.train_images=ROOT/train \
      --config.data.eval_annotations=ROOT/annotations/val.json \
      --config.data.eval_images=ROOT/val \
      --config.model.init_from=torchvision:resnet50.pth

Each split is what detectron2's `register_coco_instances(name, {}, json_file,
image_root)` takes: a COCO instances JSON ("images", "annotations" with
"bbox" in pixels xywh, "categories") and the folder its `file_name`s are
relative to. Category ids may be sparse (1, 5, 90): they become labels 0..K-1
in id order, and the exported `eval/detections.json` uses the dataset's own
ids again, so pycocotools reads it with the original JSON. Crowd annotations
(`iscrowd` 1) are left out of training and, at evaluation, match detections
without counting as misses, as in pycocotools. Images without annotations
are kept. No tfds build and no TensorFlow.

Recipe: FCOS as configs/coco_fcos_r50_fpn.py (center sampling, GIoU,
GroupNorm heads, bf16), on 640 px canvases, fine-tuned as detectron2 does
from torchvision's ImageNet ResNet-50 (`init_from`, the stem and first stage
frozen, frozen BatchNorm): SGD lr 0.01 at batch 16, 12 epochs with the rate
divided by 10 at epochs 8 and 11 (the 1x schedule in epochs), flips.
Expected: depends on your data; as a check, the smoke variant trains on a
COCO JSON written from digit_detection in the tests. Without `init_from`
(random init) set `--config.model.freeze_backbone_stages=0
--config.model.frozen_bn=False` and train much longer.

Variants (`configs/coco_json_fcos.py:VARIANT`):
  smoke: a tiny model on 64 px canvases for 2 steps, for tests.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.coco_1x("fcos", variant, nms_iou=0.6)
    config.model.center_sampling_radius = 1.5  # The paper's center sampling.
    config.model.update(freeze_backbone_stages=2, frozen_bn=True)  # detectron2's fine-tuning.
    data = config.data
    data.name = "coco_json"
    data.image_size = 64 if variant == "smoke" else 640  # Canvas side (longer image side).
    data.worker_count = 0 if variant == "smoke" else 4  # JPEG decoding in worker processes.
    data.train_images = placeholder(str)  # The folder of train_annotations' file_names.
    data.eval_images = placeholder(str)
    # A coco_json split is "ANNOTATIONS::IMAGES"; these follow the four fields above.
    data.train_split = data.get_ref("train_annotations") + "::" + data.get_ref("train_images")
    data.eval_split = data.get_ref("eval_annotations") + "::" + data.get_ref("eval_images")
    if variant != "smoke":
        config.num_train_steps = 0  # Epochs, not COCO's step counts.
        config.num_epochs = 12
        config.optimizer.update(warmup_epochs=0.5, decay_epochs=(8, 11))
        config.update(eval_every_steps=2_000, checkpoint_every_steps=1_000)
    return config
