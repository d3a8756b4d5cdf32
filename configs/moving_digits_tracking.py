"""Multi-object tracking on `moving_digits`: a JDE detector-embedder and the jitted tracker.

  python scripts/train.py --config configs/moving_digits_tracking.py --workdir runs/track
  python scripts/eval.py --config configs/moving_digits_tracking.py --workdir runs/track
  python scripts/track.py --config configs/moving_digits_tracking.py --workdir runs/track \
      --input frames/ --out tracks.txt --video tracks.gif

Training learns, on the shuffled frames of 300 sequences, to detect every
digit card (FCOS, one class) and to embed it so that cards showing the same
handwritten digit match (a softmax over the 1,437 training digits, as JDE).
Each evaluation then tracks the 30 test sequences (digits never seen in
training; a third of them have two cards of the same digit class crossing)
and logs MOTA, IDF1, HOTA and the rest. Expected: MOTA >= 0.85 and IDF1 >=
0.80 in under 20 minutes on a 2-core CPU (README.md, "Tracking", has the
measured figures). The association is `config.track.association`:
"appearance" (motion and appearance), "byte" (ByteTrack, IoU only) or "iou"
(SORT-like); compare them on one checkpoint with
`scripts/eval.py ... --config.track.association=byte`.

Variants (`configs/moving_digits_tracking.py:VARIANT`):
  smoke: 2 steps of a tiny model, for tests.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = common.parse_variant(arg, __file__)
    config = common.base("tracking", dtype="float32")
    config.data = common.tfds_data(  # 13,200 frames of 128x128: read in-process, kept in RAM.
        "moving_digits", eval_split="test",
        image_size=128,
        max_boxes=8,  # Padded boxes per frame; a sequence has at most 6 cards.
    )
    config.augment = ml_collections.ConfigDict({
        "scale_range": (0.8, 1.25),  # The cards span 16-36 px.
        "flip": False,  # Mirrored digits are not digits.
        "min_box_size": 2.0,
        "mean": (0.5,), "std": (0.5,),
    })
    config.model = ml_collections.ConfigDict({
        "name": "jde", "backbone": "resnet18",
        "backbone_width": 16,  # A quarter of ResNet-18's width: CPU-sized.
        "fpn_features": 64,
        "head_convs": 2,
        "norm_groups": 16,
        "levels": (3, 4, 5),  # Strides 8-32: the cards are 16-36 px.
        "center_sampling_radius": 1.5,
        "num_identities": 1437,  # The digits of the train sequences (moving_digits.NUM_TRAIN_IDENTITIES).
        "embedding_dim": 64,
        "embedding_convs": 2,
        # JDE's plain softmax. ArcFace (s = 32, m = 0.5) collapsed here: for the
        # first 550 steps every card's embedding pointed the same way (cosine
        # 0.99 between different cards) and its loss sat at the label prior.
        "margin": "softmax",
        "scale": 32.0,  # Used by the normalised margins only.
        # The identity loss starts near 7 (ln 1,437; detection near 3); a lower
        # weight keeps it from drowning the detector's first steps.
        "embedding_loss_weight": 0.25,
        "embedding_points": 64,  # Positives per frame trained (<= 6 cards x ~9).
    })
    config.detect = common.detect(nms_iou=0.6)
    config.detect.score_threshold = 0.1  # The tracker's low_score: lower ones never matter.
    config.detect.max_detections = 20
    config.track = common.track(association="appearance")
    config.eval_min_visibility = 0.25  # Cards less visible than this are not scored.

    config.batch_size = 32  # Global; must divide over the devices.
    config.eval_batch_size = 120  # The 1,200 test frames in 10 batches.
    config.num_epochs = 3  # 1,125 steps.
    config.optimizer = common.adamw(
        learning_rate=2e-3, weight_decay=1e-4, warmup_epochs=0.25,
        grad_clip_norm=10.0,  # Early detection losses spike; clipping keeps them finite.
    )
    config.update(log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=500)

    if variant == "smoke":
        config.model.update(backbone_width=8, fpn_features=16, norm_groups=4, head_convs=1,
                            embedding_convs=1, embedding_dim=16)
        config.data.image_size = 64
        config.data.eval_split = "test[:80]"  # The first two sequences.
        config.optimizer.warmup_epochs = 0
        common.smoke(config, steps=2, batch_size=8, eval_batch_size=40)
    return config
