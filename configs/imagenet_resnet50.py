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

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("classification", dtype="bfloat16")
    config.data = common.tfds_data(
        "imagenet2012", eval_split="validation",
        # Host side: shorter side to 256, center 256x256, so batches have one shape.
        # The random-resized crop to 224 then happens on the device.
        resize_size=256,
        worker_count=8,  # JPEG decoding is the host's bottleneck.
        cache=False,  # ~150 GB: read from disk.
    )
    config.augment = ml_collections.ConfigDict({
        "crop_size": 224, "pad": 0, "flip": True, "random_resized_crop": True,
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),  # ImageNet statistics.
    })
    config.model = ml_collections.ConfigDict({"name": "resnet50"})

    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 90
    config.label_smoothing = 0.0
    config.optimizer = common.sgd(
        learning_rate=0.4,  # 0.1 per 256 images.
        weight_decay=1e-4, warmup_epochs=5, decay_epochs=(30, 60, 80),
    )
    config.update(
        log_every_steps=100,
        eval_every_steps=6255,  # ~5 epochs.
        checkpoint_every_steps=1251,  # ~1 epoch.
    )

    if variant == "smoke":
        config.model.width = 8
        config.data.update(resize_size=40, worker_count=0)
        config.augment.crop_size = 32
        common.smoke(config, steps=3)
        config.optimizer.warmup_epochs = 0
    return config
