"""The `digit_instances` tfds builder: recognize handwritten digits as individuals.

An offline dataset for face-recognition-style training (open-set verification
and identification) on any machine. Each of scikit-learn's 1,797 real 8x8
handwritten digits is one *identity*, and its images are random *views* of that
one digit: the task is to tell whether two images show the same handwritten
sample, not just the same class. Train identities are the 1,437 digits of the
`digits` train split and test identities its 360 test digits, so every test
identity is unseen in training. There are `NUM_TRAIN_VIEWS` = 10 views per
train identity (14,370 images) and `NUM_TEST_VIEWS` = 10 per test identity
(3,600 images).

A view (`render_views`) is the 8x8 digit (0..255) drawn into a black 32x32
image, `GLYPH_SCALE` = 3.5 px per source pixel, by one cubic-spline resampling
through a random affine map (rotation, scale, shear, translation) composed
with a random elastic distortion (a Gaussian-smoothed random displacement
field), clipped to 0..255; then its strokes are thickened (grey dilation) or
thinned (grey erosion) with a 2x2 footprint, each with probability 1/5,
and Gaussian noise is added before rounding to uint8. Every random draw of
view v of sklearn digit i comes from `np.random.default_rng([0, i, v])`, so a
view is the same whatever else is rendered with it, and every build is
identical.

How hard the views are is the point of the dataset (figures on the test split,
with Pearson correlation of raw pixels). They are hard enough that identity is
not read off pixel positions: the best threshold on that correlation verifies
the test pairs (below) at accuracy 0.75, and matching each view to the
nearest view 0 of the 360 test identities identifies 18% of them. Yet each
identity stays recognizable from its own source: two views of one digit are
more alike than views of two digits of one class (mean correlation 0.70 vs
0.61), and what is hard is mostly the random pose (alone it leaves two views
of a digit 0.75 correlated), which a model learns to undo: ResNet-18
embeddings trained for 5 minutes on a 2-core CPU verify the pairs at 0.97
(configs/digit_instances_arcface.py). Stronger views (15 degrees, elastic
1.5 px, 3x3 stroke changes in 2 of 3 views: pixels verify at 0.685) held the
same model to 0.90 within that budget, and for little more realism. The
strengths are the constants below, each with its reason.

Pairs (the LFW protocol), for the test split only: the 360 test identities are
dealt to `NUM_FOLDS` = 10 folds stratified by digit class (36 identities per
fold, 3 or 4 of each class), and each fold gets 300 pairs of records of its
own identities: 150 "same" pairs (two different views of one identity, 4 or 5
per identity) and 150 "different" pairs, of which 75 are two identities of
the *same* digit class (hard negatives: without them verification reduces to
digit classification) and 75 two identities of different classes. No pair
occurs twice. `test_pairs()` makes the list; the prepared dataset holds it in
`info.metadata["pairs"]["test"]` as rows [id_a, id_b, same, fold] with
id_a < id_b (record ids of the test split).

Source and citation: UCI Optical Recognition of Handwritten Digits ("optdigits"),
E. Alpaydin and C. Kaynak, 1998, doi:10.24432/C50P49 (BibTeX in `digits.CITATION`).
"""

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from scipy import ndimage

from jaxvision.data import digits

SPLITS = ("train", "test")  # Index i uses `digits.split_ids()[i]` as identities.
NUM_TRAIN_VIEWS = 10  # Views per train identity: 1,437 x 10 = 14,370 images.
NUM_TEST_VIEWS = 10  # Views per test identity: 360 x 10 = 3,600 images.
IMAGE_SIZE = 32  # Height and width of a view, in pixels.
# Output pixels per source pixel: the 8 px digit spans the central 28 px, so
# the 2 px border absorbs most translations (MNIST keeps 20 px in 28 likewise).
GLYPH_SCALE = 3.5
# Affine pose: the range of natural handwriting slant and size, small enough
# that no digit turns into another (a 6 rotated 180 degrees is a 9). Rotation
# alone leaves two views of a digit 0.95 correlated (two digits of a class:
# 0.79); the whole pose (rotation, scale, shear, shift) 0.75 (0.64).
MAX_ROTATION_DEG = 10.0
MIN_SCALE, MAX_SCALE = 0.9, 1.1
MAX_SHEAR = 0.1  # x += shear * y, in the digit's frame.
MAX_SHIFT = 2.0  # Pixels along each axis: the border left by GLYPH_SCALE.
# Elastic distortion (Simard et al., 2003): a white-noise displacement field
# smoothed by a Gaussian of ELASTIC_SIGMA px and rescaled so that its vectors
# have RMS length ELASTIC_ALPHA px. 1 px is under a third of a source pixel
# (3.5 px), so it bends strokes without erasing the details that tell two
# digits of a class apart: alone it leaves two views of a digit 0.93
# correlated (two digits of a class: 0.77). Sigma 3 px bends a stroke as a
# whole instead of fraying it.
ELASTIC_ALPHA = 1.0
ELASTIC_SIGMA = 3.0
# Stroke width: pen width varies between writers and scans; a 2x2 grey
# dilation or erosion changes a ~5 px stroke by 1 px, a change the model must
# ignore (alone it leaves two views of a digit 0.97 correlated; two digits of
# a class: 0.80).
THICKEN_PROB = 0.2
THIN_PROB = 0.2
STROKE_FOOTPRINTS = (2,)  # Square footprint sides, drawn uniformly.
# Sensor noise, in grey levels: visible, but far below the ink contrast (255),
# so it hides no stroke (alone it leaves two views 0.99 correlated); it keeps
# exact pixel matching from working.
NOISE_STD = 8.0
NUM_FOLDS = 10  # Pairs folds (LFW uses 10).
SAME_PAIRS_PER_FOLD = 150  # Two views of one identity.
HARD_PAIRS_PER_FOLD = 75  # Two identities of one digit class.
EASY_PAIRS_PER_FOLD = 75  # Two identities of different classes.

_SEED = 0  # Views use default_rng([_SEED, sklearn_id, view]); never change it.
# The pairs' stream; its first word differs from _SEED, so it is none of the views'.
_PAIRS_SEED = 1
_PAD = 2  # Zero source pixels around the 8x8 digit: the spline decays to black.


class DigitInstances(tfds.core.GeneratorBasedBuilder):
    """Random views of each real 8x8 digit, one identity per digit.

    14,370 train images (1,437 identities x 10 views) and 3,600 test images
    (360 unseen identities x 10 views); see the module docstring for how
    views are made and how hard they are. Read back with `as_data_source`
    (no TensorFlow), record i of a split is::

        {
            "image": np.ndarray uint8 [32, 32, 1],
            "label": int,  # The identity within the split, 0..1436 (train)
                           # or 0..359 (test), in sklearn-id order.
            "digit": int,  # The digit's class, 0..9.
            "instance": int,  # The sklearn `load_digits` id of the identity.
            "view": int,  # 0..9, the view of that identity.
            "id": int,  # == i == label * 10 + view, unique in the split.
        }

    Train and test labels share the range 0..359 but not the identities: test
    label 0 is a different digit from train label 0 (identities are
    "instance"); only train labels are classes to fit. The test split is for
    verification, with `info.metadata["pairs"]["test"]` (`test_pairs()`), and
    identification.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: 10 views of each of 1,437/360 digit identities, "
        "10-fold test pairs with same-class negatives."
    }
    # tfds derives `code_path` with `importlib_resources`, which it declares as
    # a dependency only for Python < 3.9; naming the file directly avoids it.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # Tensor (not Image) features: Image encoding needs TensorFlow. Stored
        # as raw bytes: the default, a list of ints, is ~10x slower to build.
        image = tfds.features.Tensor(
            shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
            dtype=np.uint8,
            encoding=tfds.features.Encoding.BYTES,
        )
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": image,
                    # Sized for train; test labels use 0..359 of it.
                    "label": tfds.features.ClassLabel(
                        num_classes=len(digits.split_ids()[0])
                    ),
                    "digit": tfds.features.ClassLabel(
                        names=[str(d) for d in range(10)]
                    ),
                    "instance": tfds.features.Scalar(dtype=np.int32),
                    "view": tfds.features.Scalar(dtype=np.int32),
                    "id": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=digits.CITATION,
            # Filled with the pairs in `_split_generators`; saved as metadata.json.
            metadata=tfds.core.MetadataDict(),
            # Record i has id i; loaders shuffle with their own seed.
            disable_shuffling=True,
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        del dl_manager  # The digits ship with scikit-learn.
        self.info.metadata["pairs"] = {"test": test_pairs().tolist()}
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        images, labels = digits.load_digits_uint8()  # [1797, 8, 8, 1], [1797]
        num_views = num_views_per_identity(split)
        ids = digits.split_ids()[SPLITS.index(split)]
        for label, sklearn_id in enumerate(ids.tolist()):
            views = render_views(images[sklearn_id], sklearn_id, range(num_views))
            for view, image in enumerate(views):
                key = label * num_views + view
                yield key, {
                    "image": image,
                    "label": label,
                    "digit": int(labels[sklearn_id]),
                    "instance": sklearn_id,
                    "view": view,
                    "id": key,
                }


def num_views_per_identity(split: str) -> int:
    """`NUM_TRAIN_VIEWS` or `NUM_TEST_VIEWS`: a record's id is label * this + view."""
    return (NUM_TRAIN_VIEWS, NUM_TEST_VIEWS)[SPLITS.index(split)]


def render_views(image: np.ndarray, sklearn_id: int, views: Sequence[int]) -> np.ndarray:
    """Renders views of one digit; view v depends only on (image, sklearn_id, v).

    Args:
        image: uint8 [8, 8, 1] in 0..255, the digit (`digits.load_digits_uint8`).
        sklearn_id: The digit's id in `load_digits`; with each view index it
            seeds that view's random draws.
        views: The view indices to render.

    Returns:
        uint8 [V, IMAGE_SIZE, IMAGE_SIZE, 1], one image per entry of `views`.
    """
    num = len(views)
    inverse = np.empty((num, 2, 2))  # Output offsets -> source offsets, (y, x).
    shift = np.empty((num, 2))  # Translation in output pixels, (y, x).
    field = np.empty((num, 2, IMAGE_SIZE, IMAGE_SIZE))  # Displacements (y, x).
    stroke = np.empty(num, np.int64)  # 0: keep, 1: thicken, 2: thin.
    footprint = np.empty(num, np.int64)
    noise = np.empty((num, IMAGE_SIZE, IMAGE_SIZE))
    for k, view in enumerate(views):
        rng = np.random.default_rng([_SEED, sklearn_id, view])
        angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        scale = rng.uniform(MIN_SCALE, MAX_SCALE)
        shear = rng.uniform(-MAX_SHEAR, MAX_SHEAR)
        shift[k] = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2)
        cos, sin = np.cos(angle), np.sin(angle)
        # (y, x) coordinates: rotate . shear (x += shear * y) . scale.
        forward = scale * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, 0.0], [shear, 1.0]])
        inverse[k] = np.linalg.inv(forward) / GLYPH_SCALE
        field[k] = rng.standard_normal((2, IMAGE_SIZE, IMAGE_SIZE))
        stroke[k] = rng.choice(3, p=[1 - THICKEN_PROB - THIN_PROB, THICKEN_PROB, THIN_PROB])
        footprint[k] = rng.choice(STROKE_FOOTPRINTS)
        noise[k] = rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE))
    # Smooth each view's field in space only, then rescale it to RMS length alpha.
    field = ndimage.gaussian_filter(field, (0, 0, ELASTIC_SIGMA, ELASTIC_SIGMA))
    field *= ELASTIC_ALPHA / np.sqrt(np.mean(np.sum(field**2, axis=1), axis=(1, 2)))[
        :, None, None, None
    ]
    center = (IMAGE_SIZE - 1) / 2
    grid = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] - center  # [2, H, W] (y, x)
    offsets = grid + field - shift[:, :, None, None]  # [V, 2, H, W]
    source_center = (image.shape[0] - 1) / 2 + _PAD
    coords = np.einsum("vij,vjhw->ivhw", inverse, offsets) + source_center  # [2, V, H, W]
    source = np.pad(image[..., 0].astype(np.float64), _PAD)  # [12, 12]
    # 'nearest' beyond the zero padding keeps everything outside the digit black.
    pixels = ndimage.map_coordinates(source, coords, order=3, mode="nearest")  # [V, H, W]
    pixels = np.clip(pixels, 0, 255)
    for k in range(num):
        size = (footprint[k], footprint[k])
        if stroke[k] == 1:
            pixels[k] = ndimage.grey_dilation(pixels[k], size=size)
        elif stroke[k] == 2:
            pixels[k] = ndimage.grey_erosion(pixels[k], size=size)
    pixels += NOISE_STD * noise
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)[..., None]  # [V, H, W, 1]


def test_pairs() -> np.ndarray:
    """The 10-fold verification pairs of the test split (see the module docstring).

    Returns:
        int32 [3000, 4]: rows (id_a, id_b, same, fold) with id_a < id_b record
        ids of the test split, same 1 or 0 and fold 0..9, fold by fold; within
        a fold 150 same pairs, then 75 same-class and 75 different-class pairs.
    """
    _, labels = digits.load_digits_uint8()
    classes = labels[digits.split_ids()[1]]  # [360], by test label.
    views = NUM_TEST_VIEWS
    rng = np.random.default_rng(_PAIRS_SEED)
    # Deal each class's identities, shuffled, to folds in turn, continuing from
    # fold to fold across classes: 36 per fold, 3 or 4 of each class.
    dealt = np.concatenate([rng.permutation(np.flatnonzero(classes == c)) for c in range(10)])
    fold_of = np.empty(len(classes), np.int64)
    fold_of[dealt] = np.arange(len(classes)) % NUM_FOLDS
    view_pairs = np.array(list(itertools.combinations(range(views), 2)))  # [45, 2]
    rows = []
    for fold in range(NUM_FOLDS):
        members = np.flatnonzero(fold_of == fold)  # Test labels, ascending.
        # Same: 4 or 5 distinct view pairs per identity.
        counts = np.full(len(members), SAME_PAIRS_PER_FOLD // len(members))
        extra = rng.choice(len(members), SAME_PAIRS_PER_FOLD % len(members), replace=False)
        counts[extra] += 1
        for label, count in zip(members.tolist(), counts.tolist(), strict=True):
            for a, b in view_pairs[rng.choice(len(view_pairs), count, replace=False)]:
                rows.append((label * views + a, label * views + b, 1, fold))
        # Different: distinct identity pairs, or distinct view pairs of one
        # identity pair, so no pair repeats.
        identity_pairs = np.array(list(itertools.combinations(members, 2)))  # [630, 2]
        same_class = classes[identity_pairs[:, 0]] == classes[identity_pairs[:, 1]]
        hard = rng.permutation(identity_pairs[same_class])
        # Every same-class pair of the fold is used, some more than once.
        uses = np.bincount(np.arange(HARD_PAIRS_PER_FOLD) % len(hard), minlength=len(hard))
        easy = identity_pairs[~same_class]
        easy = easy[rng.choice(len(easy), EASY_PAIRS_PER_FOLD, replace=False)]
        for pairs, counts in ((hard, uses), (easy, np.ones(len(easy), np.int64))):
            for (i, j), count in zip(pairs.tolist(), counts.tolist(), strict=True):
                for v in rng.choice(views * views, count, replace=False).tolist():
                    a, b = i * views + v // views, j * views + v % views
                    rows.append((min(a, b), max(a, b), 0, fold))
    return np.array(rows, np.int32)  # [3000, 4]
