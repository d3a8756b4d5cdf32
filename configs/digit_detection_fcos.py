"""FCOS (ResNet-18 FPN, narrow) on `digit_detection`: 1-6 real handwritten digits per 128x128 canvas.

  python scripts/train.py --config configs/digit_detection_fcos.py --workdir runs/digit_detection_fcos
  python scripts/eval.py --config configs/digit_detection_fcos.py --workdir runs/digit_detection_fcos
  python scripts/predict.py --config configs/digit_detection_fcos.py --workdir runs/digit_detection_fcos \
      --image canvas.png --out canvas_boxes.png

Expected: AP50 >= 0.90 on the 500 test canvases (digits the train split never
saw) in under 20 minutes on a 2-core CPU. Measured (2026-11-24): AP50 0.944,
AP 0.791, in 5 min 23 s including compiling and building the dataset. The
dataset is built from scikit-learn on first use: no download, no TensorFlow.

Variants (`configs/digit_detection_fcos.py:VARIANT`):
  smoke: a few steps of a tiny model, for tests.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from jaxvision.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "detection"
    config.dtype = "float32"  # Compute dtype; parameters stay float32.

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # Data-parallel axis; -1: every device not used by fsdp.
    config.mesh.fsdp = 1  # >1 shards parameters and optimizer state over this many devices.

    config.data = ml_collections.ConfigDict()
    config.data.name = "digit_detection"
    config.data.data_dir = placeholder(str)  # None: the tfds default (~/tensorflow_datasets).
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.image_size = 128  # Canvas side: the longer image side is resized to it.
    config.data.max_boxes = 8  # Padded boxes per image; canvases hold at most 6 digits.
    config.data.worker_count = 0  # Small images: reading in-process is fastest.
    config.data.cache = True  # 6,000 canvases fit in RAM: deserialize each record once.

    config.augment = ml_collections.ConfigDict()
    # Random rescaling with crop/pad to the canvas; digits keep their identity
    # at other sizes, and the test digits span 12-48 px.
    config.augment.scale_range = (0.75, 1.25)
    config.augment.flip = False  # Mirrored digits are not digits.
    config.augment.min_box_size = 2.0  # Boxes cut to less than 2 px by the crop are dropped.
    config.augment.mean = (0.5,)
    config.augment.std = (0.5,)

    config.model = ml_collections.ConfigDict()
    config.model.name = "fcos"
    config.model.backbone = "resnet18"
    config.model.backbone_width = 16  # A quarter of ResNet-18's width: CPU-sized.
    config.model.fpn_features = 64
    config.model.head_convs = 2  # The paper's 4 convs add little on 10 simple classes.
    config.model.norm_groups = 16
    config.model.center_sampling_radius = 1.5

    config.detect = ml_collections.ConfigDict()  # Post-processing (eval and predict).
    config.detect.score_threshold = 0.05
    config.detect.pre_nms_topk = 1000  # Candidates per pyramid level before NMS.
    config.detect.nms_iou = 0.6
    config.detect.max_detections = 100  # Per image; COCO AR100 needs 100.

    config.batch_size = 32  # Global; must divide over the devices.
    config.eval_batch_size = 128  # 500 test canvases in 4 batches (the last padded).
    config.num_epochs = 6  # 1,122 steps; measured AP50: 0.86 at step 500, 0.94 at step 1,000.
    config.num_train_steps = 0  # 0: derived from num_epochs.

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 10.0  # Early detection losses spike; clipping keeps them finite.
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 1

    config.log_every_steps = 50
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 3

    config.profile = ml_collections.ConfigDict()
    config.profile.start_step = -1  # >= 0: trace num_steps steps from here into workdir/profile.
    config.profile.num_steps = 5
    config.profile.dump_hlo = False  # Write the optimized HLO of the train step to the workdir.

    variant = arg or "default"
    if variant == "smoke":
        config.model.backbone_width = 8
        config.model.fpn_features = 16
        config.model.norm_groups = 4
        config.model.head_convs = 1
        config.model.levels = (3, 4, 5)
        config.data.image_size = 64
        config.data.eval_split = "test[:64]"
        config.num_train_steps = 2
        config.batch_size = 8
        config.eval_batch_size = 32
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.optimizer.warmup_epochs = 0
    elif variant != "default":
        raise UserError(
            f"Unknown variant {variant!r} of digit_detection_fcos.py; use 'smoke' or none."
        )
    return config
