"""COCO-format JSON and box/mask AP/AR computed by pycocotools (host side, NumPy).

The metrics are pycocotools' `COCOeval(iouType="bbox")` or
`COCOeval(iouType="segm")`, run unchanged, so the numbers are the reference
definitions exactly (101-point interpolated precision, IoU thresholds
0.50:0.05:0.95, area ranges small < 32**2 <= medium < 96**2 <= large, at most
1/10/100 detections per image and category).

Conventions:

- Boxes given to this module are xyxy (`x0, y0, x1, y1`, see
  `jaxvision.ops.boxes`) in ORIGINAL image pixels, as floats. COCO JSON uses
  `bbox = [x, y, width, height]`; both are written rounded to 2 decimals
  (0.01 pixel, as in COCO's own annotation files; this also removes float32
  noise from boxes that went through a resize and back).
- A ground-truth `area` is the box area `w * h` when the ground truth has no
  masks, so APs/APm/APl then bin objects by box area. With masks it is the
  mask's pixel count (`pycocotools.mask.area`), as in COCO's own files, and
  the bins of both the box and the mask metrics follow the mask area.
- Masks (instance segmentation) are compressed RLE dicts `{"size": [H, W],
  "counts": str}` in image pixels, one per box, made by `mask_rles` from the
  box-relative `[M, M]` masks of a mask head (ground truth and predictions
  alike). `paste_mask` maps such a mask into the image as Detectron2's
  `paste_masks_in_image` does (`grid_sample`, bilinear, `align_corners=False`,
  zero outside the mask): image pixel `(x, y)` has its centre at
  `(x + 0.5, y + 0.5)` and takes the mask's value at column
  `u = (x + 0.5 - x0) / (x1 - x0) * M - 0.5` and row
  `v = (y + 0.5 - y0) / (y1 - y0) * M - 0.5` (mask cell `(i, j)` has its
  centre at `(u, v) = (j, i)`); it is foreground when that value is
  `>= threshold`. So a mask of ones fills exactly the pixels whose centres lie
  in the box (edges included).
- For `iou_type="segm"` the detections are scored without their "bbox" (as
  Detectron2 does), so pycocotools takes a detection's area and box from its
  mask.
- Scores are written rounded to 6 decimals. pycocotools sorts by score with a
  stable sort, so scores that round to the same value keep their input order.
- Category ids are the dataset's 0-based label + 1 (COCO ids start at 1);
  category names come from `class_names`, in label order.
- Image ids are the dataset's integer image ids.

Metric keys, in `COCOeval.stats` order: `AP, AP50, AP75, APs, APm, APl, AR1,
AR10, AR100, ARs, ARm, ARl`. As in pycocotools, a metric with nothing to
measure is -1: e.g. `APm = ARm = -1` when the ground truth has no medium
objects, and every metric is -1 when it has no (non-crowd) objects at all.
Categories without ground-truth objects are left out of the means.
"""

import contextlib
import dataclasses
import io
import json
import math
import os
import reprlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxvision.errors import UserError

METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip
_BOX_DECIMALS = 2
_SCORE_DECIMALS = 6
IOU_TYPES = ("bbox", "segm")


@dataclasses.dataclass(frozen=True, eq=False)
class ImageAnnotations:
    """The ground truth of one image.

    Attributes:
      image_id: the dataset's integer image id.
      height: image height in pixels.
      width: image width in pixels.
      boxes: `[N, 4]` float xyxy boxes in original image pixels.
      labels: `[N]` int 0-based class labels.
      crowd: `[N]` bool, True for COCO "iscrowd" regions (ignored by the
        metrics: a detection matching one is neither a TP nor an FP).
      masks: None, or N RLE dicts (from `mask_rles`, size `[height, width]`),
        one per box: written as "segmentation", and their pixel counts
        become the "area".
    """

    image_id: int
    height: int
    width: int
    boxes: np.ndarray  # [N, 4]
    labels: np.ndarray  # [N]
    crowd: np.ndarray  # [N]
    masks: list[dict] | None = None  # N RLEs


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDetections:
    """The detections of one image.

    Attributes:
      image_id: the dataset's integer image id.
      boxes: `[K, 4]` float xyxy boxes in original image pixels.
      scores: `[K]` float confidences.
      labels: `[K]` int 0-based class labels.
      masks: None, or K RLE dicts (from `mask_rles`, the image's size), one
        per box: written as "segmentation".
    """

    image_id: int
    boxes: np.ndarray  # [K, 4]
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K]
    masks: list[dict] | None = None  # K RLEs


def _bilinear_weights(coords: np.ndarray, size: int) -> np.ndarray:
    """`[n]` sample positions along a mask axis -> `[n, size]` bilinear weights.

    Position `c` mixes cells `floor(c)` and `floor(c) + 1`; cells outside
    `[0, size)` are zero (`grid_sample`'s zero padding), so they get no weight.
    """
    lower = np.floor(coords)  # [n]
    frac = coords - lower  # [n]
    lower = lower.astype(np.int64)
    weights = np.zeros((len(coords), size))  # [n, size]
    rows = np.arange(len(coords))  # [n]
    for cell, weight in ((lower, 1.0 - frac), (lower + 1, frac)):
        inside = (cell >= 0) & (cell < size)  # [n]
        weights[rows[inside], cell[inside]] = weight[inside]
    return weights


def _paste_window(lo: float, hi: float, size: int, cells: int) -> tuple[slice, np.ndarray]:
    """The image pixels along one axis that a box `[lo, hi]` can touch, and their weights.

    A pixel whose centre is more than half a mask cell outside the box samples
    only the zero padding, so the window is the box widened by that much.

    Returns:
      The window as a slice of `[0, size)` and its `[n, cells]` bilinear weights.
    """
    half_cell = (hi - lo) / (2 * cells)  # Pixels.
    start = int(np.clip(np.floor(lo - half_cell), 0, size))
    stop = int(np.clip(np.ceil(hi + half_cell), 0, size))
    centres = np.arange(start, stop) + 0.5  # [n]
    coords = (centres - lo) / (hi - lo) * cells - 0.5  # [n] in mask cells
    return slice(start, stop), _bilinear_weights(coords, cells)  # [n, cells]


def paste_mask(
    mask: np.ndarray, box: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> np.ndarray:
    """Pastes a box-relative mask into the image, as Detectron2's `paste_masks_in_image`.

    Bilinear sampling with `align_corners=False` and zeros outside the mask;
    the exact mapping is in the module docstring. Only the box's window of
    pixels is computed.

    Args:
      mask: `[M, M]` float probabilities (or 0/1) over the box.
      box: `[4]` xyxy in image pixels; a box with no width or height, or a
        non-finite coordinate, pastes nothing.
      height: image height in pixels.
      width: image width in pixels.
      threshold: foreground where the sampled value is `>= threshold`; must be
        > 0 (pixels away from the box sample 0).

    Returns:
      `[height, width]` bool.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}.")
    mask = np.asarray(mask, np.float64)  # [M, M]
    x0, y0, x1, y1 = np.asarray(box, np.float64).reshape(4).tolist()
    pasted = np.zeros((height, width), bool)  # [H, W]
    if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
        return pasted
    rows, row_weights = _paste_window(y0, y1, height, mask.shape[0])  # [h, M]
    cols, col_weights = _paste_window(x0, x1, width, mask.shape[1])  # [w, M]
    values = row_weights @ mask @ col_weights.T  # [h, w]
    pasted[rows, cols] = values >= threshold
    return pasted


def mask_rles(
    masks: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> list[dict]:
    """Pastes box-relative masks into the image (`paste_mask`) and RLE-encodes them.

    One mask is pasted at a time, so memory stays at one `[H, W]` image.

    Args:
      masks: `[D, M, M]` float probabilities (or 0/1) over their boxes.
      boxes: `[D, 4]` xyxy in image pixels.
      height: image height in pixels.
      width: image width in pixels.
      threshold: foreground where the sampled value is `>= threshold`.

    Returns:
      D compressed RLE dicts `{"size": [height, width], "counts": str}`
      (pycocotools' encoding; JSON-serialisable).
    """
    masks = np.asarray(masks)  # [D, M, M]
    boxes = np.asarray(boxes, np.float64)  # [D, 4]
    if masks.ndim != 3 or boxes.shape != (len(masks), 4):
        raise UserError(
            f"Got masks of shape {masks.shape} and boxes of shape {boxes.shape}; "
            "pass [D, M, M] box-relative masks with their [D, 4] xyxy boxes."
        )
    rles = []
    for mask, box in zip(masks, boxes):
        pasted = paste_mask(mask, box, height, width, threshold)  # [H, W]
        rle = mask_util.encode(np.asfortranarray(pasted, dtype=np.uint8))
        rles.append({"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return rles


def _masks(masks: list[dict] | None, n: int, image_id: int, size: list[int] | None) -> list:
    """The masks of an image's N boxes, checked; N `None`s without masks.

    Args:
      masks: None, or one RLE dict per box.
      n: the number of boxes.
      image_id: for the message.
      size: `[height, width]` every RLE must have, or None to not check it.
    """
    if masks is None:
        return [None] * n
    masks = list(masks)
    if len(masks) != n:
        raise UserError(
            f"Image {image_id} has {n} boxes but {len(masks)} masks; pass one mask "
            "per box (or masks=None)."
        )
    for rle in masks:
        if not _is_rle(rle) or (size is not None and rle["size"] != size):
            raise UserError(
                f"Image {image_id} has mask {reprlib.repr(rle)}, not an RLE dict of the "
                f"image's size {size or '[height, width]'}; make masks with coco.mask_rles."
            )
    return masks


def _xywh(boxes: np.ndarray, image_id: int) -> np.ndarray:
    """`[N, 4]` xyxy -> `[N, 4]` COCO `[x, y, w, h]`, rounded; N may be 0."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UserError(
            f"Image {image_id} has boxes of shape {boxes.shape}; pass an [N, 4] "
            "array of xyxy boxes."
        )
    if not np.isfinite(boxes).all():
        raise UserError(
            f"Image {image_id} has a non-finite box coordinate; drop or fix "
            "NaN/inf boxes before converting to COCO JSON."
        )
    xyxy = np.round(boxes, _BOX_DECIMALS)  # [N, 4]
    wh = np.round(xyxy[:, 2:] - xyxy[:, :2], _BOX_DECIMALS)  # [N, 2]
    return np.concatenate([xyxy[:, :2], wh], axis=1)  # [N, 4]


def _labels(labels: np.ndarray, n: int, num_classes: int | None, image_id: int) -> np.ndarray:
    """`[N]` int labels, checked against the box count and class range."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)  # [N]
    if labels.shape[0] != n:
        raise UserError(
            f"Image {image_id} has {n} boxes but {labels.shape[0]} labels; pass "
            "one label per box."
        )
    too_big = num_classes is not None and (labels >= num_classes).any()
    if too_big or (labels < 0).any():
        raise UserError(
            f"Image {image_id} has label(s) {sorted(set(labels.tolist()))} outside "
            f"[0, {num_classes if num_classes is not None else 'num_classes'}); "
            "drop padding (-1) labels and pass class_names with every class."
        )
    return labels


def category_id(label: int, category_ids: Sequence[int] | None) -> int:
    """The COCO category id of a 0-based label: `category_ids[label]`, or `label + 1`."""
    return int(category_ids[label]) if category_ids is not None else label + 1


def ground_truth(
    images: Sequence[ImageAnnotations], class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
) -> dict:
    """COCO "instances" dict of the ground truth.

    Args:
      images: one entry per image, with distinct `image_id`s; images without
        objects (N = 0) are kept, so detections on them count as false
        positives.
      class_names: `[C]` names; label `i` becomes category id `i + 1`...
      category_ids: ...or `category_ids[i]` (`[C]`, a dataset's own sparse
        ids, as `DatasetInfo.category_ids` of a coco_json dataset).

    Returns:
      `{"images": [{"id", "height", "width"}], "annotations": [{"id"
      (1-based, unique), "image_id", "category_id", "bbox" [x, y, w, h],
      "area", "iscrowd" 0/1}], "categories": [{"id", "name"}]}`. Without
      masks "area" is the box's `w * h`; with masks each annotation also has
      "segmentation" (its RLE) and "area" is the mask's pixel count.
    """
    out_images, annotations, seen = [], [], set()
    for image in images:
        image_id = int(image.image_id)
        if image_id in seen:
            raise UserError(
                f"Image id {image_id} appears twice in the ground truth; give "
                "each image one ImageAnnotations entry."
            )
        seen.add(image_id)
        out_images.append(
            {"id": image_id, "height": int(image.height), "width": int(image.width)}
        )
        xywh = _xywh(image.boxes, image_id)  # [N, 4]
        labels = _labels(image.labels, len(xywh), len(class_names), image_id)  # [N]
        crowd = np.asarray(image.crowd, bool).reshape(-1)  # [N]
        if crowd.shape[0] != len(xywh):
            raise UserError(
                f"Image {image_id} has {len(xywh)} boxes but {crowd.shape[0]} crowd "
                "flags; pass one flag per box."
            )
        size = [int(image.height), int(image.width)]
        masks = _masks(image.masks, len(xywh), image_id, size)
        for box, label, is_crowd, rle in zip(xywh.tolist(), labels.tolist(), crowd.tolist(), masks):
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id(label, category_ids),
                "bbox": box,
                "area": round(box[2] * box[3], 2 * _BOX_DECIMALS),
                "iscrowd": int(is_crowd),
            }
            if rle is not None:
                annotation["segmentation"] = rle
                annotation["area"] = float(mask_util.area(rle))
            annotations.append(annotation)
    categories = [
        {"id": category_id(i, category_ids), "name": str(name)}
        for i, name in enumerate(class_names)
    ]
    return {"images": out_images, "annotations": annotations, "categories": categories}


def detections(
    dets: Sequence[ImageDetections], category_ids: Sequence[int] | None = None
) -> list[dict]:
    """COCO results list of the detections.

    Args:
      dets: one entry per image (K may be 0); padding must already be dropped.
      category_ids: label -> category id, as in `ground_truth` (None: label + 1).

    Returns:
      `[{"image_id", "category_id", "bbox" [x, y, w, h], "score"}]`, boxes
      rounded to 2 decimals and scores to 6; with masks each detection also
      has "segmentation" (its RLE).
    """
    results = []
    for image in dets:
        image_id = int(image.image_id)
        xywh = _xywh(image.boxes, image_id)  # [K, 4]
        labels = _labels(image.labels, len(xywh), None, image_id)  # [K]
        scores = np.asarray(image.scores, np.float64).reshape(-1)  # [K]
        if scores.shape[0] != len(xywh) or not np.isfinite(scores).all():
            raise UserError(
                f"Image {image_id} has {len(xywh)} boxes but {scores.shape[0]} "
                "scores (or a non-finite score); pass one finite score per box."
            )
        scores = np.round(scores, _SCORE_DECIMALS)  # [K]
        masks = _masks(image.masks, len(xywh), image_id, None)
        for box, label, score, rle in zip(xywh.tolist(), labels.tolist(), scores.tolist(), masks):
            result = {"image_id": image_id, "category_id": category_id(label, category_ids),
                      "bbox": box, "score": score}
            if rle is not None:
                result["segmentation"] = rle
            results.append(result)
    return results


def check_detections(gt: dict, dets: list[dict]) -> None:
    """Raises UserError when a detection names an image or category `gt` lacks.

    Args:
      gt: COCO "instances" dict (from `ground_truth` or a COCO file).
      dets: COCO results list (from `detections` or a results file).
    """
    for key, field, what in (("image_id", "images", "image"), ("category_id", "categories", "category")):
        known = {entry["id"] for entry in gt[field]}
        missing = [d[key] for d in dets if d[key] not in known]
        if missing:
            raise UserError(
                f"{len(missing)} detection(s) reference {what} id(s) missing from the "
                f"ground truth (the first is {missing[0]}); evaluate detections "
                "against the ground truth of the same split and label map."
            )


def _check_segmentations(gt: dict, dets: list[dict]) -> None:
    """Raises UserError unless every annotation and detection has a mask segm scoring can use.

    Args:
      gt: COCO "instances" dict; its RLEs must have their image's size.
      dets: COCO results list, already checked by `check_detections`; its
        segmentations must be RLEs (pycocotools scores no polygon results) of
        their image's size.
    """
    sizes = {image["id"]: [image.get("height"), image.get("width")] for image in gt["images"]}
    for kind, entries in (("Ground-truth annotation", gt["annotations"]), ("Detection", dets)):
        for index, entry in enumerate(entries):
            segmentation, size = entry.get("segmentation"), sizes.get(entry["image_id"])
            if segmentation is None:
                problem = "has no 'segmentation'"
            elif size is None:
                continue  # An annotation of an image outside the ground truth is not scored.
            elif None in size:
                problem = f"is on image {entry['image_id']}, which has no 'height' and 'width'"
            elif kind == "Detection" and not isinstance(segmentation, dict):
                problem = "has a polygon 'segmentation', which pycocotools does not score"
            elif isinstance(segmentation, dict) and segmentation["size"] != size:
                problem = (
                    f"has a mask of size {segmentation['size']} on image {entry['image_id']} "
                    f"of size {size} ([height, width])"
                )
            else:
                continue
            raise UserError(
                f"{kind} {index} {problem}; iou_type='segm' needs every annotation and "
                "detection to have an RLE mask of its image's size (coco.mask_rles makes "
                "them), or use iou_type='bbox'."
            )


def evaluate(gt: dict, dets: list[dict], iou_type: str = "bbox") -> dict[str, float]:
    """COCO box or mask AP/AR of `dets` against `gt`, by pycocotools.

    Neither argument is modified. With no detections at all (which pycocotools'
    `loadRes` cannot take) the metrics are those of an empty result set: 0.0
    for every metric that has ground-truth objects to find, and pycocotools'
    -1 where it has none (e.g. `APm`/`ARm` without medium objects).

    Args:
      gt: COCO "instances" dict (from `ground_truth` or a COCO file).
      dets: COCO results list (from `detections` or a results file).
      iou_type: "bbox" (box IoU) or "segm" (mask IoU; every annotation and
        detection needs a "segmentation", see the module docstring).

    Returns:
      `{name: value}` for the names in `METRIC_NAMES` (`COCOeval.stats`
      order), as Python floats; the same names for both IoU types.
    """
    if iou_type not in IOU_TYPES:
        raise UserError(f"iou_type is {iou_type!r}; use 'bbox' (box AP) or 'segm' (mask AP).")
    check_detections(gt, dets)
    if iou_type == "segm":
        _check_segmentations(gt, dets)
        # As in Detectron2: without "bbox", loadRes takes each detection's
        # area (for the area ranges) and box from its mask.
        dets = [{key: value for key, value in d.items() if key != "bbox"} for d in dets]
    # pycocotools adds keys to the annotation dicts it is given ("ignore" on
    # the ground truth; "id", "area", ... on results): hand it copies.
    gt = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes([dict(d) for d in dets])
        else:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(gt["images"]),
                "categories": list(gt["categories"]),
                "annotations": [],
            }
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, coco_eval.stats)}


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as JSON to `path`, creating the parent directory."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def load_json(path: str, what: str) -> Any:
    """Reads the JSON file `path`.

    Args:
      path: the file.
      what: what the file holds, for the error message (e.g. "ground-truth").

    Raises:
      UserError: the file is missing, unreadable or not valid JSON.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(
            f"The {what} file {path} does not exist; check the path (or write it first)."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"The {what} file {path} is not readable JSON ({e}); rewrite it or "
            "point to the right file."
        ) from None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool, a string or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))


def _is_count(value: Any) -> bool:
    return _is_id(value) and value >= 0


def _is_rle(value: Any) -> bool:
    """An RLE dict: "size" [height, width] and "counts" (a compressed str or a list)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("size"), list) and len(value["size"]) == 2
        and all(map(_is_count, value["size"]))
        and (isinstance(value.get("counts"), str) or (
            isinstance(value.get("counts"), list) and all(map(_is_count, value["counts"]))
        ))
    )  # fmt: skip


def _is_segmentation(value: Any) -> bool:
    """An RLE dict, or a non-empty list of polygons `[x0, y0, x1, y1, ...]` of >= 3 points."""
    if isinstance(value, list):
        return bool(value) and all(
            isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
            and all(map(_is_number, polygon))
            for polygon in value
        )  # fmt: skip
    return _is_rle(value)


# field -> (check, what a valid value is), for the entries of COCO files.
_FIELDS = {
    "id": (_is_id, "an integer"),
    "image_id": (_is_id, "an integer"),
    "category_id": (_is_id, "an integer"),
    "bbox": (_is_box, "a list of 4 finite numbers [x, y, width, height]"),
    "area": (_is_number, "a finite number"),
    "iscrowd": (lambda v: v in (0, 1) and not isinstance(v, float), "0 or 1"),
    "score": (_is_number, "a finite number"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "file_name": (lambda v: isinstance(v, str) and v != "", "a file name (a string)"),
    "width": (lambda v: _is_id(v) and v > 0, "a positive integer"),
    "height": (lambda v: _is_id(v) and v > 0, "a positive integer"),
    "segmentation": (
        _is_segmentation,
        "an RLE {'size': [height, width], 'counts': ...} or a list of polygons",
    ),
}


def check_entries(
    path: str, entries: list, kind: str, fields: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """Raises UserError for the first entry of a COCO file with a missing or bad field.

    Args:
      path: the file, for the message.
      entries: its list of `kind`s (e.g. the "annotations" list).
      kind: "image", "annotation", "category" or "detection".
      fields: the `_FIELDS` every entry needs.
      optional: the `_FIELDS` checked only where an entry has them.
    """
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(
                f"{path}: {kind} {index} is {reprlib.repr(entry)}, not a JSON object; "
                f"fix or drop that {kind}."
            )
        for field in [*fields, *(name for name in optional if name in entry)]:
            check, valid = _FIELDS[field]
            if field not in entry:
                raise UserError(
                    f"{path}: {kind} {index} has no {field!r} (it needs {valid}); "
                    f"fix or drop that {kind}."
                )
            if not check(entry[field]):
                raise UserError(
                    f"{path}: {kind} {index} has {field!r} {reprlib.repr(entry[field])}, "
                    f"not {valid}; fix or drop that {kind}."
                )


def load_ground_truth(path: str) -> dict:
    """Reads a COCO "instances" file (e.g. `<workdir>/eval/ground_truth.json`).

    Raises:
      UserError: the file is missing, does not parse, is not COCO instances,
        or an entry lacks a field pycocotools reads (or has a malformed one,
        such as a "segmentation" that is neither an RLE nor polygons).
    """
    gt = load_json(path, "ground-truth")
    if not isinstance(gt, dict) or not all(
        isinstance(gt.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise UserError(
            f"{path} is not a COCO ground-truth file (a JSON object with 'images', "
            "'annotations' and 'categories' lists); pass one such as "
            "<workdir>/eval/ground_truth.json written by scripts/eval.py."
        )
    check_entries(path, gt["images"], "image", ["id"])
    check_entries(path, gt["categories"], "category", ["id"])
    check_entries(
        path, gt["annotations"], "annotation",
        ["id", "image_id", "category_id", "bbox", "area", "iscrowd"], optional=["segmentation"],
    )
    return gt


def load_detections(path: str) -> list[dict]:
    """Reads a COCO results file (e.g. `<workdir>/eval/detections.json`).

    Raises:
      UserError: the file is missing, does not parse, is not COCO results, or
        a detection lacks a field (or has a malformed one, e.g. a NaN score or
        a "segmentation" that is neither an RLE nor polygons).
    """
    dets = load_json(path, "detections")
    if not isinstance(dets, list):
        raise UserError(
            f"{path} is not a COCO results file (a JSON list of objects with "
            "'image_id', 'category_id', 'bbox' and 'score'); pass one such as "
            "<workdir>/eval/detections.json written by scripts/eval.py."
        )
    check_entries(
        path, dets, "detection", ["image_id", "category_id", "bbox", "score"],
        optional=["segmentation"],
    )
    return dets
