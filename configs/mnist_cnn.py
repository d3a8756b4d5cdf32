"""Small CNN on MNIST (tfds `mnist`, prepared by the user).

  pip install -e ".[prepare]" && tfds build mnist
  python scripts/train.py --config configs/mnist_cnn.py --workdir runs/mnist_cnn

Expected: test accuracy ~0.992 after 10 epochs, a few minutes on one GPU
(not yet measured by this project: it needs the prepared dataset).

Variants (`configs/mnist_cnn.py:VARIANT`):
  smoke: a few steps on a tiny batch, for tests (with mocked data).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("classification", dtype="float32")
    config.data = common.tfds_data(  # Small enough for RAM: in-process reads, cached.
        "mnist", eval_split="test",
        resize_size=placeholder(int),  # MNIST is a fixed 28x28.
    )
    config.augment = ml_collections.ConfigDict({
        "crop_size": 28,
        "pad": 2,  # Random shifts of up to 2 px; no flips.
        "flip": False, "random_resized_crop": False,
        "mean": (0.1307,), "std": (0.3081,),  # MNIST pixel statistics.
    })
    config.model = ml_collections.ConfigDict({
        "name": "cnn", "features": (32, 64), "hidden": 128, "dropout_rate": 0.5,
    })

    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_epochs = 10
    config.label_smoothing = 0.0
    config.optimizer = common.adamw(learning_rate=1e-3, weight_decay=1e-4, warmup_epochs=0)
    config.update(log_every_steps=100, eval_every_steps=1000, checkpoint_every_steps=1000)

    if variant == "smoke":
        common.smoke(config, steps=4, log_every_steps=2)
    return config
