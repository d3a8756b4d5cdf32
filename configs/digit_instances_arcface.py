"""ArcFace embeddings on `digit_instances`: recognise handwritten digits never seen in training.

  python scripts/train.py --config configs/digit_instances_arcface.py --workdir runs/arcface
  python scripts/eval.py --config configs/digit_instances_arcface.py --workdir runs/arcface

Every one of scikit-learn's handwritten digits is an identity; training sees
random views of 1,437 of them, and the test split's 3,000 LFW-style pairs ask
whether two views show the same one of the other 360 (half of the different
pairs are two instances of the same digit class). Expected: 10-fold
verification accuracy >= 0.95 in under 15 minutes on a 2-core CPU (README.md,
"Recognition", has the measured figures). Other margins on the same budget:
`--config.model.margin=cosface` (or sphereface, softmax).

Variants (`configs/digit_instances_arcface.py:VARIANT`):
  smoke: 2 steps of a tiny model, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("recognition", dtype="float32")
    config.data = common.tfds_data(  # 18k images of 32x32: read in-process and kept in RAM.
        "digit_instances", eval_split="test", image_size=32,
    )
    config.augment = ml_collections.ConfigDict({
        "pad": 2,  # Random shifts of up to 2 px; the views already vary in pose.
        "flip": False,  # Mirrored digits are not digits.
        "mean": (0.5,), "std": (0.5,),
    })
    config.model = ml_collections.ConfigDict({
        "name": "recognizer", "backbone": "resnet18",
        "backbone_width": 16,  # A quarter of ResNet-18's width: CPU-sized.
        # ImageNet stem (stride 4) on 32 px: a 1x1 map of 128 channels into the head.
        # The CIFAR stem (stride 1) is 7x slower per step: 20 epochs would take 25 minutes.
        "small_inputs": False,
        "embedding_dim": 512,
        "dropout_rate": 0.0,
        "margin": "arcface",
        # insightface's s = 64 is for 10k-100k identities; 1,437 need less to separate.
        "scale": 32.0,
        "easy_margin": False,
    })
    config.eval_flip = False  # Mirrored digits are not digits.
    config.eval_far = (1e-2, 1e-3)  # Reported as tar@far=1e-2, ...; 1,500 negative pairs.

    config.batch_size = 128  # Global; must divide over the devices.
    config.eval_batch_size = 400  # The 3,600 test images in 9 batches.
    config.num_epochs = 20
    config.optimizer = common.sgd(  # insightface's recipe: SGD, momentum 0.9, weight decay 5e-4.
        learning_rate=0.1, weight_decay=5e-4, warmup_epochs=1,
    )
    config.update(log_every_steps=50, eval_every_steps=1000, checkpoint_every_steps=1000)

    if variant == "smoke":
        config.model.update(backbone_width=4, embedding_dim=16)
        config.optimizer.warmup_epochs = 0
        common.smoke(config, steps=2, batch_size=16, eval_batch_size=400)
    return config
