"""Object detection: boxes and classes per image, the detector's own loss, COCO box AP.

Implements the `jaxvision.tasks.Task` protocol. The detector itself (`models/fcos.py`, `models/retinanet.py`) owns its targets,
loss and box decoding; this file adds what every detector shares:

  - on-device augmentation with the boxes kept in sync (`augment.detection_train`);
  - post-processing inside jit: score threshold, top-k per pyramid level,
    class-aware NMS, a fixed number of detections per image (`predict`);
  - COCO evaluation on the host with pycocotools (`Evaluator`).

Batches (from `data.DetectionDecode`) hold "image" uint8 [B, S, S, C],
"boxes" float32 [B, M, 4] xyxy canvas pixels, "labels" int32 [B, M],
"box_mask" and "crowd" bool [B, M], "image_id" int32 [B], "scale" float32
[B, 2] (canvas pixels per original pixel, x and y), "height"/"width" int32 [B]
of the original image, and at eval "mask" bool [B] (False: padding).
"""

import os
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import coco, data
from jaxvision.data import augment
from jaxvision.ops import nms


def make_decode(config: ml_collections.ConfigDict) -> data.Decode:
    return data.DetectionDecode(config.data.image_size, config.data.max_boxes)


def input_shape(
    config: ml_collections.ConfigDict, info: data.DatasetInfo
) -> tuple[int, int, int, int]:
    """`(1, S, S, C)`: one canvas."""
    return (1, config.data.image_size, config.data.image_size, info.channels)


def loss_fn(
    params: Any, batch_stats: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    """The detector's loss on an augmented training batch.

    Crowd regions are left out of training (as in Detectron2 and torchvision);
    they only matter to COCO evaluation.

    Returns:
      `(loss, (new_batch_stats, metrics))`, metrics being batch-level scalars.
    """
    aug = config.augment
    trainable = batch["box_mask"] & ~batch["crowd"]  # [B, M]
    images, boxes, box_mask = augment.detection_train(
        batch["image"], batch["boxes"], trainable, rng,
        scale_range=tuple(aug.scale_range), flip=aug.flip, mean=aug.mean, std=aug.std,
        min_size=aug.min_box_size,
    )  # [B, S, S, C], [B, M, 4], [B, M]
    outputs, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"],
    )
    loss, metrics = model.loss(
        outputs, boxes, batch["labels"], box_mask, images.shape[1:3]
    )
    return loss, (updates.get("batch_stats", batch_stats), metrics)


def predict(
    variables: dict[str, Any],
    images: jax.Array,
    *,
    model: nn.Module,
    config: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
    """Final detections of uint8 canvases `[B, S, S, C]`, in canvas pixels.

    Per pyramid level, the `config.detect.pre_nms_topk` best (location, class)
    scores are kept; all levels' candidates then go through class-aware NMS,
    which keeps at most `config.detect.max_detections` boxes scoring at least
    `config.detect.score_threshold`.

    Returns:
      "boxes" `[B, D, 4]` xyxy, "scores" `[B, D]`, "labels" `[B, D]` int32 and
      "valid" `[B, D]` bool (False: empty slot), best first; D = max_detections.
    """
    cfg = config.detect
    image_size = images.shape[1:3]
    normalized = augment.detection_eval(images, mean=config.augment.mean, std=config.augment.std)
    outputs = model.apply(variables, normalized, train=False)
    boxes, scores = model.detect(outputs, image_size)  # [B, N, 4], [B, N, K]
    batch, _, num_classes = scores.shape

    candidates = []  # Per level: (boxes [B, k, 4], scores [B, k], labels [B, k]).
    start = 0
    for size in model.level_sizes(image_size):
        level = scores[:, start : start + size].reshape(batch, size * num_classes)  # [B, n*K]
        top_scores, flat = jax.lax.top_k(level, min(cfg.pre_nms_topk, size * num_classes))
        rows = start + flat // num_classes  # [B, k] into N
        top_boxes = jnp.take_along_axis(boxes, rows[..., None], axis=1)  # [B, k, 4]
        candidates.append((top_boxes, top_scores, flat % num_classes))
        start += size
    cand_boxes, cand_scores, cand_labels = (
        jnp.concatenate(parts, axis=1) for parts in zip(*candidates)
    )  # [B, C, 4], [B, C], [B, C]
    kept = nms.batched_nms(
        cand_boxes, cand_scores, cand_labels, cfg.nms_iou, cfg.max_detections,
        score_threshold=cfg.score_threshold,
    )
    return {
        "boxes": kept["boxes"],
        "scores": kept["scores"],
        "labels": kept["classes"].astype(jnp.int32),
        "valid": kept["valid"],
    }


def eval_outputs(
    variables: dict[str, Any], batch: dict[str, jax.Array], *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
    """The batch's detections, with the ground truth the host needs to score them."""
    detections = predict(variables, batch["image"], model=model, config=config)
    chex.assert_rank(detections["boxes"], 3)
    ground_truth = {
        key: batch[key]
        for key in ("boxes", "labels", "box_mask", "crowd", "image_id", "scale",
                    "height", "width", "mask")
    }
    return {"detections": detections, "ground_truth": ground_truth}


def to_original_pixels(boxes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Canvas-pixel boxes `[..., 4]` xyxy -> the original image's pixels.

    `scale` `[2]` is the decode's (x, y) canvas pixels per original pixel
    (`data.letterbox`).
    """
    return boxes / np.tile(scale, 2)  # [..., 4] / (x, y, x, y)


class Evaluator:
    """Collects every real eval image's detections and ground truth; COCO metrics.

    Boxes are mapped back to original image pixels (dividing by "scale"), so
    the metrics and the exported JSON refer to the dataset's own images.
    """

    def __init__(self, config: ml_collections.ConfigDict, info: data.DatasetInfo):
        del config
        self._class_names = info.class_names
        self._annotations: list[coco.ImageAnnotations] = []
        self._detections: list[coco.ImageDetections] = []

    def add(self, outputs: dict[str, Any]) -> None:
        """Adds one batch's `eval_outputs` (fetched to the host)."""
        gt, dets = outputs["ground_truth"], outputs["detections"]
        for i in np.flatnonzero(gt["mask"]):
            real = gt["box_mask"][i]  # [M]
            valid = dets["valid"][i]  # [D]
            image_id = int(gt["image_id"][i])
            self._annotations.append(coco.ImageAnnotations(
                image_id=image_id, height=int(gt["height"][i]), width=int(gt["width"][i]),
                boxes=to_original_pixels(gt["boxes"][i][real], gt["scale"][i]),
                labels=gt["labels"][i][real], crowd=gt["crowd"][i][real],
            ))
            self._detections.append(coco.ImageDetections(
                image_id=image_id,
                boxes=to_original_pixels(dets["boxes"][i][valid], gt["scale"][i]),
                scores=dets["scores"][i][valid], labels=dets["labels"][i][valid],
            ))

    def result(self, export_dir: str | None = None) -> dict[str, float]:
        """COCO box AP/AR over the images added (see `jaxvision.coco`).

        With `export_dir`, process 0 writes `ground_truth.json` (COCO instances)
        and `detections.json` (COCO results) there.
        """
        gt = coco.ground_truth(self._annotations, self._class_names)
        dets = coco.detections(self._detections)
        if export_dir is not None and jax.process_index() == 0:
            coco.write_json(os.path.join(export_dir, "ground_truth.json"), gt)
            coco.write_json(os.path.join(export_dir, "detections.json"), dets)
        return {**coco.evaluate(gt, dets), "num_images": float(len(self._annotations))}


def synthetic_batch(
    config: ml_collections.ConfigDict, info: data.DatasetInfo, batch_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Random canvases, each with `max(1, max_boxes // 2)` random boxes, as decoded batches.

    Random records (noise images at the canvas size, boxes of 1/8 to 1/2 of the
    side, random labels) go through the config's own `DetectionDecode`, so the
    keys, shapes and dtypes are exactly those of real batches.
    """
    size = config.data.image_size
    num_boxes = max(1, config.data.max_boxes // 2)
    decode = make_decode(config)
    examples = []
    for image_id in range(batch_size):
        hw = rng.uniform(0.125, 0.5, (num_boxes, 2))  # [n, 2] normalized (h, w)
        top_left = rng.uniform(0, 1 - hw)  # [n, 2] (ymin, xmin)
        record = {
            "image": rng.integers(0, 256, (size, size, info.channels), dtype=np.uint8),
            "image/id": image_id,
            "objects": {
                "bbox": np.concatenate([top_left, top_left + hw], axis=1),  # [n, 4] yxyx
                "label": rng.integers(0, info.num_classes, (num_boxes,)),
            },
        }
        examples.append(decode(record))
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["mask"] = np.ones((batch_size,), bool)
    return batch
