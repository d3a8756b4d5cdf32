"""ResNet-18 (CIFAR stem: 3x3 conv, no max pool) on CIFAR-10 (tfds `cifar10`).

  pip install -e ".[prepare]" && tfds build cifar10
  python scripts/train.py --config configs/cifar10_resnet18.py --workdir runs/cifar10_resnet18

Recipe: SGD + Nesterov momentum 0.9, lr 0.1 at batch 128, cosine over 200
epochs, weight decay 5e-4, pad-4 random crop + horizontal flip.
Expected: test accuracy ~0.95, about an hour on one modern GPU (not yet
measured by this project: it needs the prepared dataset).

Variants (`configs/cifar10_resnet18.py:VARIANT`):
  smoke: a narrow ResNet-18 for a few steps, for tests (with mocked data).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from jaxvision.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "classification"
    config.dtype = "float32"

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # Data-parallel axis; -1: every device not used by fsdp.
    config.mesh.fsdp = 1  # >1 shards parameters and optimizer state over this many devices.

    config.data = ml_collections.ConfigDict()
    config.data.name = "cifar10"
    config.data.data_dir = placeholder(str)  # None: the tfds default (~/tensorflow_datasets).
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.resize_size = placeholder(int)  # CIFAR is a fixed 32x32.
    config.data.worker_count = 0
    config.data.cache = True  # Small enough for RAM: deserialize each record once.

    config.augment = ml_collections.ConfigDict()
    config.augment.crop_size = 32
    config.augment.pad = 4  # The standard CIFAR augmentation: pad 4, crop 32, flip.
    config.augment.flip = True
    config.augment.random_resized_crop = False
    config.augment.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics.
    config.augment.std = (0.2470, 0.2435, 0.2616)

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.small_inputs = True  # 32x32 images: keep the resolution in the stem.

    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_epochs = 200
    config.num_train_steps = 0  # 0: derived from num_epochs.
    config.label_smoothing = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.optimizer.grad_clip_norm = 0.0  # 0: no clipping.
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 1

    config.log_every_steps = 100
    config.eval_every_steps = 3900  # ~10 epochs.
    config.checkpoint_every_steps = 3900
    config.keep_checkpoints = 3

    config.profile = ml_collections.ConfigDict()
    config.profile.start_step = -1  # >= 0: trace num_steps steps from here into workdir/profile.
    config.profile.num_steps = 5
    config.profile.dump_hlo = False  # Write the optimized HLO of the train step to the workdir.

    variant = arg or "default"
    if variant == "smoke":
        config.model.width = 8
        config.num_train_steps = 3
        config.batch_size = 8
        config.eval_batch_size = 8
        config.log_every_steps = 1
        config.eval_every_steps = 3
        config.checkpoint_every_steps = 3
    elif variant != "default":
        raise UserError(
            f"Unknown variant {variant!r} of cifar10_resnet18.py; use 'smoke' or none."
        )
    return config
