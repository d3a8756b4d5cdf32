"""FCOS, ResNet-50 FPN, on COCO 2017 (tfds `coco/2017`, prepared by the user), the 1x schedule.

  pip install -e ".[prepare]" && tfds build coco/2017 --file_format array_record
  python scripts/train.py --config configs/coco_fcos_r50_fpn.py --workdir runs/coco_fcos_r50_fpn
  python scripts/eval.py --config configs/coco_fcos_r50_fpn.py --workdir runs/coco_fcos_r50_fpn

Detectron2's 1x recipe: 90k steps at batch 16, SGD momentum 0.9, lr 0.01
with 1,000 warmup steps, divided by 10 at steps 60k and 80k, weight decay
1e-4; horizontal flip. FCOS with center sampling, GIoU and normalized
regression (the paper's "improvements"), GroupNorm heads, bf16 compute.
Images: longer side resized to 1024 px (static 1024x1024 canvases; for COCO's
4:3 images the shorter side is ~768 px, near Detectron2's 800).

Expected: box AP ~38.7 (the paper's R50 1x) needs an ImageNet-pretrained
backbone, which this project cannot load yet; from scratch, 1x gives far
less (He et al. 2019 train 3-6x longer from scratch). Not yet measured here.

Variants (`configs/coco_fcos_r50_fpn.py:VARIANT`):
  smoke: a tiny model on 64 px canvases for 2 steps, for tests (mock data).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from jaxvision.errors import UserError

_BATCH_SIZE = 16
_STEPS_PER_EPOCH = 118_287 // _BATCH_SIZE  # coco/2017 train images per batch of 16.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "detection"
    config.dtype = "bfloat16"  # Compute dtype; parameters, optimizer and losses stay float32.

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # Data-parallel axis; -1: every device not used by fsdp.
    config.mesh.fsdp = 1  # >1 shards parameters and optimizer state over this many devices.

    config.data = ml_collections.ConfigDict()
    config.data.name = "coco/2017"
    config.data.data_dir = placeholder(str)  # None: the tfds default (~/tensorflow_datasets).
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.image_size = 1024  # Canvas side: the longer image side is resized to it.
    config.data.max_boxes = 100  # Padded boxes per image (COCO 2017 has at most 93).
    config.data.worker_count = 8  # JPEG decoding and resizing in grain worker processes.
    config.data.cache = False  # 118k images do not fit in RAM.

    config.augment = ml_collections.ConfigDict()
    config.augment.scale_range = (1.0, 1.0)  # 1x: no scale jitter (3x recipes use it).
    config.augment.flip = True
    config.augment.min_box_size = 1.0
    config.augment.mean = (0.485, 0.456, 0.406)  # ImageNet statistics.
    config.augment.std = (0.229, 0.224, 0.225)

    config.model = ml_collections.ConfigDict()
    config.model.name = "fcos"
    config.model.backbone = "resnet50"
    config.model.backbone_width = 64
    config.model.fpn_features = 256
    config.model.head_convs = 4
    config.model.norm_groups = 32
    config.model.center_sampling_radius = 1.5

    config.detect = ml_collections.ConfigDict()  # Post-processing (eval and predict).
    config.detect.score_threshold = 0.05
    config.detect.pre_nms_topk = 1000  # Candidates per pyramid level before NMS.
    config.detect.nms_iou = 0.6
    config.detect.max_detections = 100  # Per image, as COCO's AR100 counts.

    config.batch_size = _BATCH_SIZE  # Global; must divide over the devices.
    config.eval_batch_size = 16
    config.num_epochs = 0
    config.num_train_steps = 90_000

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 0.0  # 0: no clipping.
    config.optimizer.schedule = "step"
    # The schedule is in epochs: 1,000 warmup steps, decays at 60k and 80k steps.
    config.optimizer.warmup_epochs = 1_000 / _STEPS_PER_EPOCH
    config.optimizer.decay_epochs = (60_000 / _STEPS_PER_EPOCH, 80_000 / _STEPS_PER_EPOCH)
    config.optimizer.decay_factor = 0.1

    config.log_every_steps = 100
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 2_000
    config.keep_checkpoints = 3

    config.profile = ml_collections.ConfigDict()
    config.profile.start_step = -1  # >= 0: trace num_steps steps from here into workdir/profile.
    config.profile.num_steps = 5
    config.profile.dump_hlo = False  # Write the optimized HLO of the train step to the workdir.

    variant = arg or "default"
    if variant == "smoke":
        config.model.backbone = "resnet18"
        config.model.backbone_width = 8
        config.model.fpn_features = 16
        config.model.head_convs = 1
        config.model.norm_groups = 4
        config.data.image_size = 64
        config.data.max_boxes = 8
        config.data.worker_count = 0
        config.num_train_steps = 2
        config.batch_size = 8
        config.eval_batch_size = 8
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.optimizer.warmup_epochs = 0
    elif variant != "default":
        raise UserError(
            f"Unknown variant {variant!r} of coco_fcos_r50_fpn.py; use 'smoke' or none."
        )
    return config
