"""What two or more configs share, so that each config file holds only its own recipe.

Blocks every config uses: `base` (seed, task, dtype, mesh, step count,
checkpoints kept, profiling), `tfds_data`, `adamw` / `sgd` (each holds the
fields of both optimizers and every schedule), `smoke` and `parse_variant`.
Detection: `detect` (post-processing) and the two training recipes that all
detector configs share, `digit_detection` and `coco_1x`; they hold the
dense heads' (FCOS, RetinaNet) or the two-stage detectors' (Faster and Mask
R-CNN) model fields, and the detector config then adds its own settings.
Tracking: `track`, the tracker's settings.

A value that only one config uses stays in that config, with its reason.
"""

import dataclasses
import os

import ml_collections
from ml_collections.config_dict import placeholder

from jaxvision import tracking
from jaxvision.errors import UserError

VARIANTS = ("smoke",)  # Every config has these (besides the default, named by no arg).


def parse_variant(arg: str | None, config_file: str) -> str:
    """The variant after `--config FILE:` ("default" when none), or a one-line error.

    Args:
      arg: `get_config`'s argument.
      config_file: the config's `__file__`, named in the error.
    """
    name = arg or "default"
    if name != "default" and name not in VARIANTS:
        allowed = " or ".join(repr(v) for v in VARIANTS)
        raise UserError(
            f"Unknown variant {name!r} of {os.path.basename(config_file)}; use {allowed} or none."
        )
    return name


def base(task: str, dtype: str) -> ml_collections.ConfigDict:
    """A config holding what every experiment shares; the caller adds its recipe.

    Args:
      task: the `jaxvision.tasks` entry ("classification", "detection").
      dtype: the compute dtype; parameters, optimizer state and losses stay float32.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = task
    config.dtype = dtype

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # Data-parallel axis; -1: every device not used by fsdp.
    config.mesh.fsdp = 1  # >1 shards parameters and optimizer state over this many devices.

    config.num_train_steps = 0  # 0: derived from num_epochs.
    config.keep_checkpoints = 3

    config.profile = ml_collections.ConfigDict()
    config.profile.start_step = -1  # >= 0: trace num_steps steps from here into workdir/profile.
    config.profile.num_steps = 5
    config.profile.dump_hlo = False  # Write the optimized HLO of the train step to the workdir.
    return config


def tfds_data(
    name: str, eval_split: str, *, worker_count: int = 0, cache: bool = True, **fields
) -> ml_collections.ConfigDict:
    """`config.data`: dataset `name`, trained on its "train" split.

    `name` is a tfds builder, or a file dataset (`jaxvision.data.FILE_DATASETS`:
    image_folder, idx, coco_json, ...) read from `path`. `data_dir` and `path`
    are one field with two names: tfds's data dir, or the folder holding a file
    dataset's splits (`--config.data.name=idx --config.data.path=DIR`).

    The defaults suit a dataset that fits in RAM: records are read in the
    training process (grain workers would only add overhead) and deserialized
    once.

    Args:
      name: the tfds builder name.
      eval_split: the split evaluated (a tfds split string).
      worker_count: grain worker processes (JPEG decoding wants them); 0: none.
      cache: keep deserialized records in RAM.
      **fields: the task's own fields (`resize_size`, or `image_size` and `max_boxes`).
    """
    root = placeholder(str)  # None: the tfds default (~/tensorflow_datasets).
    return ml_collections.ConfigDict({
        "name": name,
        "data_dir": root,
        "path": root,  # The same field (a shared reference): setting one sets both.
        "train_split": "train",
        "eval_split": eval_split,
        "worker_count": worker_count,
        "cache": cache,
        **fields,
    })


def pretrained() -> dict:
    """`config.model` fields of a ResNet-based model that starts from pretrained weights.

    Off by default (random init). Fine-tuning as detectron2 does:
    `--config.model.init_from=torchvision:resnet50.pth
    --config.model.freeze_backbone_stages=2 --config.model.frozen_bn=True`.
    """
    return {
        # "torchvision:PATH" (or "timm:PATH"; .pth, .safetensors, .npz) or "workdir:RUN"
        # (a jaxvision run's newest checkpoint); "": random init. See jaxvision/weights.py.
        "init_from": "",
        # Never update the stem and the first k-1 stages (detectron2's FREEZE_AT;
        # 2 = stem + stage 1, its and torchvision's default for fine-tuning); 0: none.
        "freeze_backbone_stages": 0,
        # The backbone's BatchNorm uses its running statistics and does not learn
        # (detectron2's FrozenBN): pretrained statistics survive small batches.
        "frozen_bn": False,
    }


def _optimizer(
    name: str, *, learning_rate: float, weight_decay: float, warmup_epochs: float, **recipe
) -> ml_collections.ConfigDict:
    """`config.optimizer` holding the fields of every optimizer and schedule.

    `jaxvision.optim` reads those of the optimizer and schedule named, so any
    config runs with `--config.optimizer.name=sgd` or `adamw` (and
    `--config.optimizer.schedule=...`); retune `learning_rate` and
    `weight_decay` when switching, as their good values differ.

    Args:
      name: "sgd" or "adamw".
      learning_rate: the peak rate, reached after the warmup.
      weight_decay: on kernels only; SGD adds it to the gradient (L2), AdamW decouples it.
      warmup_epochs: linear warmup from 0.
      **recipe: other fields to set.
    """
    optimizer = ml_collections.ConfigDict({
        "name": name, "learning_rate": learning_rate, "weight_decay": weight_decay,
        "momentum": 0.9,  # sgd only; 0: none.
        "nesterov": False,  # sgd only.
        "b1": 0.9, "b2": 0.999,  # adamw only: decay rates of the gradient's moment estimates.
        "grad_clip_norm": 0.0,  # Clip the gradient's global norm to this; 0: no clipping.
        "schedule": "cosine",  # After the warmup: "constant", "cosine" or "step".
        "warmup_epochs": warmup_epochs,
        "decay_epochs": (),  # step only: multiply the rate by decay_factor at these epochs...
        "decay_factor": 0.1,  # ...counted from the start of training.
    })
    optimizer.update(recipe)
    return optimizer


def adamw(
    *, learning_rate: float, weight_decay: float, warmup_epochs: float,
    grad_clip_norm: float = 0.0,
) -> ml_collections.ConfigDict:
    """`config.optimizer`: AdamW (b1 0.9, b2 0.999), linear warmup, then cosine decay.

    Weight decay applies to kernels only; `grad_clip_norm` 0 means no clipping.
    """
    return _optimizer(
        "adamw", learning_rate=learning_rate, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, grad_clip_norm=grad_clip_norm,
    )


def sgd(
    *, learning_rate: float, weight_decay: float, warmup_epochs: float,
    nesterov: bool = False, decay_epochs: tuple[float, ...] = (),
) -> ml_collections.ConfigDict:
    """`config.optimizer`: SGD with momentum 0.9 and linear warmup, no clipping.

    After the warmup the rate follows a cosine decay, or, when `decay_epochs`
    is given, is divided by 10 at each of those epochs (the "step" schedule).
    """
    return _optimizer(
        "sgd", learning_rate=learning_rate, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, nesterov=nesterov, decay_epochs=decay_epochs,
        schedule="step" if decay_epochs else "cosine",
    )


def smoke(
    config: ml_collections.ConfigDict, *, steps: int, batch_size: int = 8,
    eval_batch_size: int | None = 8, log_every_steps: int = 1,
    checkpoint_every_steps: int | None = None,
) -> None:
    """Shrinks `config` in place to a `steps`-step run that evaluates at its end.

    The `smoke` variants use it: tests train them in seconds.
    `eval_batch_size` None keeps the config's; `checkpoint_every_steps` None
    checkpoints at the end only.
    """
    config.num_train_steps = steps
    config.batch_size = batch_size
    if eval_batch_size is not None:
        config.eval_batch_size = eval_batch_size
    config.update(log_every_steps=log_every_steps, eval_every_steps=steps,
                  checkpoint_every_steps=checkpoint_every_steps or steps)


TWO_STAGE = ("faster_rcnn", "mask_rcnn")  # The other detectors are dense (one stage).


def detect(nms_iou: float) -> ml_collections.ConfigDict:
    """`config.detect`: a detector's post-processing (eval and predict).

    Args:
      nms_iou: the class-aware NMS threshold (each detector paper has its own).
    """
    return ml_collections.ConfigDict({
        "score_threshold": 0.05,
        # Candidates before NMS: (location, class) pairs per pyramid level for a
        # dense detector, (proposal, class) pairs per image for a two-stage one.
        "pre_nms_topk": 1000,
        "nms_iou": nms_iou,
        "max_detections": 100,  # Per image, as COCO's AR100 counts.
    })


def _tiny_detector(config: ml_collections.ConfigDict) -> None:
    """The smoke variants' detector: a few channels, small heads, 64 px canvases, no warmup."""
    config.model.update(backbone_width=8, fpn_features=16)
    if config.model.name in TWO_STAGE:
        config.model.update(
            box_head_features=32, rpn_batch_size=64, roi_batch_size=32,
            rpn_pre_nms_topk_train=100, rpn_post_nms_topk_train=50,
            rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50, mask_head_convs=1,
            sampling_ratio=1,  # A third less compile time: 4 gathers per RoIAlign, not 16.
        )
    else:
        config.model.update(norm_groups=4, head_convs=1)
    config.data.image_size = 64
    config.optimizer.warmup_epochs = 0


def _digit_model(detector: str) -> ml_collections.ConfigDict:
    """`config.model` of a detector on `digit_detection`: a narrow ResNet-18 FPN."""
    model = ml_collections.ConfigDict({
        "name": detector, "backbone": "resnet18",
        "backbone_width": 16,  # A quarter of ResNet-18's width: CPU-sized.
        "fpn_features": 64,
    })
    if detector not in TWO_STAGE:
        model.head_convs = 2  # The paper's 4 convs add little on 10 simple classes.
        model.norm_groups = 16
        return model
    # Two-stage: torchvision's recipe scaled to 128 px canvases of <= 6 digits.
    model.anchor_scale = 4.0  # 16 px anchors on P2 (torchvision: 32 px), the digits are 9-60 px.
    model.rpn_pre_nms_topk_train = 500  # Per level (torchvision 2,000, on 800 px images).
    model.rpn_post_nms_topk_train = 200  # Per image (torchvision 2,000).
    model.rpn_pre_nms_topk_test = 300
    model.rpn_post_nms_topk_test = 100
    model.roi_batch_size = 32  # At most 8 positives (and mask RoIs): >= the 6 digits (torchvision 512).
    model.box_head_features = 256  # torchvision 1,024.
    model.mask_head_convs = 2  # torchvision 4.
    return model


def digit_detection(detector: str, variant: str, nms_iou: float) -> ml_collections.ConfigDict:
    """A detector on `digit_detection`: all but the detector's own settings of its config.

    Shared by configs/digit_detection_fcos.py, _retinanet.py, _faster_rcnn.py
    and _mask_rcnn.py.

    Args:
      detector: the model name ("fcos", "retinanet", "faster_rcnn", "mask_rcnn").
      variant: as returned by `parse_variant`.
      nms_iou: the detector's NMS threshold.
    """
    config = base("detection", dtype="float32")
    config.data = tfds_data(  # 6,000 small canvases: read in-process and kept in RAM.
        "digit_detection", eval_split="test",
        image_size=128,  # Canvas side: the longer image side is resized to it.
        max_boxes=8,  # Padded boxes per image; canvases hold at most 6 digits.
        # Instance masks per box, G x G over the box (0: none); the digits span 12-48 px.
        mask_size=32 if detector == "mask_rcnn" else 0,
    )
    config.augment = ml_collections.ConfigDict({
        # Random rescaling with crop/pad to the canvas; digits keep their identity
        # at other sizes, and the test digits span 12-48 px.
        "scale_range": (0.75, 1.25),
        "flip": False,  # Mirrored digits are not digits.
        "min_box_size": 2.0,  # Boxes cut to less than 2 px by the crop are dropped.
        "mean": (0.5,), "std": (0.5,),
    })
    config.model = _digit_model(detector)
    config.detect = detect(nms_iou)

    config.batch_size = 32  # Global; must divide over the devices.
    config.eval_batch_size = 128  # 500 test canvases in 4 batches (the last padded).
    config.num_epochs = 6  # 1,122 steps; measured AP50: 0.86 at step 500, 0.94 at step 1,000.
    config.optimizer = adamw(
        learning_rate=2e-3, weight_decay=1e-4, warmup_epochs=1,
        grad_clip_norm=10.0,  # Early detection losses spike; clipping keeps them finite.
    )
    config.update(log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=500)
    if detector in TWO_STAGE:
        # 561 steps: the proposals and RoI sampling learn fast (Faster R-CNN's AP50
        # was 0.98 at step 500 of the 6-epoch schedule) and a step costs ~3x FCOS's.
        config.num_epochs = 3

    if variant == "smoke":
        _tiny_detector(config)
        if detector not in TWO_STAGE:
            config.model.levels = (3, 4, 5)
        config.data.eval_split = "test[:64]"
        smoke(config, steps=2, eval_batch_size=32)
    return config


# Detectron2's 1x schedule counts steps; the optimizer's schedule counts epochs.
_COCO_BATCH_SIZE = 16
_COCO_STEPS_PER_EPOCH = 118_287 // _COCO_BATCH_SIZE  # coco/2017 train images per batch of 16.


def coco_1x(detector: str, variant: str, nms_iou: float) -> ml_collections.ConfigDict:
    """A detector, ResNet-50 FPN, on COCO 2017 with Detectron2's 1x schedule.

    All but the detector's own settings of its config (arguments as for
    `digit_detection`); shared by configs/coco_fcos_r50_fpn.py,
    _retinanet_r50_fpn.py, _faster_rcnn_r50_fpn.py and _mask_rcnn_r50_fpn.py.
    Two-stage detectors keep `FasterRCNN`'s defaults (torchvision's).
    """
    config = base("detection", dtype="bfloat16")
    config.data = tfds_data(
        "coco/2017", eval_split="validation",
        image_size=1024,  # Canvas side: the longer image side is resized to it.
        max_boxes=100,  # Padded boxes per image (COCO 2017 has at most 93).
        worker_count=8,  # JPEG decoding and resizing in grain worker processes.
        cache=False,  # 118k images do not fit in RAM.
        # Instance masks per box, G x G over the box (0: none), for Mask R-CNN.
        mask_size=56 if detector == "mask_rcnn" else 0,
        # COCO instances JSON files (annotations/instances_{train,val}2017.json):
        # tfds coco/2017 has no masks, Mask R-CNN reads them from these files.
        train_annotations=placeholder(str),
        eval_annotations=placeholder(str),
    )
    config.augment = ml_collections.ConfigDict({
        "scale_range": (1.0, 1.0),  # 1x: no scale jitter (3x recipes use it).
        "flip": True,
        "min_box_size": 1.0,
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),  # ImageNet statistics.
    })
    config.model = ml_collections.ConfigDict({
        "name": detector, "backbone": "resnet50", "backbone_width": 64, "fpn_features": 256,
        **pretrained(),
    })
    if detector not in TWO_STAGE:
        config.model.update(head_convs=4, norm_groups=32)
    config.detect = detect(nms_iou)

    config.batch_size = _COCO_BATCH_SIZE  # Global; must divide over the devices.
    config.eval_batch_size = 16
    config.num_epochs = 0
    config.num_train_steps = 90_000
    config.optimizer = sgd(
        learning_rate=0.01, weight_decay=1e-4,
        # 1,000 warmup steps, then the rate divided by 10 at steps 60k and 80k.
        warmup_epochs=1_000 / _COCO_STEPS_PER_EPOCH,
        decay_epochs=(60_000 / _COCO_STEPS_PER_EPOCH, 80_000 / _COCO_STEPS_PER_EPOCH),
    )
    config.update(log_every_steps=100, eval_every_steps=10_000, checkpoint_every_steps=2_000)

    if variant == "smoke":
        _tiny_detector(config)
        config.model.backbone = "resnet18"
        config.data.update(max_boxes=8, worker_count=0, mask_size=min(config.data.mask_size, 16))
        smoke(config, steps=2)
    return config


def track(**overrides) -> ml_collections.ConfigDict:
    """`config.track`: the tracker's settings, every field of `jaxvision.tracking.TrackerConfig`.

    Defaults are the dataclass's (ByteTrack's thresholds where it has them);
    a config passes its own as keyword arguments.
    """
    fields = dataclasses.asdict(tracking.TrackerConfig())
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(f"Unknown tracker settings {sorted(unknown)}; use fields of {sorted(fields)}.")
    return ml_collections.ConfigDict({**fields, **overrides})
