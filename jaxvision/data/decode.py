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
"""

from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from jaxvision.data import datasets
from jaxvision.errors import UserError


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
    """

    def __init__(self, resize_size: int | None = None):
        self.resize_size = resize_size

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(record["image"], np.uint8)  # [H, W, C]
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

    Attributes:
        image_size: Side S of the square canvas.
        max_boxes: M, the padded number of boxes; an example with more boxes
            raises UserError naming config.data.max_boxes.
    """

    def __init__(self, image_size: int, max_boxes: int):
        self.image_size = image_size
        self.max_boxes = max_boxes
        self._warned: set[int] = set()  # Example ids with dropped boxes, reported once.

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
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
        return {
            "image": canvas,
            "boxes": np.pad(boxes, ((0, pad), (0, 0))),  # [M, 4]
            "labels": np.pad(labels, (0, pad)),  # [M]
            "box_mask": np.arange(self.max_boxes) < num,  # [M]
            "crowd": np.pad(crowd, (0, pad)),  # [M]
            "image_id": np.int32(image_id),
            "scale": scale,  # [2] (x, y) canvas pixels per original pixel
            "height": np.int32(height),
            "width": np.int32(width),
        }

    def check(self, name: str, info: datasets.DatasetInfo) -> None:
        if not info.is_detection:
            raise UserError(
                f"Dataset {name!r} has no object boxes ('objects'); use a detection "
                "dataset (e.g. digit_detection or coco/2017) with a detection config."
            )


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
