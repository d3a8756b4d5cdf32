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

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("classification", dtype="float32")
    config.data = common.tfds_data(  # 60,000 32x32 images fit in RAM: read in-process, cached.
        "cifar10", eval_split="test",
        resize_size=placeholder(int),  # CIFAR is a fixed 32x32.
    )
    config.augment = ml_collections.ConfigDict({
        "crop_size": 32,
        "pad": 4,  # The standard CIFAR augmentation: pad 4, crop 32, flip.
        "flip": True, "random_resized_crop": False,
        "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616),  # CIFAR-10 statistics.
    })
    config.model = ml_collections.ConfigDict({
        "name": "resnet18",
        "small_inputs": True,  # 32x32 images: keep the resolution in the stem.
    })

    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_epochs = 200
    config.label_smoothing = 0.0
    config.optimizer = common.sgd(
        learning_rate=0.1, nesterov=True, weight_decay=5e-4, warmup_epochs=1,
    )
    config.update(
        log_every_steps=100,
        eval_every_steps=3900, checkpoint_every_steps=3900,  # ~10 epochs.
    )

    if variant == "smoke":
        config.model.width = 8
        common.smoke(config, steps=3)
    return config
