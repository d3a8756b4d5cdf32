"""Small CNN on your own images in an image folder (torchvision's `ImageFolder` layout).

  python scripts/train.py --config configs/image_folder_cnn.py --workdir runs/mine \
      --config.data.path=ROOT
  python scripts/eval.py --config configs/image_folder_cnn.py --workdir runs/mine \
      --config.data.path=ROOT

ROOT holds one folder per split, each with one sub-folder of images per class:
`ROOT/train/<class>/*.jpg` and `ROOT/val/<class>/*.png` (any format PIL reads,
any size and mode). Classes are the sub-folder names, sorted; `--config.data.
train_split` / `eval_split` name other split folders (e.g. `test`). Images
are converted to `data.channels` (3: RGB; 1: grey) and resized on the host
(shorter side to `data.resize_size`, centre square), then randomly shifted
and flipped on the device. A file that does not decode is skipped with a
warning naming it. No tfds build and no TensorFlow.

Expected: on `digits` written as an image folder (README.md, "Your own data":
1,437 train / 360 test images), test accuracy >= 0.98 in about 2 minutes on a
2-core CPU. On your data: a from-scratch baseline; for natural images see
configs/image_folder_resnet18.py (fine-tuning from torchvision weights).

Variants (`configs/image_folder_cnn.py:VARIANT`):
  smoke: a few steps on 16 px images, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("classification", dtype="float32")
    config.data = common.tfds_data(
        "image_folder", eval_split="val",
        resize_size=32,  # Host: shorter side to 32, centre square (the CNN's input size).
        channels=3,  # RGB; 1 converts every image to grey.
        worker_count=2,  # JPEG/PNG decoding in grain worker processes.
        cache=False,  # Decoded full-size images of a large folder would not fit in RAM.
    )
    config.augment = ml_collections.ConfigDict({
        "crop_size": 32,
        "pad": 2,  # Random shifts of up to 2 px.
        "flip": False,  # Off: digits and text are not mirror-symmetric; turn on for photos.
        "random_resized_crop": False,
        "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
    })
    config.model = ml_collections.ConfigDict({
        "name": "cnn", "features": (32, 64), "hidden": 128,
        "dropout_rate": 0.3,  # Own datasets are often small: regularize.
    })

    config.batch_size = 64  # Global; must divide over the devices.
    config.eval_batch_size = 128
    config.num_epochs = 30
    config.label_smoothing = 0.0
    config.optimizer = common.adamw(learning_rate=2e-3, weight_decay=1e-4, warmup_epochs=1)
    config.update(log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=500)

    if variant == "smoke":
        config.data.update(resize_size=16, worker_count=0)
        config.augment.crop_size = 16
        common.smoke(config, steps=4, eval_batch_size=8)
        config.optimizer.warmup_epochs = 0
    return config
