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
    config.data.name = "mnist"
    config.data.data_dir = placeholder(str)  # None: the tfds default (~/tensorflow_datasets).
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.resize_size = placeholder(int)  # MNIST is a fixed 28x28.
    config.data.worker_count = 0
    config.data.cache = True  # Small enough for RAM: deserialize each record once.

    config.augment = ml_collections.ConfigDict()
    config.augment.crop_size = 28
    config.augment.pad = 2  # Random shifts of up to 2 px; no flips.
    config.augment.flip = False
    config.augment.random_resized_crop = False
    config.augment.mean = (0.1307,)  # MNIST pixel statistics.
    config.augment.std = (0.3081,)

    config.model = ml_collections.ConfigDict()
    config.model.name = "cnn"
    config.model.features = (32, 64)
    config.model.hidden = 128
    config.model.dropout_rate = 0.5

    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_epochs = 10
    config.num_train_steps = 0  # 0: derived from num_epochs.
    config.label_smoothing = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 0.0  # 0: no clipping.
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 0

    config.log_every_steps = 100
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3

    config.profile = ml_collections.ConfigDict()
    config.profile.start_step = -1  # >= 0: trace num_steps steps from here into workdir/profile.
    config.profile.num_steps = 5
    config.profile.dump_hlo = False  # Write the optimized HLO of the train step to the workdir.

    variant = arg or "default"
    if variant == "smoke":
        config.num_train_steps = 4
        config.batch_size = 8
        config.eval_batch_size = 8
        config.log_every_steps = 2
        config.eval_every_steps = 4
        config.checkpoint_every_steps = 4
    elif variant != "default":
        raise UserError(f"Unknown variant {variant!r} of mnist_cnn.py; use 'smoke' or none.")
    return config
