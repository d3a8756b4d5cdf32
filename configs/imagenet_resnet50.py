"""ResNet-50 on ImageNet-1k (tfds `imagenet2012`, prepared by the user), bf16 compute.

  # Put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in
  # ~/tensorflow_datasets/downloads/manual, then:
  pip install -e ".[prepare]" && tfds build imagenet2012
  python scripts/train.py --config configs/imagenet_resnet50.py --workdir runs/imagenet_resnet50

The standard 90-epoch recipe (Goyal et al. 2017): SGD momentum 0.9, batch
1024, lr 0.1 x 1024/256 = 0.4 with 5 warmup epochs, divided by 10 at epochs
30, 60 and 80, weight decay 1e-4 on kernels only; random-resized crop 224 +
flip; bf16 compute with float32 parameters.
Expected: top-1 ~0.76 on the validation split, about a day on 8 modern GPUs
(not yet measured by this project).

Variants (`configs/imagenet_resnet50.py:VARIANT`):
  smoke: a narrow ResNet-50 at 32 px for a few steps, for tests (mocked data).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from jaxvision.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "classification"
    config.dtype = "bfloat16"  # Compute dtype; parameters, optimizer and loss stay float32.

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # Data-parallel axis; -1: every device not used by fsdp.
    config.mesh.fsdp = 1  # >1 shards parameters and optimizer state over this many devices.

    config.data = ml_collections.ConfigDict()
    config.data.name = "imagenet2012"
    config.data.data_dir = placeholder(str)  # None: the tfds default (~/tensorflow_datasets).
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    # Host side: shorter side to 256, center 256x256, so batches have one shape.
    # The random-resized crop to 224 then happens on the device.
    config.data.resize_size = 256
    config.data.worker_count = 8  # JPEG decoding is the host's bottleneck.
    config.data.cache = False  # ~150 GB: read from disk.

    config.augment = ml_collections.ConfigDict()
    config.augment.crop_size = 224
    config.augment.pad = 0
    config.augment.flip = True
    config.augment.random_resized_crop = True
    config.augment.mean = (0.485, 0.456, 0.406)  # ImageNet channel statistics.
    config.augment.std = (0.229, 0.224, 0.225)

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet50"

    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 90
    config.num_train_steps = 0  # 0: derived from num_epochs.
    config.label_smoothing = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.4  # 0.1 per 256 images.
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 0.0  # 0: no clipping.
    config.optimizer.schedule = "step"
    config.optimizer.warmup_epochs = 5
    config.optimizer.decay_epochs = (30, 60, 80)
    config.optimizer.decay_factor = 0.1

    config.log_every_steps = 100
    config.eval_every_steps = 6255  # ~5 epochs.
    config.checkpoint_every_steps = 1251  # ~1 epoch.
    config.keep_checkpoints = 3

    config.profile = ml_collections.ConfigDict()
    config.profile.start_step = -1  # >= 0: trace num_steps steps from here into workdir/profile.
    config.profile.num_steps = 5
    config.profile.dump_hlo = False  # Write the optimized HLO of the train step to the workdir.

    variant = arg or "default"
    if variant == "smoke":
        config.model.width = 8
        config.data.resize_size = 40
        config.data.worker_count = 0
        config.augment.crop_size = 32
        config.num_train_steps = 3
        config.batch_size = 8
        config.eval_batch_size = 8
        config.log_every_steps = 1
        config.eval_every_steps = 3
        config.checkpoint_every_steps = 3
        config.optimizer.warmup_epochs = 0
    elif variant != "default":
        raise UserError(
            f"Unknown variant {variant!r} of imagenet_resnet50.py; use 'smoke' or none."
        )
    return config
