"""The `digit_detection` tfds builder: real handwritten digits scattered on canvases.

An offline object-detection dataset for end-to-end detection runs on any
machine. Each example is a black 128x128 grayscale canvas holding 1 to 6 of
scikit-learn's real 8x8 handwritten digits (the `digits` builder's images),
each resized with bilinear interpolation to a random square side in 12..48 px
and pasted at a random position fully inside the canvas, composited with
`np.maximum` so overlapping ink stays visible. A placement whose box overlaps
an already placed box too much (IoU > 0.2, or covering more than half of
either box) is redrawn, up to 20 tries, then the digit is dropped (this drops
1 of the 21,032 digits drawn for train, none of the 1,777 drawn for test).
Boxes are tight around the ink (pixels >= `INK_THRESHOLD`); labels are the
digit classes 0-9. An instance-id map gives each digit's mask: a pixel belongs
to the digit whose ink it is, and where two digits' ink overlaps, to the one
whose own pixel is brighter there (the one placed later on a tie), so the
digit that shows in the composite owns the pixel.

The test canvases use only the 360 digits of the `digits` test split and the
train canvases only its 1,437 train digits, so test digits are never seen in
training. Everything is drawn from fixed seeds per split (one stream for which
digits, one for sizes and places), so every build is identical; version 1.1.0
only adds the instance masks; its canvases, boxes and labels are 1.0.0's.

Source and citation: UCI Optical Recognition of Handwritten Digits ("optdigits"),
E. Alpaydin and C. Kaynak, 1998, doi:10.24432/C50P49 (BibTeX in `digits.CITATION`).
"""

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from jaxvision.data import digits

CANVAS_SIZE = 128  # Canvas height and width in pixels.
# Glyph sides in pixels, drawn uniformly. 12 px (1.5x the 8 px source) is about
# the smallest at which a digit keeps its shape and still spans more than one
# cell of a stride-8 feature map; 48 px (3/8 of the canvas) leaves room for six
# digits under the overlap limits and gives a 4x range of object scales.
MIN_GLYPH_SIZE = 12
MAX_GLYPH_SIZE = 48
# A pixel of a resized glyph is ink when >= this (a quarter of full scale):
# bilinear upsampling smears faint halos the boxes should not include.
INK_THRESHOLD = 64
MAX_OBJECTS = 6  # Digits drawn per canvas: uniform in 1..MAX_OBJECTS.
MAX_IOU = 0.2  # A new box may overlap any placed box by at most this IoU ...
MAX_COVER = 0.5  # ... and cover at most this fraction of either box's area.
NUM_TRAIN = 6000  # Canvases per split.
NUM_TEST = 500
SPLITS = ("train", "test")  # The index of a split seeds its generators.

_MAX_TRIES = 20  # Placements tried per digit before it is dropped.
_SEED = 0  # The data is part of the dataset: never change it.


class DigitDetection(tfds.core.GeneratorBasedBuilder):
    """Canvases of 1-6 real handwritten digits with tight boxes, 10 classes.

    6,000 train and 500 test canvases (see the module docstring for how they
    are made). The features mirror tfds `coco/2017`, so one loader serves
    both. Read back with `as_data_source` (tfds 4.9.10, no TensorFlow), a
    record with N objects (1 <= N <= 6) is::

        {
            "image": np.ndarray uint8 [128, 128, 1],
            "image/id": int,  # The record's index in the split, 0..len-1.
            "objects": {  # Lists of length N, one entry per object:
                "bbox": [np.ndarray float32 [4]] * N,  # (ymin, xmin, ymax, xmax) / 128.
                "label": [np.int64] * N,  # The digit, 0..9.
                "is_crowd": [np.bool_] * N,  # Always False; coco has it.
            },
            "instances": np.ndarray uint8 [128, 128, 1],  # Instance ids, see below.
        }

    `BBoxFeature` encodes and decodes without TensorFlow. tfds's NumPy decoding
    returns `Sequence` features as Python lists (as it does for coco), so
    `np.asarray(record["objects"]["bbox"])` is float32 [N, 4] and
    `np.asarray(record["objects"]["label"])` int64 [N].

    Boxes times 128 are exact, tight pixel boxes: a pixel (r, c) of the digit's
    ink has ymin <= r < ymax and xmin <= c < xmax (maxima exclusive), and each
    side of the box touches ink (before other digits are composited in).

    "instances" is object i's mask as id i + 1 (0: background): the ink pixels
    (image >= INK_THRESHOLD) are exactly the non-zero ids, and a pixel with id
    i + 1 lies inside box i and has the value of digit i's own glyph there
    (see `make_canvas`). It is stored zlib-compressed and decodes without
    TensorFlow.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: 6,000/500 canvases of 1-6 digits.",
        # `datasets` quotes this when it rebuilds a data dir that holds 1.0.0.
        "1.1.0": "adds an instance mask per digit (\"instances\"), with the "
        "canvases, boxes and labels of 1.0.0",
    }
    # tfds derives `code_path` with `importlib_resources`, which it declares as
    # a dependency only for Python < 3.9; naming the file directly avoids it.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # Tensor (not Image) features: Image encoding needs TensorFlow. Stored
        # as raw bytes: the default, a list of ints, is ~10x slower to build.
        image = tfds.features.Tensor(
            shape=(CANVAS_SIZE, CANVAS_SIZE, 1),
            dtype=np.uint8,
            encoding=tfds.features.Encoding.BYTES,
        )
        # Mostly zeros: zlib makes it ~60x smaller and it still decodes in NumPy.
        instances = tfds.features.Tensor(
            shape=(CANVAS_SIZE, CANVAS_SIZE, 1),
            dtype=np.uint8,
            encoding=tfds.features.Encoding.ZLIB,
        )
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": image,
                    "image/id": tfds.features.Scalar(dtype=np.int64),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(
                                names=[str(d) for d in range(10)]
                            ),
                            "is_crowd": tfds.features.Scalar(dtype=np.bool_),
                        }
                    ),
                    "instances": instances,
                }
            ),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=digits.CITATION,
            # Record i is canvas i (image/id i) of `generate_canvases`; loaders
            # shuffle with their own seed.
            disable_shuffling=True,
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        del dl_manager  # The digits ship with scikit-learn.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, (image, boxes, labels, instances) in enumerate(generate_canvases(split)):
            x0, y0, x1, y1 = boxes.T  # [N] each.
            bbox = np.stack([y0, x0, y1, x1], axis=1) / CANVAS_SIZE  # [N, 4]
            objects = {
                "bbox": bbox.astype(np.float32),
                "label": labels,
                "is_crowd": np.zeros(len(labels), dtype=np.bool_),
            }
            yield i, {
                "image": image,
                "image/id": i,
                "objects": objects,
                "instances": instances,
            }


def generate_canvases(
    split: str, num_canvases: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields `make_canvas`'s outputs for a split, in the builder's order.

    Args:
        split: "train" or "test".
        num_canvases: How many of the split's canvases to make; None means all
            (`NUM_TRAIN` or `NUM_TEST`). The first k are the same for every k.
    """
    images, labels = digits.load_digits_uint8()  # [1797, 8, 8, 1], [1797]
    rng = np.random.default_rng([_SEED, SPLITS.index(split), 1])
    for ids in draw_digit_ids(split)[:num_canvases]:
        yield make_canvas(rng, images[ids], labels[ids])


def draw_digit_ids(split: str) -> list[np.ndarray]:
    """The `load_digits` ids drawn for each canvas of a split, in order.

    Canvas i of the split is made from the digits `draw_digit_ids(split)[i]`
    (int64 [K], K in 1..MAX_OBJECTS, distinct), minus any that `make_canvas`
    drops for lack of room. Train canvases draw only from the `digits` train
    split and test canvases only from its test split.
    """
    split_index = SPLITS.index(split)
    num_canvases = (NUM_TRAIN, NUM_TEST)[split_index]
    pool = digits.split_ids()[split_index]  # [1437] or [360]
    rng = np.random.default_rng([_SEED, split_index, 0])
    counts = rng.integers(1, MAX_OBJECTS, size=num_canvases, endpoint=True)
    return [rng.choice(pool, size=k, replace=False) for k in counts]


def make_canvas(
    rng: np.random.Generator, glyphs: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pastes glyphs, in order, at random sizes and places on a black canvas.

    Each glyph is resized to a random side in [MIN_GLYPH_SIZE, MAX_GLYPH_SIZE]
    and placed at the first of `_MAX_TRIES` random positions (fully inside the
    canvas) where its ink box has IoU <= MAX_IOU with every placed box and
    covers at most MAX_COVER of either box's area; with no such position the
    glyph is dropped. The first glyph with ink is always placed. Glyphs without
    ink (no pixel >= INK_THRESHOLD once resized) are dropped.

    A pixel of the instance map gets the id of the placed glyph whose ink
    covers it with the largest value, the later glyph on a tie: the one that
    shows there in the `np.maximum` composite.

    Args:
        rng: The source of all randomness; the result is a function of its state.
        glyphs: uint8 [K, h, w, 1] images, ink bright on black; K <= 255.
        labels: [K] the class of each glyph.

    Returns:
        image: uint8 [CANVAS_SIZE, CANVAS_SIZE, 1].
        boxes: float32 [N, 4] tight ink boxes (x0, y0, x1, y1) in canvas pixels,
            x1 and y1 exclusive; N <= K.
        labels: int64 [N] the classes of the placed glyphs.
        instances: uint8 [CANVAS_SIZE, CANVAS_SIZE, 1], i + 1 on the pixels of
            glyph i (the i-th of `boxes`), 0 elsewhere.

    Raises:
        ValueError: If no glyph has ink, so the canvas would be empty, or
            there are more than 255 glyphs (ids are uint8).
    """
    if len(glyphs) > 255:
        raise ValueError(f"At most 255 glyphs fit uint8 instance ids, got {len(glyphs)}.")
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8)  # [H, W]
    instances = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8)  # [H, W]
    boxes, kept = [], []
    sides = rng.integers(
        MIN_GLYPH_SIZE, MAX_GLYPH_SIZE, size=len(glyphs), endpoint=True
    )
    for glyph, label, side in zip(glyphs, labels, sides.tolist(), strict=True):
        # Top-left corners to try, all fully inside the canvas.
        corners = rng.integers(
            0, CANVAS_SIZE - side, size=(_MAX_TRIES, 2), endpoint=True
        )
        resized = Image.fromarray(glyph[..., 0]).resize((side, side), Image.BILINEAR)
        pixels = np.asarray(resized)  # [side, side]
        ink_box = _ink_box(pixels)
        if ink_box is None:
            continue
        x0, y0, x1, y1 = ink_box
        for x, y in corners.tolist():
            box = (x0 + x, y0 + y, x1 + x, y1 + y)  # In canvas pixels.
            if _fits(box, boxes):
                window = canvas[y : y + side, x : x + side]
                # Where earlier glyphs are not ink, the canvas is < INK_THRESHOLD;
                # where they are, it holds the owning glyph's value.
                owned = (pixels >= INK_THRESHOLD) & (pixels >= window)  # [side, side]
                instances[y : y + side, x : x + side][owned] = len(boxes) + 1
                np.maximum(window, pixels, out=window)
                boxes.append(box)
                kept.append(label)
                break
    if not boxes:
        raise ValueError(f"None of the glyphs has a pixel >= {INK_THRESHOLD}.")
    return (
        canvas[..., None],  # [H, W, 1]
        np.array(boxes, np.float32).reshape(-1, 4),  # [N, 4]
        np.array(kept, np.int64),  # [N]
        instances[..., None],  # [H, W, 1]
    )


def _ink_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight (x0, y0, x1, y1) box, maxima exclusive, of pixels >= INK_THRESHOLD."""
    ink = pixels >= INK_THRESHOLD  # [h, w]
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _fits(box: tuple[int, ...], placed: list[tuple[int, ...]]) -> bool:
    """Whether `box` overlaps each `placed` box little enough (all xyxy pixels).

    Plain Python: with at most five placed boxes it is ~10x faster than NumPy.
    """
    area = (box[2] - box[0]) * (box[3] - box[1])
    for other in placed:
        other_area = (other[2] - other[0]) * (other[3] - other[1])
        inter_w = min(box[2], other[2]) - max(box[0], other[0])
        inter_h = min(box[3], other[3]) - max(box[1], other[1])
        inter = max(inter_w, 0) * max(inter_h, 0)
        if inter > MAX_IOU * (area + other_area - inter):  # IoU > MAX_IOU.
            return False
        if inter > MAX_COVER * min(area, other_area):  # Covers too much of one.
            return False
    return True
