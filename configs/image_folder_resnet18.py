"""ResNet-18 on your own images in an image folder; fine-tunes torchvision weights when given.

  python scripts/train.py --config configs/image_folder_resnet18.py --workdir runs/mine_r18 \
      --config.data.path=ROOT --config.model.init_from=torchvision:resnet18.pth

ROOT is laid out as for configs/image_folder_cnn.py (`ROOT/train/<class>/...`,
`ROOT/val/<class>/...`). `resnet18.pth` is torchvision's ImageNet checkpoint
(`torchvision.models.resnet18(weights="IMAGENET1K_V1").state_dict()`, saved
with torch.save; or the downloaded `resnet18-f37072fd.pth`; `.safetensors`
and `.npz` copies need no torch). Its backbone is loaded; the 1000-class head
is re-initialised for ROOT's classes (logged). Without `init_from` the
network trains from scratch (then raise `num_epochs`).

Recipe (fine-tuning): ImageNet preprocessing (shorter side 256 on the host,
random-resized crop 224 + flip on the device, ImageNet mean/std, centre 224
at eval), SGD momentum 0.9, lr 0.01 at batch 64 with a cosine decay over 15
epochs, weight decay 1e-4, bf16 compute.
Expected: on a small natural-image folder (e.g. Imagenette, 10 classes),
fine-tuning from ImageNet weights reaches ~0.98 top-1 in a few epochs on one
GPU (not yet measured by this project: no GPU or pretrained weights here).

Variants (`configs/image_folder_resnet18.py:VARIANT`):
  smoke: a narrow ResNet-18 on 32 px images for a few steps, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("classification", dtype="bfloat16")
    config.data = common.tfds_data(
        "image_folder", eval_split="val",
        # Host: shorter side to 256, centre 256x256; the crop to 224 happens on the device.
        resize_size=256,
        channels=3,
        worker_count=4,  # JPEG decoding is the host's bottleneck (docs/performance.md).
        cache=False,
    )
    config.augment = ml_collections.ConfigDict({
        "crop_size": 224, "pad": 0, "flip": True, "random_resized_crop": True,
        # ImageNet statistics: what torchvision's pretrained weights expect.
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    })
    config.model = ml_collections.ConfigDict({"name": "resnet18", **common.pretrained()})

    config.batch_size = 64
    config.eval_batch_size = 128
    config.num_epochs = 15
    config.label_smoothing = 0.1
    config.optimizer = common.sgd(learning_rate=0.01, weight_decay=1e-4, warmup_epochs=1)
    config.update(log_every_steps=50, eval_every_steps=1000, checkpoint_every_steps=1000)

    if variant == "smoke":
        config.model.width = 8
        config.data.update(resize_size=40, worker_count=0)
        config.augment.crop_size = 32
        common.smoke(config, steps=3)
        config.optimizer.warmup_epochs = 0
    return config
