"""Host decoding: one dataset record -> one example of NumPy arrays with static shapes.

A `Decode` is called on every record a loader reads (in grain's threads or
worker processes). It only does what makes shapes static: uint8 images of
one size, labels as int32, boxes padded to a fixed count. All augmentation
happens on device (`jaxvision.data.augment`).

Images are resized on the host in one of two ways:
  - `letterbox` (detection): the longer side to the canvas size, the image at
    the canvas's top-left, zeros elsewhere; boxes scale with it;
  - `resize_and_center_crop` (classification): the shorter side to the size,
    then a centred square.

Detection can also give each object's instance mask, resampled into its box
(`DetectionDecode(mask_size=...)`), from the record's instance-id map or
from COCO segmentations (`load_coco_segmentations`).
"""

import json
import numbers
from typing import Any

import numpy as np
from absl import logging
from PIL import Image
from pycocotools import mask as mask_utils

from jaxvision.data import datasets
from jaxvision.errors import UserError
from jaxvision.visualize import to_rgb


class Decode:
    """A record -> an example whose array shapes never vary.

    Subclasses implement `__call__` and `check`.
    """

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check(self, name: str, info: datasets.DatasetInfo) -> None:
        """Raises UserError if this decode cannot give `name`'s records static shapes."""
        raise NotImplementedError


class ClassificationDecode(Decode):
    """Record -> {"image": uint8 [H, W, C], "label": int32 []}.

    Attributes:
        resize_size: Host resize: shorter side to this, then center square crop.
            Required when the dataset's images vary in size.
        channels: C, converting the record's images (grey -> RGB by repeating,
            RGB -> grey with PIL's luma, `convert("L")`); None keeps them.
    """

    def __init__(self, resize_size: int | None = None, channels: int | None = None):
        self.resize_size = resize_size
        self.channels = channels

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(record["image"], np.uint8)  # [H, W, C]
        if self.channels is not None and image.shape[-1] != self.channels:
            image = convert_channels(image, self.channels)
        if self.resize_size is not None:
            image = resize_and_center_crop(image, self.resize_size)
        return {"image": image, "label": np.int32(record["label"])}

    def check(self, name: str, info: datasets.DatasetInfo) -> None:
        if info.is_detection:
            raise UserError(
                f"Dataset {name!r} is a detection dataset; train it with a detection "
                "config (config.task = 'detection')."
            )
        if self.resize_size is None and info.image_shape is None:
            raise UserError(
                f"Dataset {name!r} has images of varying size; set config.data.resize_size "
                "(e.g. 256) so they are resized to one shape on the host."
            )


class RecognitionDecode(ClassificationDecode):
    """Identity record -> {"image": uint8 [H, W, C], "label": int32 [], "id": int32 []}.

    "label" is the identity (-1 where unknown, as in insightface's `.bin`
    verification sets) and "id" the example's id in its split, which the
    split's verification pairs refer to (`datasets.verification_pairs`).
    """

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        return {**super().__call__(record), "id": np.int32(record["id"])}


class DetectionDecode(Decode):
    """Detection record (tfds `coco` layout) -> fixed canvas and padded boxes.

    The record holds "image" uint8 [H, W, C], "image/id" and "objects" with
    "bbox" float [N, 4] normalized (ymin, xmin, ymax, xmax), "label" int [N]
    and optionally "is_crowd" bool [N]. The image is letterboxed onto a
    square canvas of side `image_size` (see `letterbox`), and its boxes are
    converted to canvas pixels, xyxy.

    Degenerate boxes follow one rule: a box is clipped to the image, and
    dropped (with a warning naming the example id, once per example) when a
    coordinate is NaN or its clipped width or height is not positive.

    With `mask_size` G > 0 the example also holds "masks", uint8 [M, G, G] in
    {0, 1}: each kept object's mask inside its (clipped) box, zeros for
    padding rows. Cell (r, c) covers the box-relative area [c/G, (c+1)/G) x
    [r/G, (r+1)/G) and is 1 when the object's pixels cover at least half of
    its area (computed exactly, in the original image's pixels). An object's
    mask comes from the record's "instances" id map (uint8 [H, W, 1], object
    i is id i + 1, as in `digit_detection`) when it has one, else from
    `segmentations[objects["id"][i]]` (COCO polygons or RLE, as in the
    instances JSON; tfds `coco/2017` has the ids but no masks). Crowd objects
    get masks like any other.

    Attributes:
        image_size: Side S of the square canvas.
        max_boxes: M, the padded number of boxes; an example with more boxes
            raises UserError naming config.data.max_boxes.
        mask_size: G, the side of each object's mask; 0 means no "masks".
        segmentations: COCO annotation id -> COCO "segmentation", for records
            without "instances" (see `load_coco_segmentations`).
        segmentations_file: The file `segmentations` was read from, named in
            errors about them.
    """

    def __init__(
        self,
        image_size: int,
        max_boxes: int,
        mask_size: int = 0,
        segmentations: dict[int, Any] | None = None,
        segmentations_file: str | None = None,
    ):
        self.image_size = image_size
        self.max_boxes = max_boxes
        self.mask_size = mask_size
        self.segmentations = segmentations
        self.segmentations_file = segmentations_file
        self._warned: set[int] = set()  # Example ids with dropped boxes, reported once.

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        return self._decode(record)[0]

    def _decode(self, record: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The example and int64 [n]: the record's index of each kept box, in order."""
        image = np.asarray(record["image"], np.uint8)  # [H, W, C]
        height, width, _ = image.shape
        image_id = int(record["image/id"])
        canvas, scale = letterbox(image, self.image_size)  # [S, S, C], [2]

        objects = record["objects"]
        yxyx = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)  # [N, 4]
        # The resized image's (w, h, w, h) in canvas pixels: whole numbers.
        size = np.tile(np.round(scale * np.array([width, height], np.float32)), 2)  # [4]
        boxes = yxyx[:, [1, 0, 3, 2]] * size  # [N, 4] xyxy canvas pixels
        labels = np.asarray(objects["label"], np.int32).reshape(-1)  # [N]
        crowd = np.asarray(
            objects.get("is_crowd", np.zeros(len(labels), bool)), bool
        ).reshape(-1)  # [N]
        finite = np.isfinite(boxes).all(axis=1)  # [N]
        boxes = np.clip(np.nan_to_num(boxes), 0, size)  # [N, 4]
        keep = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not keep.all() and image_id not in self._warned:
            self._warned.add(image_id)
            logging.warning(
                "Example %d: dropped %d of %d boxes that are NaN or have no area "
                "inside the image.", image_id, int((~keep).sum()), len(keep),
            )
        boxes, labels, crowd = boxes[keep], labels[keep], crowd[keep]
        num = len(labels)
        if num > self.max_boxes:
            raise UserError(
                f"Example {image_id} has {num} objects, more than "
                f"config.data.max_boxes={self.max_boxes}; raise config.data.max_boxes "
                f"to at least {num}."
            )
        pad = self.max_boxes - num
        extra = {}
        if self.mask_size > 0:
            # The kept boxes in original pixels (the letterbox only scales).
            original = boxes.astype(np.float64) / size * np.tile([width, height], 2)  # [n, 4]
            masks = np.zeros((self.max_boxes, self.mask_size, self.mask_size), np.uint8)
            for row, (i, box) in enumerate(zip(np.flatnonzero(keep), original, strict=True)):
                mask = self._object_mask(record, int(i), height, width)  # [H, W]
                masks[row] = _box_mask(mask, box, self.mask_size)  # [G, G]
            extra["masks"] = masks  # [M, G, G]
        example = {
            "image": canvas,
            "boxes": np.pad(boxes, ((0, pad), (0, 0))),  # [M, 4]
            "labels": np.pad(labels, (0, pad)),  # [M]
            "box_mask": np.arange(self.max_boxes) < num,  # [M]
            "crowd": np.pad(crowd, (0, pad)),  # [M]
            "image_id": np.int32(image_id),
            "scale": scale,  # [2] (x, y) canvas pixels per original pixel
            "height": np.int32(height),
            "width": np.int32(width),
            **extra,
        }
        return example, np.flatnonzero(keep)

    def check(self, name: str, info: datasets.DatasetInfo) -> None:
        if not info.is_detection:
            raise UserError(
                f"Dataset {name!r} has no object boxes ('objects'); use a detection "
                "dataset (e.g. digit_detection or coco/2017) with a detection config."
            )
        if self.mask_size > 0 and not info.has_instance_masks and self.segmentations is None:
            raise UserError(
                f"Dataset {name!r} has no instance masks; set config.data.train_annotations "
                "and config.data.eval_annotations to COCO instances JSON files (e.g. "
                "annotations/instances_val2017.json) or use a dataset with masks "
                "(digit_detection)."
            )

    def _object_mask(
        self, record: dict[str, Any], index: int, height: int, width: int
    ) -> np.ndarray:
        """bool [H, W]: object `index`'s mask in the original image."""
        if "instances" in record:
            return np.asarray(record["instances"])[..., 0] == index + 1  # [H, W]
        image_id = int(record["image/id"])
        if self.segmentations is None:
            raise UserError(
                f"Example {image_id} has no instance map ('instances') and no COCO "
                "segmentations were given; set config.data.train_annotations / "
                "config.data.eval_annotations to COCO instances JSON files, or use a "
                "dataset with masks (digit_detection)."
            )
        if "id" not in record["objects"]:
            raise UserError(
                f"Example {image_id} has no annotation ids ('objects/id') to look up its "
                "COCO segmentations by; use a dataset whose objects have them (coco/2017) "
                "or one with masks (digit_detection)."
            )
        annotation_id = int(np.asarray(record["objects"]["id"]).reshape(-1)[index])
        if annotation_id not in self.segmentations:
            raise UserError(
                f"Example {image_id}: annotation {annotation_id} has no segmentation in "
                f"{self.segmentations_file or 'the segmentations given'}; set "
                "config.data.train_annotations / config.data.eval_annotations to the COCO "
                "instances JSON of this split."
            )
        return _decode_segmentation(
            self.segmentations[annotation_id], height, width,
            f"annotation {annotation_id}" + (
                f" in {self.segmentations_file}" if self.segmentations_file else ""
            ),
        )


class TrackingDecode(DetectionDecode):
    """Tracking frame record (`moving_digits` layout) -> `DetectionDecode`'s example and tracks.

    Adds, aligned with the kept boxes ("boxes", "box_mask") and padded to M:
      - "track_ids": int32 [M], the object's track id in its sequence (0 on padding);
      - "identities": int32 [M], its identity for the appearance embedding,
        -1 on padding or where unknown (no "identity" field, or < 0, as for
        MOT ignore regions);
      - "visibility": float32 [M], the visible fraction (0 on padding; 1
        where the record has no "visibility");
      - "sequence", "frame": int32 [], the frame's sequence index and its
        1-based frame number.

    Attributes:
        num_identities: Identities the embedding head can tell apart; an
            identity >= this raises UserError naming config.model.num_identities.
    """

    def __init__(self, image_size: int, max_boxes: int, num_identities: int):
        super().__init__(image_size, max_boxes)
        self.num_identities = num_identities

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        example, kept = self._decode(record)  # kept: int64 [n]
        objects = record["objects"]
        num = len(np.asarray(objects["label"]).reshape(-1))

        def field(key: str, default: float, dtype: type) -> np.ndarray:
            if key not in objects:
                return np.full(len(kept), default, dtype)
            return np.asarray(objects[key], dtype).reshape(num)[kept]  # [n]

        identities = field("identity", -1, np.int64)  # [n]
        if identities.size and identities.max() >= self.num_identities:
            raise UserError(
                f"Example {int(record['image/id'])} has identity {int(identities.max())}, "
                f"but config.model.num_identities={self.num_identities}; raise "
                f"config.model.num_identities to at least {int(identities.max()) + 1}."
            )
        pad = self.max_boxes - len(kept)
        return {
            **example,
            "track_ids": np.pad(field("track_id", 0, np.int32), (0, pad)),  # [M]
            "identities": np.pad(
                np.maximum(identities, -1).astype(np.int32), (0, pad), constant_values=-1
            ),  # [M]
            "visibility": np.pad(field("visibility", 1.0, np.float32), (0, pad)),  # [M]
            "sequence": np.int32(record["sequence"]),
            "frame": np.int32(record["frame"]),
        }


def load_coco_segmentations(path: str) -> dict[int, Any]:
    """Reads the segmentations of a COCO instances JSON (`annotations/instances_*.json`).

    Args:
        path: The JSON file.

    Returns:
        {annotation id: its "segmentation"} (polygon list or RLE dict), for
        `DetectionDecode(segmentations=...)`.
    """
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(
            f"Cannot read COCO annotations from {path} ({e}); point "
            "config.data.train_annotations / eval_annotations at a COCO instances JSON file."
        ) from e
    annotations = content.get("annotations") if isinstance(content, dict) else None
    if not isinstance(annotations, list) or not all(
        isinstance(a, dict) and "id" in a and "segmentation" in a for a in annotations
    ):
        raise UserError(
            f"{path} is not a COCO instances file: it needs an 'annotations' list whose "
            "entries each have an 'id' and a 'segmentation'; use an annotations/"
            "instances_*.json file of the dataset."
        )
    return {int(a["id"]): a["segmentation"] for a in annotations}


def _decode_segmentation(segmentation: Any, height: int, width: int, name: str) -> np.ndarray:
    """A COCO segmentation -> bool [height, width] mask.

    Args:
        segmentation: Polygons (a list of flat [x0, y0, x1, y1, ...] lists of at
            least 3 points) or an RLE dict {"counts", "size": [height, width]}
            with list counts (uncompressed) or a string (compressed).
        height, width: The image's size.
        name: What the segmentation is, for the error message.

    Raises:
        UserError: If the segmentation is not one of these for this image size.
    """
    problem = _segmentation_problem(segmentation, height, width)
    if problem is None:
        try:
            if isinstance(segmentation, list):  # Polygons.
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation["counts"], list):  # Uncompressed RLE.
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:  # Compressed RLE.
                counts = segmentation["counts"]
                rle = {"size": [height, width],
                       "counts": counts.encode() if isinstance(counts, str) else counts}
            mask = mask_utils.decode(rle)  # [H, W] uint8
            # Compressed runs that stop short of the image leave memory unset
            # (uncompressed counts are summed in `_segmentation_problem`).
            if mask.sum(dtype=np.int64) != mask_utils.area(rle):
                problem = "its run lengths do not cover the image"
        except (ValueError, TypeError, IndexError) as e:
            problem = f"pycocotools cannot decode it: {e}"
    if problem is not None:
        raise UserError(
            f"The segmentation of {name} is not a COCO polygon list or RLE of its "
            f"{height}x{width} image ({problem}); fix or remove that annotation."
        )
    return mask.astype(bool)


def _segmentation_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Why `segmentation` is not a COCO polygon list or RLE of the image size; None if it is."""
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if (
                not isinstance(polygon, list)
                or len(polygon) < 6
                or len(polygon) % 2
                or not all(isinstance(v, numbers.Real) and np.isfinite(v) for v in polygon)
            ):
                return "each polygon must be a list of an even number >= 6 of coordinates"
        return None if segmentation else "the polygon list is empty"
    if not isinstance(segmentation, dict) or not {"counts", "size"} <= segmentation.keys():
        return "it is neither a list of polygons nor a dict with 'counts' and 'size'"
    size = segmentation["size"]
    if not isinstance(size, list | tuple) or list(size) != [height, width]:
        return f"its RLE size is {segmentation['size']}"
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, numbers.Integral) and c >= 0 for c in counts):
            return "its counts are not non-negative integers"
        if sum(counts) != height * width:
            return f"its counts add up to {sum(counts)}, not {height * width}"
        return None
    return None if isinstance(counts, str | bytes) else "its counts are neither a list nor a string"


def _box_mask(mask: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Resamples the part of a mask inside a box to a size x size grid.

    Cell (r, c) covers the box-relative area [c/size, (c+1)/size) x
    [r/size, (r+1)/size) and is 1 when the mask covers at least half of it;
    pixel (y, x) of the mask is the unit square [x, x+1) x [y, y+1). Lengths
    are measured in 1/size pixels, so for whole-pixel boxes every area is a
    whole number and a cell covered exactly half is reliably 1.

    Args:
        mask: bool [H, W].
        box: float [4] xyxy in the mask's pixels, inside it, positive area.
        size: G, the grid side.

    Returns:
        uint8 [G, G] in {0, 1}.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    top, left = int(np.floor(y0)), int(np.floor(x0))
    crop = mask[top : int(np.ceil(y1)), left : int(np.ceil(x1))].astype(np.float64)  # [h, w]
    rows = _cell_overlaps(y0 - top, y1 - top, size, crop.shape[0])  # [G, h]
    cols = _cell_overlaps(x0 - left, x1 - left, size, crop.shape[1])  # [G, w]
    covered = rows @ crop @ cols.T  # [G, G] mask area per cell, in 1/G^2 pixels
    # A cell is (y1 - y0) / G x (x1 - x0) / G pixels: (y1 - y0)(x1 - x0) in 1/G^2.
    return (2 * covered >= (y1 - y0) * (x1 - x0)).astype(np.uint8)


def _cell_overlaps(start: float, end: float, size: int, extent: int) -> np.ndarray:
    """float64 [size, extent]: the length, in 1/size pixels, of each of `size`
    equal cells of [start, end) inside each pixel [p, p + 1), p < extent."""
    edges = start * size + (end - start) * np.arange(size + 1)  # [G + 1] in 1/G px
    pixels = np.arange(extent, dtype=np.float64) * size  # [E] pixel starts in 1/G px
    low = np.maximum(edges[:-1, None], pixels[None, :])  # [G, E]
    high = np.minimum(edges[1:, None], pixels[None, :] + size)  # [G, E]
    return np.clip(high - low, 0.0, None)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes `image` so its longer side is `size` and puts it at a canvas's top-left.

    Args:
        image: uint8 [H, W, C].
        size: Side S of the square canvas.

    Returns:
        The canvas, uint8 [S, S, C] (zeros right of and below the image), and
        the scale, float32 [2]: (x, y) canvas pixels per original pixel
        (dividing canvas coordinates by it maps them back to the image).
    """
    height, width, channels = image.shape
    ratio = size / max(height, width)
    new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    canvas = np.zeros((size, size, channels), np.uint8)
    canvas[:new_h, :new_w] = _resize(image, new_h, new_w, Image.Resampling.BILINEAR)
    return canvas, np.array([new_w / width, new_h / height], np.float32)


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side to `size`, then center-crops a square.

    Args:
        image: uint8 [H, W, C].
        size: Output height and width.

    Returns:
        uint8 [size, size, C]; `image` itself when it already has that shape.
    """
    height, width, _ = image.shape
    if (height, width) == (size, size):
        return image
    ratio = size / min(height, width)
    new_h = max(size, round(height * ratio))
    new_w = max(size, round(width * ratio))
    resized = _resize(image, new_h, new_w, Image.Resampling.BICUBIC)  # [h, w, C]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]  # [size, size, C]


def _resize(
    image: np.ndarray, height: int, width: int, resample: Image.Resampling
) -> np.ndarray:
    """PIL resize of uint8 [H, W, C] (C = 1 too) to [height, width, C]; a no-op if equal."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    return np.asarray(pil.resize((width, height), resample)).reshape(height, width, channels)


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [H, W, 1 or 3] -> [H, W, channels] (1 or 3): grey repeated, or RGB to PIL's luma."""
    if channels == 3:
        return to_rgb(image)
    if channels == 1 and image.shape[-1] == 3:
        return np.asarray(Image.fromarray(image).convert("L"))[:, :, None]  # [H, W, 1]
    raise UserError(
        f"Cannot convert {image.shape[-1]}-channel images to {channels} channels; set "
        "config.data.channels to 1 (grey) or 3 (RGB)."
    )
