"""Object detection: boxes and classes per image, the detector's own loss, COCO box AP.

Implements the `jaxvision.tasks.Task` protocol. The detector itself
(`models/fcos.py`, `retinanet.py`, `faster_rcnn.py`) owns its targets, loss,
box decoding and post-processing, behind two methods every detector has:
`training_loss(images, targets)` and `predict(images, **config.detect)`
(padded "boxes", "scores", "labels", "valid", and "masks" for Mask R-CNN).
This file adds what every detector shares:

  - on-device augmentation with the boxes (and masks) kept in sync
    (`augment.detection_train`);
  - COCO evaluation on the host with pycocotools (`Evaluator`): box AP, and
    mask AP (`mask_` metrics) when the detector predicts masks.

Batches (from `data.DetectionDecode`) hold "image" uint8 [B, S, S, C],
"boxes" float32 [B, M, 4] xyxy canvas pixels, "labels" int32 [B, M],
"box_mask" and "crowd" bool [B, M], "image_id" int32 [B], "scale" float32
[B, 2] (canvas pixels per original pixel, x and y), "height"/"width" int32 [B]
of the original image, with `config.data.mask_size` G > 0 "masks" uint8
[B, M, G, G] (each box's instance mask over the box), and at eval "mask"
bool [B] (False: padding).
"""

import os
from typing import Any

import chex
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxvision import coco, data
from jaxvision.data import augment


def make_decode(config: ml_collections.ConfigDict) -> data.Decode:
    """`DetectionDecode` at the config's canvas size, with masks when `data.mask_size` > 0.

    Masks come from the dataset ("instances", as in `digit_detection`) or, for
    tfds coco (no masks), from the COCO instances files
    `data.eval_annotations` and `data.train_annotations` (those set).
    """
    cfg = config.data
    paths = [p for p in (cfg.get("eval_annotations"), cfg.get("train_annotations")) if p]
    segmentations = None
    mask_size = cfg.get("mask_size", 0)  # Configs written before masks have none.
    if mask_size and paths:
        segmentations = {}
        for path in paths:
            segmentations.update(data.load_coco_segmentations(path))
    return data.DetectionDecode(
        cfg.image_size, cfg.max_boxes, mask_size=mask_size, segmentations=segmentations,
        segmentations_file=" or ".join(paths) or None,
    )


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
    they only matter to COCO evaluation. The tracking task uses this loss too:
    its batches' "identities" `[B, M]` go to the detector with the boxes (the
    augmentation only drops boxes, so the rows stay aligned).

    Returns:
      `(loss, (new_batch_stats, metrics))`, metrics being batch-level scalars.
    """
    aug = config.augment
    trainable = batch["box_mask"] & ~batch["crowd"]  # [B, M]
    augmented = augment.detection_train(
        batch["image"], batch["boxes"], trainable, rng,
        scale_range=tuple(aug.scale_range), flip=aug.flip, mean=aug.mean, std=aug.std,
        min_size=aug.min_box_size, masks=batch.get("masks"),
    )  # images [B, S, S, C], boxes [B, M, 4], box_mask [B, M] (, masks [B, M, G, G])
    images = augmented[0]
    targets = {"boxes": augmented[1], "labels": batch["labels"], "box_mask": augmented[2]}
    if "masks" in batch:
        targets["masks"] = augmented[3]
    if "identities" in batch:  # Tracking: the JDE detector also learns to tell them apart.
        targets["identities"] = batch["identities"]
    (loss, metrics), updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, targets,
        method="training_loss", rngs={"sampling": jax.random.fold_in(rng, 1)},
        mutable=["batch_stats"],
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

    The detector's own `predict` post-processing (inside jit) with the
    settings `config.detect`.

    Returns:
      "boxes" `[B, D, 4]` xyxy, "scores" `[B, D]`, "labels" `[B, D]` int32 and
      "valid" `[B, D]` bool (False: empty slot), best first; D = max_detections.
      Detectors with a mask head add "masks" `[B, D, m, m]` float32: each
      detection's mask probabilities over its box.
    """
    normalized = augment.detection_eval(images, mean=config.augment.mean, std=config.augment.std)
    return model.apply(variables, normalized, method="predict", **config.detect)


def eval_outputs(
    variables: dict[str, Any], batch: dict[str, jax.Array], *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
    """The batch's detections, with the ground truth the host needs to score them."""
    detections = predict(variables, batch["image"], model=model, config=config)
    chex.assert_rank(detections["boxes"], 3)
    keys = ["boxes", "labels", "box_mask", "crowd", "image_id", "scale", "height", "width", "mask"]
    if "masks" in detections:  # Box-relative ground-truth masks, for the mask metrics.
        keys.append("masks")
    ground_truth = {key: batch[key] for key in keys}
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
    the metrics and the exported JSON refer to the dataset's own images. When
    the detector predicts masks, every box-relative mask (predicted `[m, m]`
    probabilities and ground-truth `[G, G]`) is pasted over its box in the
    original image and RLE-encoded (`coco.mask_rles`), and pycocotools' segm
    evaluation adds the mask metrics with a `mask_` prefix (`mask_AP`, ...).
    """

    def __init__(self, config: ml_collections.ConfigDict, info: data.DatasetInfo, split: str):
        del config, split
        self._class_names = info.class_names
        self._category_ids = info.category_ids  # Sparse ids of a coco_json dataset, else None.
        self._annotations: list[coco.ImageAnnotations] = []
        self._detections: list[coco.ImageDetections] = []

    def add(self, outputs: dict[str, Any]) -> None:
        """Adds one batch's `eval_outputs` (fetched to the host)."""
        gt, dets = outputs["ground_truth"], outputs["detections"]
        for i in np.flatnonzero(gt["mask"]):
            real = gt["box_mask"][i]  # [M]
            valid = dets["valid"][i]  # [D]
            image_id = int(gt["image_id"][i])
            height, width = int(gt["height"][i]), int(gt["width"][i])
            gt_boxes = to_original_pixels(gt["boxes"][i][real], gt["scale"][i])  # [N, 4]
            det_boxes = to_original_pixels(dets["boxes"][i][valid], gt["scale"][i])  # [K, 4]
            gt_masks = det_masks = None
            if "masks" in dets:
                gt_masks = coco.mask_rles(gt["masks"][i][real], gt_boxes, height, width)
                det_masks = coco.mask_rles(dets["masks"][i][valid], det_boxes, height, width)
            self._annotations.append(coco.ImageAnnotations(
                image_id=image_id, height=height, width=width, boxes=gt_boxes,
                labels=gt["labels"][i][real], crowd=gt["crowd"][i][real], masks=gt_masks,
            ))
            self._detections.append(coco.ImageDetections(
                image_id=image_id, boxes=det_boxes, scores=dets["scores"][i][valid],
                labels=dets["labels"][i][valid], masks=det_masks,
            ))

    def result(self, export_dir: str | None = None) -> dict[str, float]:
        """COCO box AP/AR (and mask AP/AR) over the images added (see `jaxvision.coco`).

        With `export_dir`, process 0 writes `ground_truth.json` (COCO instances)
        and `detections.json` (COCO results, with "segmentation" RLEs for
        masks) there, with the dataset's own category ids (`DatasetInfo.category_ids`).
        """
        gt = coco.ground_truth(self._annotations, self._class_names, self._category_ids)
        dets = coco.detections(self._detections, self._category_ids)
        if export_dir is not None and jax.process_index() == 0:
            coco.write_json(os.path.join(export_dir, "ground_truth.json"), gt)
            coco.write_json(os.path.join(export_dir, "detections.json"), dets)
        metrics = coco.evaluate(gt, dets)
        if self._annotations and self._annotations[0].masks is not None:
            segm = coco.evaluate(gt, dets, iou_type="segm")
            metrics.update({f"mask_{name}": value for name, value in segm.items()})
        return {**metrics, "num_images": float(len(self._annotations))}


def synthetic_batch(
    config: ml_collections.ConfigDict, info: data.DatasetInfo, batch_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Random canvases, each with `max(1, max_boxes // 2)` random boxes, as decoded batches.

    Random records (noise images at the canvas size, boxes of 1/8 to 1/2 of the
    side, random labels, each box's instance mask the box itself as in
    `digit_detection`'s "instances" map) go through the config's own
    `DetectionDecode`, so the keys, shapes and dtypes are exactly those of
    real batches.
    """
    size = config.data.image_size
    num_boxes = max(1, config.data.max_boxes // 2)
    decode = make_decode(config)
    examples = []
    for image_id in range(batch_size):
        hw = rng.uniform(0.125, 0.5, (num_boxes, 2))  # [n, 2] normalized (h, w)
        top_left = rng.uniform(0, 1 - hw)  # [n, 2] (ymin, xmin)
        instances = np.zeros((size, size, 1), np.uint8)  # [S, S, 1] 0 or object index + 1
        for j, (y0, x0, y1, x1) in enumerate(
            np.concatenate([top_left, top_left + hw], axis=1) * size
        ):
            instances[round(y0) : round(y1), round(x0) : round(x1)] = j + 1
        record = {
            "image": rng.integers(0, 256, (size, size, info.channels), dtype=np.uint8),
            "image/id": image_id,
            "instances": instances,
            "objects": {
                "bbox": np.concatenate([top_left, top_left + hw], axis=1),  # [n, 4] yxyx
                "label": rng.integers(0, info.num_classes, (num_boxes,)),
            },
        }
        examples.append(decode(record))
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["mask"] = np.ones((batch_size,), bool)
    return batch
