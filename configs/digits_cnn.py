"""Small CNN on `digits`: scikit-learn's 1,797 real 8x8 handwritten digits (the main job).

  python scripts/train.py --config configs/digits_cnn.py --workdir runs/digits_cnn
  python scripts/eval.py --config configs/digits_cnn.py --workdir runs/digits_cnn

Expected: test accuracy 0.992 (>= 0.97) on the 360 test digits, in 20-25 s
on a 2-core CPU (README.md, "Configs", has the measured figures). The
dataset is built from scikit-learn on first use: no download, no TensorFlow.

Variants (`configs/digits_cnn.py:VARIANT`):
  smoke: 60 steps, for tests (accuracy well above chance, seconds).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("classification", dtype="float32")
    config.data = common.tfds_data(  # 1,797 tiny images: read in-process and kept in RAM.
        "digits", eval_split="test",
        resize_size=placeholder(int),  # Images are already a fixed 8x8.
    )
    config.augment = ml_collections.ConfigDict({
        "crop_size": 8,
        "pad": 1,  # Random shifts of up to 1 px; no flips (digits are not symmetric).
        "flip": False, "random_resized_crop": False, "mean": (0.5,), "std": (0.5,),
    })
    config.model = ml_collections.ConfigDict({
        "name": "cnn", "features": (32, 64), "hidden": 128,
        "dropout_rate": 0.3,  # 1,437 training images: regularize.
    })

    config.batch_size = 64  # Global; must divide over the devices.
    config.eval_batch_size = 120  # The 360 test digits in 3 batches.
    config.num_epochs = 40
    config.label_smoothing = 0.0
    config.optimizer = common.adamw(learning_rate=3e-3, weight_decay=1e-4, warmup_epochs=1)
    config.update(log_every_steps=50, eval_every_steps=300, checkpoint_every_steps=300)

    if variant == "smoke":
        common.smoke(config, steps=60, batch_size=32, eval_batch_size=None,
                     log_every_steps=20, checkpoint_every_steps=20)
        config.optimizer.warmup_epochs = 0
    return config
