"""ArcFace ResNet-50 on aligned 112x112 faces (CASIA-WebFace layout), verified on LFW, CFP-FP, AgeDB-30.

  python scripts/train.py --config configs/faces_arcface_r50.py --workdir runs/faces \
      --config.data.data_dir=/data/faces_webface_112x112
  python scripts/eval.py --config configs/faces_arcface_r50.py --workdir runs/faces \
      --config.data.data_dir=/data/faces_webface_112x112

`data_dir` holds the training set as one folder of aligned 112x112 face images
per identity, `train/<identity>/*.jpg` (CASIA-WebFace: 10,572 identities,
~490k images; insightface's MXNet `.rec` files must be unpacked to it first),
and insightface's verification files `lfw.bin`, `cfp_fp.bin` and
`agedb_30.bin` next to it (any paths work: `--config.data.train_split` and
`--config.data.eval_split`, comma-separated, are relative to `data_dir` or
absolute). Each verification set is logged with its name as prefix
(`lfw/verification_accuracy`, ...).

Recipe: insightface `arcface_torch`'s (SGD, lr 0.1, momentum 0.9, weight decay
5e-4, ArcFace s = 64, m = 0.5, 512-d embeddings, test-time flip), on a
torchvision-style ResNet-50 body (insightface uses its IResNet-50: a
stride-16 body with a 7x7 map; ours ends at 4x4) and a cosine schedule
instead of insightface's polynomial one. Expected: LFW verification
accuracy about 0.99 or more, as insightface reports for CASIA-trained
ResNet-50s; not measured here (no faces and no GPU on the development
machine).

Variants (`configs/faces_arcface_r50.py:VARIANT`):
  smoke: 2 steps of a tiny model on 32 px images, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("recognition", dtype="bfloat16")
    config.data = common.tfds_data(
        "identity_folder", eval_split="lfw.bin,cfp_fp.bin,agedb_30.bin",
        image_size=112,  # Aligned faces; other sizes are resized (shorter side) and centre-cropped.
        worker_count=8,  # JPEG decoding in grain worker processes.
        cache=False,  # ~490k images do not fit in RAM.
    )
    config.data.train_split = "train"
    config.augment = ml_collections.ConfigDict({
        "pad": 0,  # Aligned faces: no shifts (insightface: flips only).
        "flip": True,
        "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),  # insightface: (x / 255 - 0.5) / 0.5.
    })
    config.model = ml_collections.ConfigDict({
        "name": "recognizer", "backbone": "resnet50", "backbone_width": 64,
        "small_inputs": False,
        "embedding_dim": 512,
        "dropout_rate": 0.0,  # insightface: 0 for its ResNets.
        "margin": "arcface", "scale": 64.0, "easy_margin": False,
    })
    config.eval_flip = True  # insightface adds each face's embedding and its mirror's.
    config.eval_far = (1e-2, 1e-3)  # LFW has 3,000 negative pairs: 1e-3 is 3 of them.

    config.batch_size = 512  # Global (insightface: 128 per GPU on 4-8 GPUs).
    config.eval_batch_size = 500
    config.num_epochs = 20
    config.optimizer = common.sgd(learning_rate=0.1, weight_decay=5e-4, warmup_epochs=0)
    config.update(log_every_steps=100, eval_every_steps=2_000, checkpoint_every_steps=2_000)

    if variant == "smoke":
        config.data.update(image_size=32, worker_count=0)
        config.model.update(backbone="resnet18", backbone_width=4, embedding_dim=16)
        config.dtype = "float32"
        common.smoke(config, steps=2, batch_size=8, eval_batch_size=16)
    return config
